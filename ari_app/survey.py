"""The satisfaction survey after the call (M1).

Per service (``survey``): ``off``, ``all`` (every answered caller is asked), or
``opt_in`` (after the greeting the caller hears the invitation and presses
``survey_digit`` to take part; the dialplan's ``[mado-greet]`` asks and sets
``MADO_SURVEY``, and tells the controller through its ``MadoPrompt`` user event).
When the operator (or the staff member after a transfer) hangs up first, the caller
stays on the line (app_queue's ``c`` option, or the controller's own bridge) and is
asked for a score from 1 to 5 on the keypad. The answer is stored on the call
(``calls.survey_score``, timeline kind ``survey``); no answer in time is recorded as
such.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ari_app.ari_ import AriClient
from ari_app.session import CallActions, CallSession
from ari_app.timeline import TimelineStore
from common.settings import Settings

logger = logging.getLogger(__name__)


class SurveyService:
    def __init__(self, ari: AriClient, store: TimelineStore, settings: Settings,
                 calls: CallActions) -> None:
        self.ari = ari
        self.store = store
        self.settings = settings
        self.calls = calls
        # set by the dispatcher: deliver an event to a call's task after a delay
        self.later: Callable[[str, str, float], None] = lambda _call, _kind, _delay: None
        self.answer_seconds = 10.0

    def wanted(self, session: CallSession) -> bool:
        svc = session.service
        if svc is None or svc.survey == "off":
            return False
        return svc.survey == "all" or bool(session.data.get("survey_opt_in"))

    async def ask(self, session: CallSession) -> None:
        session.state = "survey"
        session.data["survey_started"] = asyncio.get_running_loop().time()
        await asyncio.to_thread(self.store.record, session.call_id, "survey_asked",
                                datetime.now(UTC), {})
        await self.ari.post(f"/channels/{session.channel_id}/play",
                            media=f"sound:{self.calls.prompts['survey_question']}",
                            lang=self.settings.site.language)
        self.later(session.channel_id, "MadoSurveyTimeout", self.answer_seconds + 6)

    async def dtmf(self, session: CallSession, event: dict[str, Any]) -> None:
        digit = str(event.get("digit", ""))
        if session.state != "survey" or digit not in "12345" or not digit:
            return
        score = int(digit)
        session.state = "survey_done"
        await asyncio.to_thread(self.store.record, session.call_id, "survey",
                                datetime.now(UTC), {"score": score, "channel": "phone"})
        await asyncio.to_thread(self.store.update_call, session.call_id,
                                survey_score=score)
        logger.info("%s: survey answered", session.call_id)
        await self.calls.play_then(session, "survey_thanks",
                                   lambda: self.calls.hangup(session))

    async def timeout(self, session: CallSession) -> None:
        if session.state != "survey":
            return
        session.state = "survey_done"
        await asyncio.to_thread(self.store.record, session.call_id, "survey",
                                datetime.now(UTC), {"score": None, "channel": "phone"})
        await self.calls.hangup(session)
