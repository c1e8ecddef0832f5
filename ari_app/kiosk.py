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

When no operator can answer (nobody logged in, everybody paused or unreachable: the
queue's joinempty/leavewhenempty rules) or the service is closed, the session goes
``unavailable`` instead of ending: the kiosk keeps its audio leg and hears why (the
phone's prompts, played into the bridge), and the page offers to wait or leave. A
citizen who waits re-enters the queue, with the same ids, as soon as an operator can
answer: it stays one call on the timeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
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
from common.hours import HoursDecision
from common.keys import Keys
from common.kiosk import KioskCallState, KioskEnd, KioskKeys, KioskStart
from common.settings import Service, Settings

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
#: seconds between checks while a citizen waits for an operator to become available
WAIT_POLL = 1.0
#: member states app_queue counts as "nobody" (joinempty/leavewhenempty, queues.conf.j2)
CANNOT_ANSWER = ("invalid", "unavailable", "unknown")


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
    queued_at: float = 0.0  # monotonic time the queue half was originated (0: there is none)
    unavailable: str = ""  # no_operator | closed while the session has no queue half
    entries: int = 0  # times the session entered the queue
    playback: str = ""  # the prompt playing into the bridge
    moh: bool = False


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
        except (AriError, TimeoutError) as exc:
            await self._failed(session, exc)
            return
        # like a phone call: closed hours and an empty queue are said, never queued
        decision = await self._hours(service)
        if not decision.open:
            await self._unavailable(session, "closed", decision)
            return
        self._record_hours(session, decision)
        if await self._operators_available(service):
            await self._enter_queue(session)
        else:
            await self._unavailable(session, "no_operator")

    async def _enter_queue(self, session: CallSession) -> None:
        """Originate the queue half (Local;2, whose id is the call id) and bridge its
        other half with the kiosk's audio. Again after no operator could answer: the ids
        are the same, so the session stays one call."""
        assert session.service is not None  # nosec B101 # type narrowing, not a check
        call_id = session.call_id
        leg: KioskLeg = session.data["kiosk"]
        _media_id, local_id, bridge_id = leg_ids(call_id)
        await self._quiet(session)
        session.state = "starting"  # "unavailable" again if the queue lets go at once
        leg.started[local_id] = asyncio.Event()
        leg.unavailable = ""
        leg.queued_at = time.monotonic()
        leg.entries += 1
        try:
            await self.ari.post("/channels",
                                endpoint=f"Local/{session.service.queue}@mado-kiosk/n",
                                app=self.ari.app, appArgs="kiosk", channelId=local_id,
                                otherChannelId=call_id,
                                callerId=f'"{leg.kiosk}" <{leg.kiosk}>')
            await self.calls.resubscribe(call_id)
            # the queue half's name, which a transfer's AMI Redirect needs
            queue_half = await self.ari.get(f"/channels/{call_id}")
            session.data["channel_name"] = str((queue_half or {}).get("name", ""))
            await asyncio.wait_for(leg.started[local_id].wait(), STASIS_TIMEOUT)
            await self.ari.post(f"/bridges/{bridge_id}/addChannel", channel=local_id)
        except (AriError, TimeoutError) as exc:
            if session.state == "unavailable" or leg.end_reason:
                return  # the queue let go at once (joinempty), or the session ended
            if isinstance(exc, AriNotFound):
                # the queue half went before we could see it: joinempty
                await self._queue_let_go(session)
                return
            await self._failed(session, exc)
            return
        if session.state == "unavailable" or leg.end_reason:
            return
        session.state = "queued"
        now = datetime.now(UTC)
        if leg.entries == 1:
            self.recorder.write(self.store.call_answered, call_id, now,
                                publish=CallAnswered(call_id=call_id, tenant=session.tenant))
        self.recorder.write(self.store.record, call_id, "to_queue", now,
                            {"queue": session.service.queue, "kiosk": leg.kiosk},
                            f"to_queue:{leg.entries}")
        await self._state(session, "queued", fields={"unavailable": "", "wait": "",
                                                     "next_open": ""})
        logger.info("%s: kiosk %s queued in %s", call_id, leg.kiosk, session.service.queue)

    async def _failed(self, session: CallSession, exc: Exception) -> None:
        call_id = session.call_id
        logger.error("%s: kiosk leg not created: %s", call_id, exc)
        session.data["kiosk"].end_reason = "error"
        await self._teardown(call_id)
        await self._finish(session, "error")
        self.registry.later(call_id, "MadoKioskGone", 0)  # lets the call's task end

    # ----------------------------------------------------- nobody can answer

    async def _hours(self, service: Service) -> HoursDecision:
        """The service's hours now, decided as for a phone call (the call service's clock
        and special days); open when it cannot tell."""
        try:
            return await asyncio.to_thread(self.calls.hours, service)
        except Exception:  # noqa: BLE001 - the queue still decides who can answer
            logger.exception("hours of %s not decided; taken as open", service.id)
        return HoursDecision(True, "open")

    def _record_hours(self, session: CallSession, decision: HoursDecision) -> None:
        self.recorder.write(self.store.record, session.call_id, "hours", datetime.now(UTC),
                            decision.as_dict(), f"hours:{decision.reason}")
        self.recorder.write(self.store.update_call, session.call_id,
                            hours_reason=decision.reason)

    async def _operators_available(self, service: Service) -> bool:
        """Whether app_queue would let the kiosk join: an operator is logged in, not
        paused, and their phone can ring (busy counts: the kiosk waits for them)."""
        try:
            raw = await self.redis.hgetall(self.kkeys.keys.queue_members(service.queue))
        except RedisError as exc:
            logger.warning("queue members of %s unknown (Redis: %s)", service.queue, exc)
            return True  # app_queue decides; joinempty comes back here
        members = [json.loads(value) for value in raw.values()]
        return any(not m.get("paused") and m.get("status") not in CANNOT_ANSWER
                   for m in members)

    def _let_go(self, session: CallSession) -> bool:
        """The queue half went without an operator and nobody ended the session: app_queue
        let the citizen go (joinempty, leavewhenempty), not its own time limit."""
        leg: KioskLeg = session.data["kiosk"]
        assert session.service is not None  # nosec B101 # type narrowing, not a check
        return (not leg.connected and not leg.end_reason and leg.queued_at > 0
                and time.monotonic() - leg.queued_at < session.service.max_wait_seconds - 1)

    async def _queue_let_go(self, session: CallSession) -> None:
        """Whichever comes first of the two Local halves' ends (or a request finding the
        queue half gone) turns the session unavailable; the others find it so."""
        if not self._let_go(session):
            return
        assert session.service is not None  # nosec B101 # type narrowing, not a check
        session.data["kiosk"].queued_at = 0.0
        session.state = "unavailable"
        decision = await self._hours(session.service)
        await self._unavailable(session, "no_operator" if decision.open else "closed",
                                decision)

    async def _unavailable(self, session: CallSession, reason: str,
                           decision: HoursDecision | None = None) -> None:
        """Nobody can answer (``no_operator``) or the service is closed (``closed``): the
        kiosk hears and reads why; with no_operator the citizen may wait or leave."""
        leg: KioskLeg = session.data["kiosk"]
        was = leg.unavailable
        leg.unavailable = reason
        leg.queued_at = 0.0
        session.state = "unavailable"
        self.recorder.write(self.store.record, session.call_id, "kiosk_unavailable",
                            datetime.now(UTC), {"reason": reason},
                            f"kiosk_unavailable:{reason}:{leg.entries}")
        if decision is not None and not decision.open:
            self._record_hours(session, decision)
            self.recorder.write(self.store.set_outcome, session.call_id, "out_of_hours")
        await self._state(session, "unavailable", reason=reason, fields={
            "unavailable": reason, "wait": "",
            "next_open": decision.next_open.isoformat() if decision and decision.next_open
            else ""})
        await self._quiet(session)
        await self._play(session, "out_of_hours" if reason == "closed" else "no_operators")
        if reason == "no_operator" and not was:
            task = asyncio.get_running_loop().create_task(
                self._wait_for_operator(session), name=f"kiosk-wait-{session.call_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        logger.info("%s: kiosk %s unavailable (%s)", session.call_id, leg.kiosk, reason)

    async def _wait_for_operator(self, session: CallSession) -> None:
        """While the session is unavailable: once the citizen chose to wait (``wait`` in the
        session hash, set by web), music on hold, and the queue again as soon as an
        operator can answer; closed meanwhile: say so."""
        leg: KioskLeg = session.data["kiosk"]
        assert session.service is not None  # nosec B101 # type narrowing, not a check
        key = self.kkeys.session(session.call_id)
        while leg.unavailable == "no_operator" and not leg.end_reason:
            await asyncio.sleep(WAIT_POLL)
            if leg.unavailable != "no_operator" or leg.end_reason:
                return
            try:
                wants = await self.redis.hget(key, "wait")
            except RedisError:
                continue
            if wants is None:  # the session is gone (purged, expired): so is its leg
                leg.end_reason = leg.end_reason or "expired"
                await self._teardown(session.call_id)
                return
            if wants != b"1":
                continue
            try:
                if not leg.moh and not leg.end_reason:
                    await self._hold_music(session)
                decision = await self._hours(session.service)
                if not decision.open:
                    await self._unavailable(session, "closed", decision)
                    return
                if await self._operators_available(session.service):
                    await self._enter_queue(session)
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keeps waiting; the citizen can still leave
                logger.exception("%s: waiting for an operator failed", session.call_id)

    async def _play(self, session: CallSession, prompt: str) -> None:
        """A prompt into the session's bridge (the kiosk hears it; nobody else is in it)."""
        leg: KioskLeg = session.data["kiosk"]
        leg.playback = uuid.uuid4().hex
        sound = self.calls.prompt_sound(prompt, session.service)
        try:
            await self.ari.post(f"/bridges/{leg_ids(session.call_id)[2]}/play",
                                media=f"sound:{sound}",
                                playbackId=leg.playback, lang=self.settings.site.language)
        except AriError as exc:
            logger.info("%s: prompt %s not played: %s", session.call_id, prompt, exc)

    async def _hold_music(self, session: CallSession) -> None:
        await self._quiet(session)
        try:
            await self.ari.post(f"/bridges/{leg_ids(session.call_id)[2]}/moh", mohClass="default")
            session.data["kiosk"].moh = True
        except AriError as exc:
            logger.info("%s: no music on hold: %s", session.call_id, exc)

    async def _quiet(self, session: CallSession) -> None:
        """Stop the prompt and the music on hold of the bridge, if any."""
        leg: KioskLeg = session.data["kiosk"]
        requests = ([self.ari.delete(f"/playbacks/{leg.playback}")] if leg.playback else []) + (
            [self.ari.delete(f"/bridges/{leg_ids(session.call_id)[2]}/moh")] if leg.moh else [])
        leg.playback, leg.moh = "", False
        for result in await asyncio.gather(*requests, return_exceptions=True):
            if isinstance(result, AriError) and not isinstance(result, AriNotFound):
                logger.info("%s: bridge not quietened: %s", session.call_id, result)

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
            if channel == leg_ids(session.call_id)[1] and not leg.end_reason \
                    and not leg.connected:
                await self._queue_let_go(session)  # the Local pair: the queue let go
                if session.state == "unavailable":
                    return
            if session.state == "unavailable":
                # no queue half (the citizen left, or the kiosk's audio went): the call
                # ends here
                leg.end_reason = leg.end_reason or "media_gone"
                await self._teardown(session.call_id)
                await self.calls.channel_destroyed(session, event)
                await self._finish(session, leg.end_reason)
                return
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
        """The queue half (the call) is gone: tear down the rest and close the call; when
        the queue let the citizen go without an operator, the kiosk stays (unavailable)."""
        leg = session.data["kiosk"]
        if not leg.end_reason and not leg.connected:
            await self._queue_let_go(session)
            if session.state == "unavailable":
                return
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
                     reason: str = "", fields: dict[str, str] | None = None) -> None:
        """Write the session's state for the kiosk page and publish ``kiosk.call``.
        ``reason``: why it ended (``end_reason``), or why it is unavailable."""
        leg = session.data["kiosk"]
        values = ["state", state, "call_id", session.call_id]
        if agent:
            values += ["agent", agent]
        if reason and state == "ended":
            values += ["end_reason", reason]
        for name, value in (fields or {}).items():
            values += [name, value]
        link_ttl = self.settings.kiosk.session_max_hours * 3600 if state != "ended" else 0
        try:
            # atomic, so a purge running at the same time never leaves a key behind
            await self.redis.eval(
                _UPDATE_SESSION, 2, self.kkeys.session(session.call_id),
                self.kkeys.call_session(session.call_id), link_ttl, *values)
        except RedisError as exc:
            logger.warning("%s: kiosk session state not written (Redis: %s)",
                           session.call_id, exc)
        self.recorder.publish(KioskCallState(
            session_id=leg.session_id, call_id=session.call_id, tenant=session.tenant,
            kiosk=leg.kiosk, state=state, agent=agent, reason=reason,
            asterisk_rtp=leg.asterisk_rtp if state == "queued" else ""))
