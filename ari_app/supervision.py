"""Supervisor listen / whisper / barge on an operator's call (ARI snoop).

``cmd.supervisor.listen`` names the call, the mode and the supervisor's phone. The
controller snoops on the operator's leg (``spy=both``; ``whisper`` none for listen,
``out`` for whisper — only the operator hears the supervisor — and ``both`` for barge),
rings the supervisor's phone, and bridges it with the snoop channel when answered.
``cmd.supervisor.listen_stop`` (or either side hanging up) ends it. Each start and end
is on the call's timeline (kind ``supervision``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError, CommandError
from ari_app.session import CallSession
from ari_app.timeline import TimelineStore
from common.settings import Settings

logger = logging.getLogger(__name__)

WHISPER = {"listen": "none", "whisper": "out", "barge": "both"}


class SupervisionService:
    def __init__(self, ari: AriClient, store: TimelineStore, settings: Settings) -> None:
        self.ari = ari
        self.store = store
        self.app = settings.asterisk.ari_app
        self.phones = {ep for ep, _ext in settings.operators.endpoints()}
        self.extensions = {ext: ep for ep, ext in settings.operators.endpoints()}

    def _endpoint(self, value: str) -> str:
        endpoint = self.extensions.get(value, value)
        if endpoint not in self.phones:
            raise CommandError("unknown_endpoint", f"{value!r} is not a console phone")
        return endpoint

    async def start(self, session: CallSession, mode: str, phone: str, supervisor: str) -> None:
        if mode not in WHISPER:
            raise CommandError("bad_mode", "mode must be listen, whisper or barge")
        agent_channel = session.data.get("agent_channel_id", "")
        if not agent_channel or session.state != "queued" or session.transfer is not None:
            raise CommandError("not_connected", "the call is not connected to an operator")
        if session.data.get("listen"):
            raise CommandError("already_listening", "someone already listens to this call")
        endpoint = self._endpoint(phone)
        if endpoint == session.data.get("agent"):
            raise CommandError("unknown_endpoint", "that is the operator's own phone")
        snoop = f"{session.call_id}-snoop"
        leg = f"{session.call_id}-supervisor"
        listen = {"snoop": snoop, "leg": leg, "bridge": "", "mode": mode,
                  "supervisor": supervisor, "endpoint": endpoint}
        session.data["listen"] = listen
        session.legs.update((snoop, leg))
        try:
            await self.ari.post(f"/channels/{agent_channel}/snoop", app=self.app,
                                appArgs="snoop", spy="both", whisper=WHISPER[mode],
                                snoopId=snoop)
            await self.ari.post("/channels", endpoint=f"PJSIP/{endpoint}", app=self.app,
                                appArgs="supervisor", channelId=leg, timeout=20,
                                callerId=f'"monitor" <{session.data.get("caller", "")}>')
        except AriError as exc:
            await self.stop(session, "failed")
            raise CommandError("snoop_failed", f"cannot listen to this call: {exc}") from None
        await self._record(session, "ringing")

    async def leg_started(self, session: CallSession, event: dict[str, Any]) -> bool:
        """StasisStart of a supervision leg; True when it was one."""
        listen = session.data.get("listen")
        channel_id = str(event["channel"]["id"])
        if not listen or channel_id not in (listen["snoop"], listen["leg"]):
            return False
        if channel_id == listen["leg"]:
            bridge = await self.ari.post("/bridges", type="mixing",
                                         name=f"listen-{session.call_id}")
            listen["bridge"] = bridge["id"]
            session.bridges.add(bridge["id"])
            await self.ari.post(f"/bridges/{bridge['id']}/addChannel",
                                channel=f"{listen['snoop']},{listen['leg']}")
            await self._record(session, "connected")
        return True

    async def leg_gone(self, session: CallSession, channel_id: str) -> bool:
        listen = session.data.get("listen")
        if not listen or channel_id not in (listen["snoop"], listen["leg"]):
            return False
        session.legs.discard(channel_id)
        await self.stop(session, "ended")
        return True

    async def stop(self, session: CallSession, result: str = "stopped") -> None:
        listen = session.data.pop("listen", None)
        if not listen:
            return
        for channel in (listen["leg"], listen["snoop"]):
            session.legs.discard(channel)
            try:
                await self.ari.delete(f"/channels/{channel}")
            except AriError:
                pass
        if listen.get("bridge"):
            session.bridges.discard(listen["bridge"])
            try:
                await self.ari.delete(f"/bridges/{listen['bridge']}")
            except AriError:
                pass
        session.data["listen_done"] = listen
        await self._record(session, result, listen)

    async def _record(self, session: CallSession, result: str,
                      listen: dict[str, Any] | None = None) -> None:
        listen = listen or session.data.get("listen") or {}
        at = datetime.now(UTC)
        await asyncio.to_thread(
            self.store.record, session.call_id, "supervision", at,
            {"mode": listen.get("mode"), "supervisor": listen.get("supervisor"),
             "phone": listen.get("endpoint"), "result": result},
            f"supervision:{result}:{at.timestamp():.6f}")
