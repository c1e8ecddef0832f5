"""Queued callbacks that keep the caller's place (C2).

A waiting caller presses the callback key during the queue's announcements; app_queue
lets them out (the queue's ``context``) with their position (``QUEUEPOSITION``) and the
dialplan hands them to the controller (``Stasis(app,callback,queue,position)``). The
controller reads back the number from caller ID (or takes one typed on the keypad),
records the callback durably (table ``callbacks``) and hangs up.

The place is kept by a placeholder: a Local channel that joins the same queue at the
caller's position (``Queue(...,position)``). When the placeholder reaches an operator,
its other half enters the controller: the operator hears that this is a callback and
sees the case, then the citizen is dialled through the trunk and bridged. No answer or
busy: the operator is told and released, and the callback is tried again later at the
front of the queue, up to ``callback_max_attempts``. Every attempt is on the original
call's timeline. Callbacks live in SQL, so they survive a restart of the controller;
placeholders live in Asterisk.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError
from ari_app.session import CallActions, CallSession
from ari_app.timeline import TimelineStore
from ari_app.transcription import TranscriptionService
from common.db import transaction
from common.models import Callback
from common.settings import Settings

logger = logging.getLogger(__name__)

PLACEHOLDER_CONTEXT = "mado-callback-hold"
NUMBER = re.compile(r"0\d{9,10}")  # Japanese subscriber numbers: 0 + 9 or 10 digits
PLACEHOLDER_NAME = re.compile(r"^Local/[a-z][a-z0-9-]*_\d+_(\d+)@" + PLACEHOLDER_CONTEXT)


def callback_of_channel(name: str) -> int | None:
    """The callback id of a placeholder channel name, else None."""
    found = PLACEHOLDER_NAME.match(name)
    return int(found.group(1)) if found else None


def mask_number(number: str) -> str:
    return number[:3] + "*" * max(0, len(number) - 7) + number[-4:] if number else ""


class CallbackService:
    def __init__(self, ari: AriClient, store: TimelineStore, settings: Settings,
                 factory: sessionmaker[Session], calls: CallActions,
                 transcription: TranscriptionService | None) -> None:
        self.ari = ari
        self.store = store
        self.settings = settings
        self.factory = factory
        self.calls = calls
        self.transcription = transcription
        self.app = settings.asterisk.ari_app
        # this site's callbacks only (the two-site form shares the table)
        self.site = settings.site.id or None
        self.call_of: dict[int, str] = {}  # callback id -> original call id
        # set by the dispatcher: deliver an event to a call's task after a delay
        self.later: Callable[[str, str, float], None] = lambda _call, _kind, _delay: None
        self.answer_seconds = 10.0

    # ------------------------------------------------------ caller's side

    async def offer(self, session: CallSession, event: dict[str, Any]) -> None:
        """The caller pressed the callback key (position > 0), or nobody can answer
        (position 0: the offer must be accepted with the key)."""
        args = event.get("args") or []
        queue = args[1] if len(args) > 1 else (session.service.queue if session.service else "")
        try:
            position = int(args[2]) if len(args) > 2 else 0
        except ValueError:
            position = 0
        session.state = "callback_offer"
        session.data.update(cb_queue=queue, cb_position=position, cb_digits="")
        await asyncio.to_thread(self.store.record, session.call_id, "callback_offer",
                                datetime.now(UTC), {"queue": queue, "position": position})
        if position == 0:
            session.data["cb_mode"] = "ask"
            await self._say(session, [f"sound:{self.calls.prompts['no_operators']}",
                                      f"sound:{self.calls.prompts['callback_offer']}"], arm=0.0)
        else:
            await self._read_back_or_ask(session, session.data.get("caller", ""))

    async def _read_back_or_ask(self, session: CallSession, number: str) -> None:
        if NUMBER.fullmatch(number):
            session.data.update(cb_number=number, cb_mode="readback")
            await self._say(session, [f"sound:{self.calls.prompts['callback_confirm']}",
                                      f"digits:{number}",
                                      f"sound:{self.calls.prompts['callback_confirm_keys']}"],
                            arm=0.0)
        else:
            await self._ask_number(session)

    def _arm(self, session: CallSession, extra: float = 0.0) -> None:
        delay = self.answer_seconds + extra
        session.data["cb_deadline"] = asyncio.get_running_loop().time() + delay
        self.later(session.channel_id, "MadoCallbackTimeout", delay)

    async def timeout(self, session: CallSession) -> None:
        """No key pressed in time: a read-back number is accepted (the caller asked for
        the callback); an unanswered offer or an empty number is declined."""
        if session.state != "callback_offer":
            return
        if asyncio.get_running_loop().time() < session.data.get("cb_deadline", 0) - 0.05:
            return  # a key was pressed since: a later timer decides
        if session.data.get("cb_mode") == "readback":
            await self.register(session)
            return
        session.state = "callback_declined"
        await asyncio.to_thread(self.store.record, session.call_id,
                                "callback_declined", datetime.now(UTC), {})
        await self._stop_sound(session)
        await self.calls.play_then(session, "goodbye", lambda: self.calls.hangup(session))

    async def _say(self, session: CallSession, media: list[str], arm: float) -> None:
        """Play ``media``; the time to answer (``answer_seconds`` + ``arm``) starts when it
        has been heard to the end (``playback_finished``), however long the city's
        recordings or the Japanese voice take."""
        playback = f"{session.channel_id}-cb-{asyncio.get_running_loop().time():.6f}"
        session.data.update(cb_playback=playback, cb_arm=arm)
        try:
            await self.ari.post(f"/channels/{session.channel_id}/play", media=",".join(media),
                                playbackId=playback, lang=self.settings.site.language)
        except AriError:
            session.data.pop("cb_arm", None)
            self._arm(session, extra=arm)  # nothing plays: the time starts now
            raise

    async def playback_finished(self, session: CallSession, event: dict[str, Any]) -> None:
        """An offer, read-back or request for the number was heard: the time to answer
        starts now."""
        if (event.get("playback") or {}).get("id") != session.data.get("cb_playback"):
            return
        arm = session.data.pop("cb_arm", None)
        if arm is not None and session.state == "callback_offer":
            self._arm(session, extra=float(arm))

    async def _ask_number(self, session: CallSession) -> None:
        session.data.update(cb_mode="enter", cb_digits="")
        await self._say(session, [f"sound:{self.calls.prompts['callback_enter']}"], arm=10.0)

    async def _stop_sound(self, session: CallSession) -> None:
        session.data.pop("cb_arm", None)  # a key was pressed: it set the time itself
        playback = session.data.pop("cb_playback", None)
        if playback:
            try:
                await self.ari.delete(f"/playbacks/{playback}")
            except AriError:
                pass  # already finished

    async def dtmf(self, session: CallSession, event: dict[str, Any]) -> None:
        if session.state != "callback_offer":
            return
        digit = str(event.get("digit", ""))
        mode = session.data.get("cb_mode")
        if mode == "ask" and digit == "1":
            await self._stop_sound(session)
            await self._read_back_or_ask(session, session.data.get("caller", ""))
        elif mode == "readback":
            if digit == "1":
                await self._stop_sound(session)
                await self.register(session)
            elif digit == "2":
                await self._stop_sound(session)
                await self._ask_number(session)
        elif mode == "enter":
            self._arm(session, extra=5.0)
            if digit == "#":
                typed = session.data.get("cb_digits", "")
                await self._stop_sound(session)
                if NUMBER.fullmatch(typed):
                    await self._read_back_or_ask(session, typed)
                else:
                    await self._ask_number(session)
            elif digit.isdigit() and len(session.data.get("cb_digits", "")) < 15:
                session.data["cb_digits"] = session.data.get("cb_digits", "") + digit

    async def register(self, session: CallSession) -> None:
        number = session.data["cb_number"]
        queue = session.data["cb_queue"]
        position = int(session.data.get("cb_position", 0))
        service = session.service
        now = datetime.now(UTC)
        with transaction(self.factory) as db:
            callback = Callback(
                call_id=session.call_id, tenant_id=session.tenant,
                service_id=service.id if service else "", queue=queue, number=number,
                position=position, status="pending", attempts=0,
                max_attempts=service.callback_max_attempts if service else 3,
                requested_at=now, next_attempt_at=now, site=self.site)
            db.add(callback)
            db.flush()
            cb_id = callback.id
        self.call_of[cb_id] = session.call_id
        session.state = "callback_booked"
        await asyncio.to_thread(self.store.record, session.call_id,
                                "callback_requested", now,
                                {"callback": cb_id, "queue": queue, "position": position,
                                 "number": mask_number(number)})
        await asyncio.to_thread(self.store.set_outcome, session.call_id, "callback")
        logger.info("%s: callback %d booked at position %d", session.call_id, cb_id, position)
        await self.calls.play_then(session, "callback_registered",
                                   lambda: self.calls.hangup(session))
        await self.place_due()

    # -------------------------------------------------------- placeholders

    async def place_due(self) -> None:
        """Place every pending callback that is due (called after a booking, after a
        failed attempt and periodically)."""
        now = datetime.now(UTC)
        with self.factory() as db:
            due = list(db.scalars(select(Callback).where(
                Callback.status == "pending", Callback.next_attempt_at <= now, self._own())
                .order_by(Callback.reason.is_(None), Callback.requested_at)))
        for callback in due:
            await self._place(callback)

    async def _place(self, callback: Callback) -> None:
        position = callback.position if callback.attempts == 0 else 1
        position = max(position, 1)
        leg = f"cb-{callback.id}-{callback.attempts + 1}"
        endpoint = f"Local/{callback.queue}_{position}_{callback.id}@{PLACEHOLDER_CONTEXT}/n"
        service = self.settings.service(callback.service_id) if callback.service_id else None
        wait = service.max_wait_seconds if service else 3600
        try:
            await self.ari.post("/channels", endpoint=endpoint, app=self.app,
                                appArgs=f"callback,{callback.id}", channelId=leg,
                                timeout=wait * 4,
                                callerId=f'"callback" <{callback.number}>')
        except AriError as exc:
            logger.warning("callback %d: placeholder not placed (%s); retrying later",
                           callback.id, exc)
            self._update(callback.id, next_attempt_at=datetime.now(UTC) + timedelta(seconds=15))
            return
        self.call_of[callback.id] = callback.call_id
        self._update(callback.id, status="placed", placeholder=leg)
        await asyncio.to_thread(self.store.record, callback.call_id,
                                "callback_placed", datetime.now(UTC),
                                {"callback": callback.id, "position": position,
                                 "attempt": callback.attempts + 1},
                                f"callback_placed:{callback.id}:{callback.attempts + 1}")

    def _own(self) -> Any:
        return Callback.site == self.site if self.site else Callback.site.is_(None)

    def _update(self, cb_id: int, **values: Any) -> None:
        with transaction(self.factory) as db:
            callback = db.get(Callback, cb_id)
            if callback is not None:
                for key, value in values.items():
                    setattr(callback, key, value)

    def load(self, cb_id: int) -> Callback | None:
        with self.factory() as db:
            return db.get(Callback, cb_id)

    # ------------------------------------------------------ operator's side

    async def operator_reached(self, session: CallSession, event: dict[str, Any]) -> None:
        """The placeholder reached an operator: tell them, then dial the citizen."""
        args = event.get("args") or []
        cb_id = int(args[1]) if len(args) > 1 and str(args[1]).isdigit() else 0
        callback = self.load(cb_id)
        if callback is None or callback.status in ("failed", "completed"):
            await self.calls.hangup(session)  # unknown, or closed meanwhile (cancelled)
            return
        session.call_id = callback.call_id
        session.tenant = callback.tenant_id
        session.state = "callback_connecting"
        session.data.update(cb_id=cb_id, cb_number=callback.number)
        attempt = callback.attempts + 1
        self._update(cb_id, status="connecting", attempts=attempt)
        await self.calls.play_prompt(session, "callback_operator_notice")
        bridge = await self.ari.post("/bridges", type="mixing", name=f"callback-{cb_id}")
        session.bridges.add(bridge["id"])
        await self.ari.post(f"/bridges/{bridge['id']}/addChannel", channel=session.channel_id)
        session.data["cb_bridge"] = bridge["id"]
        citizen = f"{session.channel_id}-citizen"
        session.legs.add(citizen)
        trunk = self.settings.trunk.name
        service = self.settings.service(callback.service_id) if callback.service_id else None
        caller_id = service.dids[0] if service and service.dids else ""
        await asyncio.to_thread(self.store.record, callback.call_id,
                                "callback_attempt", datetime.now(UTC),
                                {"callback": cb_id, "attempt": attempt, "result": "dialling"},
                                f"callback_attempt:{cb_id}:{attempt}:dialling")
        try:
            await self.ari.post("/channels", endpoint=f"PJSIP/{callback.number}@{trunk}",
                                app=self.app, appArgs=f"callback-citizen,{cb_id}",
                                channelId=citizen, callerId=caller_id, timeout=30)
        except AriError as exc:
            logger.info("callback %d: cannot dial the citizen: %s", cb_id, exc)
            session.legs.discard(citizen)
            await self._not_reached(session, "unavailable")

    async def citizen_answered(self, session: CallSession, event: dict[str, Any]) -> None:
        cb_id = int(session.data.get("cb_id", 0))
        channel_id = str(event["channel"]["id"])
        await self.ari.post(f"/bridges/{session.data['cb_bridge']}/addChannel",
                            channel=channel_id)
        session.state = "callback_connected"
        session.data["cb_citizen_up"] = True
        self._update(cb_id, status="completed", completed_at=datetime.now(UTC),
                     last_result="answered")
        await asyncio.to_thread(self.store.record, session.call_id,
                                "callback_completed", datetime.now(UTC),
                                {"callback": cb_id, "result": "answered"},
                                f"callback_completed:{cb_id}")
        if self.transcription is not None:  # on the original call's transcript
            session.data["tx_target"] = channel_id
            await self.transcription.start(session)

    async def leg_destroyed(self, session: CallSession, event: dict[str, Any]) -> None:
        channel_id = str(event["channel"]["id"])
        session.legs.discard(channel_id)
        if not channel_id.endswith("-citizen"):
            return
        if session.data.get("cb_citizen_up"):
            await self.calls.hangup(session)  # the citizen hung up: release the operator
            return
        cause = event.get("cause")
        reason = "busy" if cause == 17 else "no_answer"
        await self._not_reached(session, reason)

    async def _not_reached(self, session: CallSession, reason: str) -> None:
        cb_id = int(session.data.get("cb_id", 0))
        callback = self.load(cb_id)
        if callback is None:
            return
        await asyncio.to_thread(self.store.record, session.call_id,
                                "callback_attempt", datetime.now(UTC),
                                {"callback": cb_id, "attempt": callback.attempts,
                                 "result": reason},
                                f"callback_attempt:{cb_id}:{callback.attempts}:{reason}")
        if callback.attempts >= callback.max_attempts:
            self._update(cb_id, status="failed", last_result=reason,
                         completed_at=datetime.now(UTC))
        else:
            service = self.settings.service(callback.service_id)
            self._update(cb_id, status="pending", last_result=reason,
                         next_attempt_at=datetime.now(UTC) + timedelta(
                             seconds=service.callback_retry_seconds))
        session.state = "callback_done"
        await self.calls.play_then(session, "callback_no_answer",
                                   lambda: self.calls.hangup(session))

    async def placeholder_gone(self, session: CallSession) -> None:
        """The operator's side ended (after the call, or the placeholder left the queue)."""
        for leg in list(session.legs):
            try:
                await self.ari.delete(f"/channels/{leg}")
            except AriError:
                pass
        for bridge in list(session.bridges):
            try:
                await self.ari.delete(f"/bridges/{bridge}")
            except AriError:
                pass
        session.bridges.clear()
        session.state = "ended"

    async def run_due(self, interval: float = 2.0) -> None:
        """Place due callbacks forever (retries, callbacks booked while nobody was logged
        in, and after a restart)."""
        while True:
            try:
                await self.resync_placed()
                await self.place_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("placing callbacks failed")
            await asyncio.sleep(interval)

    async def resync_placed(self) -> None:
        """A placed callback whose placeholder no longer exists (Asterisk restarted, or it
        left the queue without an operator) goes back to pending."""
        with self.factory() as db:
            placed = list(db.scalars(select(Callback).where(Callback.status == "placed",
                                                            self._own())))
        if not placed:
            return
        try:
            channels = {c["id"] for c in await self.ari.get("/channels")}
        except AriError:
            return
        for callback in placed:
            if callback.placeholder and callback.placeholder not in channels:
                self._update(callback.id, status="pending",
                             next_attempt_at=datetime.now(UTC) + timedelta(seconds=5))
