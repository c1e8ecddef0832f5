"""The Asterisk leg of a kiosk session (remote window, docs/kiosk.md).

kiosk_bridge terminates the kiosk's WebRTC and asks (``cmd.kiosk.start``) for an audio
leg: an ExternalMedia channel sending RTP to the bridge's socket, bridged with the first
half of a Local channel whose second half enters the kiosk service's queue through
``[mado-kiosk]``. The queue half's id is the call id, so app_queue's events (AMI
``Uniqueid``), the timeline, the KPIs, transfers and supervisor listen treat a kiosk
session as an ordinary queued call. Channel ids are derived from the session id, so a
restarted process (or web, after a bridge restart) can always hang them up.

Per session: ``m<call>`` (UnicastRTP), ``k<call>`` (Local;1, in Stasis), ``<call>``
(Local;2, in the queue), bridge ``b<call>``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError, AriNotFound, CommandError
from ari_app.session import CallActions, CallRegistry, CallSession
from ari_app.timeline import NewCall, Recorder, TimelineStore
from ari_app.transfers import TransferService
from common.events import CallAnswered, CallArrived
from common.keys import Keys
from common.kiosk import KioskCallState, KioskEnd, KioskKeys, KioskStart
from common.settings import Settings

logger = logging.getLogger(__name__)

SESSION_ID = re.compile(r"[a-f0-9]{32}")

# Update a live (not purged) session hash; link the call id to it while it lasts.
_UPDATE_SESSION = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('hexists', KEYS[1], 'purged') == 1 then
  return 0
end
redis.call('hset', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then
  redis.call('set', KEYS[2], KEYS[1]:match('([^:]+)$'), 'EX', ARGV[1])
end
return 1
"""
STASIS_TIMEOUT = 10.0


def leg_ids(session_id: str) -> tuple[str, str, str]:
    """(ExternalMedia channel, Local;1 channel, bridge) ids of a session. Prefixed, not
    suffixed: Asterisk refuses a new channel id that is a prefix of an existing one."""
    return f"m{session_id}", f"k{session_id}", f"b{session_id}"


@dataclass
class KioskLeg:
    session_id: str
    kiosk: str
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    end_reason: str = ""
    connected: bool = False
    asterisk_rtp: str = ""


class KioskService:
    def __init__(self, ari: AriClient, store: TimelineStore, recorder: Recorder,
                 settings: Settings, calls: CallActions, transfers: TransferService,
                 registry: CallRegistry, redis: aioredis.Redis, keys: Keys) -> None:
        self.ari = ari
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self.calls = calls
        self.transfers = transfers
        self.registry = registry
        self.redis = redis
        self.kkeys = KioskKeys(keys)
        self._tasks: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------------- commands

    async def start(self, cmd: KioskStart) -> None:
        """Check the command, then build the leg in the background: the command stream
        is not held while Asterisk creates channels. The outcome is a ``kiosk.call``
        event (queued, or ended with reason ``error``)."""
        self._check(cmd)
        task = asyncio.get_running_loop().create_task(self._start(cmd),
                                                      name=f"kiosk-{cmd.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check(self, cmd: KioskStart) -> None:
        if not SESSION_ID.fullmatch(cmd.session_id):
            raise CommandError("bad_session", "session ids are 32 hexadecimal characters")
        service = next((s for s in self.settings.services
                        if s.channel == "kiosk" and s.tenant == cmd.tenant), None)
        if service is None:
            raise CommandError("no_kiosk_service", f"tenant {cmd.tenant} has no service with "
                               "channel = \"kiosk\" (settings: [[services]])")
        if cmd.rtp_format not in ("slin", "ulaw"):
            raise CommandError("bad_format", "rtp_format must be slin or ulaw")
        if cmd.session_id in self.registry.sessions:
            raise CommandError("duplicate", f"kiosk session {cmd.session_id} has a leg")

    async def _start(self, cmd: KioskStart) -> None:
        call_id = cmd.session_id
        service = next(s for s in self.settings.services
                       if s.channel == "kiosk" and s.tenant == cmd.tenant)
        media_id, local_id, bridge_id = leg_ids(call_id)
        leg = KioskLeg(session_id=call_id, kiosk=cmd.kiosk,
                       started={media_id: asyncio.Event(), local_id: asyncio.Event()})
        session = CallSession(channel_id=call_id, call_id=call_id, tenant=cmd.tenant,
                              service=service, kind="kiosk", state="starting")
        session.data["kiosk"] = leg
        session.data["caller"] = cmd.kiosk
        session.legs.update((media_id, local_id))
        self.registry.open_session(session)
        at = datetime.now(UTC)
        new = NewCall(call_id=call_id, tenant_id=cmd.tenant, service_id=service.id,
                      channel="kiosk", did="", caller=cmd.kiosk, caller_name=cmd.location,
                      arrived_at=at)
        rec = self.recorder
        store = self.store
        rec.write(store.call_arrived, new, {"kiosk": cmd.kiosk, "category": cmd.category},
                  only_if_new=True,
                  publish=CallArrived(at=at, call_id=call_id, tenant=cmd.tenant,
                                      service=service.id, channel="kiosk", did="",
                                      caller=cmd.kiosk, caller_name=cmd.location))
        rec.write(store.update_call, call_id, location=cmd.kiosk[:64])
        try:
            await self.ari.post("/bridges", type="mixing", bridgeId=bridge_id,
                                name=f"kiosk-{cmd.kiosk}")
            session.bridges.add(bridge_id)
            media = await self.ari.post("/channels/externalMedia", app=self.ari.app,
                                channelId=media_id, format=cmd.rtp_format,
                                external_host=f"{cmd.rtp_host}:{cmd.rtp_port}",
                                encapsulation="rtp", transport="udp", direction="both")
            # the REST call returns before the channel is in Stasis (ENVIRONMENT.md)
            await asyncio.wait_for(leg.started[media_id].wait(), STASIS_TIMEOUT)
            variables = (media or {}).get("channelvars") or {}
            leg.asterisk_rtp = (f"{variables.get('UNICASTRTP_LOCAL_ADDRESS', '')}:"
                                f"{variables.get('UNICASTRTP_LOCAL_PORT', '')}")
            await self.ari.post(f"/bridges/{bridge_id}/addChannel", channel=media_id)
            await self.ari.post("/channels", endpoint=f"Local/{service.queue}@mado-kiosk/n",
                                app=self.ari.app, appArgs="kiosk", channelId=local_id,
                                otherChannelId=call_id,
                                callerId=f'"{cmd.kiosk}" <{cmd.kiosk}>')
            await self.calls.resubscribe(call_id)
            # the queue half's name, which a transfer's AMI Redirect needs
            queue_half = await self.ari.get(f"/channels/{call_id}")
            session.data["channel_name"] = str((queue_half or {}).get("name", ""))
            await asyncio.wait_for(leg.started[local_id].wait(), STASIS_TIMEOUT)
            await self.ari.post(f"/bridges/{bridge_id}/addChannel", channel=local_id)
        except (AriError, TimeoutError) as exc:
            logger.error("%s: kiosk leg not created: %s", call_id, exc)
            leg.end_reason = "error"
            await self._teardown(call_id)
            await self._finish(session, "error")
            self.registry.later(call_id, "MadoKioskGone", 0)  # lets the call's task end
            return
        session.state = "queued"
        rec.write(store.call_answered, call_id, datetime.now(UTC),
                  publish=CallAnswered(call_id=call_id, tenant=cmd.tenant))
        rec.write(store.record, call_id, "to_queue", datetime.now(UTC),
                  {"queue": service.queue, "kiosk": cmd.kiosk})
        await self._state(session, "queued")
        logger.info("%s: kiosk %s queued in %s", call_id, cmd.kiosk, service.queue)

    async def end(self, cmd: KioskEnd) -> None:
        """Hang up a session's channels. Works without any memory of the session (after a
        restart), because every id derives from the session id."""
        if not SESSION_ID.fullmatch(cmd.session_id):
            raise CommandError("bad_session", "session ids are 32 hexadecimal characters")
        session = self.registry.sessions.get(cmd.session_id)
        if session is not None:
            if session.tenant != cmd.tenant:
                raise CommandError("unknown_call", "no such kiosk session for this tenant")
            leg = session.data.get("kiosk")
            if isinstance(leg, KioskLeg) and not leg.end_reason:
                leg.end_reason = cmd.reason
        await self._teardown(cmd.session_id)

    # ------------------------------------------------------------- ARI events

    def owns(self, session: CallSession, leg: str) -> bool:
        data = session.data.get("kiosk")
        return isinstance(data, KioskLeg) and leg in data.started

    async def leg_event(self, session: CallSession, event: dict[str, Any]) -> None:
        """An event of the media or Local;1 channel (in the call's own task)."""
        leg = session.data["kiosk"]
        channel = str(event.get("mado_leg", ""))
        kind = event.get("type")
        if kind == "StasisStart":
            leg.started[channel].set()
        elif kind == "ChannelDestroyed" and session.state != "ended":
            # one half gone (network, bridge restart, hang-up): the rest goes too
            if not leg.end_reason:
                leg.end_reason = "media_gone"
            await self._teardown(session.call_id)

    def agent_connected(self, call_id: str, agent: str) -> None:
        session = self.registry.sessions.get(call_id)
        if session is None or session.kind != "kiosk":
            return
        # the session stays "queued" like a phone call answered from the queue, so
        # transfers and supervisor listen treat both alike
        session.data["kiosk"].connected = True
        asyncio.get_running_loop().create_task(self._state(session, "connected", agent=agent))

    async def call_ended(self, session: CallSession, event: dict[str, Any]) -> None:
        """The queue half (the call) is gone: tear down the rest and close the call."""
        leg = session.data["kiosk"]
        await self._teardown(session.call_id)
        reason = leg.end_reason or ("operator_hangup" if leg.connected else "ended")
        await self.transfers.caller_gone(session)
        await self.calls.channel_destroyed(session, event)
        await self._finish(session, reason)

    # ----------------------------------------------------------------- helpers

    async def _teardown(self, call_id: str) -> None:
        media_id, local_id, bridge_id = leg_ids(call_id)
        for channel in (local_id, call_id, media_id):
            try:
                await self.ari.delete(f"/channels/{channel}", reason="normal")
            except AriNotFound:
                pass
            except AriError as exc:
                logger.warning("%s: channel %s not hung up: %s", call_id, channel, exc)
        try:
            await self.ari.delete(f"/bridges/{bridge_id}")
        except AriNotFound:
            pass
        except AriError as exc:
            logger.warning("%s: bridge not destroyed: %s", call_id, exc)

    async def _finish(self, session: CallSession, reason: str) -> None:
        session.state = "ended"
        await self._state(session, "ended", reason=reason)

    async def _state(self, session: CallSession, state: str, agent: str = "",
                     reason: str = "") -> None:
        leg = session.data["kiosk"]
        fields = ["state", state, "call_id", session.call_id]
        if agent:
            fields += ["agent", agent]
        if reason:
            fields += ["end_reason", reason]
        link_ttl = self.settings.kiosk.session_max_hours * 3600 if state != "ended" else 0
        try:
            # atomic, so a purge running at the same time never leaves a key behind
            await self.redis.eval(
                _UPDATE_SESSION, 2, self.kkeys.session(session.call_id),
                self.kkeys.call_session(session.call_id), link_ttl, *fields)
        except RedisError as exc:
            logger.warning("%s: kiosk session state not written (Redis: %s)",
                           session.call_id, exc)
        self.recorder.publish(KioskCallState(
            session_id=leg.session_id, call_id=session.call_id, tenant=session.tenant,
            kiosk=leg.kiosk, state=state, agent=agent, reason=reason,
            asterisk_rtp=leg.asterisk_rtp if state == "queued" else ""))
