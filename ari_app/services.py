"""Call routing: what happens to an inbound call, as plain async logic.

Handlers here receive already-dispatched ARI events for one call (in order, in that
call's own task) and talk to ARI, the timeline store and the notifier. No Redis keys
or websocket code here.

A caller may hang up (a SIP CANCEL) at any moment between StasisStart and the
``continue`` that sends the call on: the request then fails with 404 (channel gone) or
409 (no longer in Stasis), or even succeeds while the hang-up is already under way.
Either way ARI says ``ChannelHangupRequest`` then ``StasisEnd``, and nothing else: the
subscription that would bring ``ChannelDestroyed`` went out with the ``continue``, too
late. So a hang-up seen while the caller is still in our application ends the call at
its StasisEnd (``left_app``), and the race is logged at INFO. A phone call that ends
without ever having been queued, and with no other outcome (rejected, out of hours), is
``cancelled_early`` (docs/kpi.md: a contact, neither offered nor abandoned).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError, AriNotFound
from ari_app.notifier import Notifier
from ari_app.session import CallSession
from ari_app.timeline import CachedCalendar, CalendarStore, NewCall, Recorder, TimelineStore
from ari_app.transcription import TranscriptionService
from common.events import (
    CallAnswered,
    CallArrived,
    CallEnded,
    CallPrompt,
    CallRejected,
    CallTransferState,
)
from common.hours import HoursDecision, decide
from common.prompts import load_prompts, per_service, service_key, variable_name
from common.settings import Service, Settings

logger = logging.getLogger(__name__)


#: ``Call.outcome`` of a phone call whose caller hung up before it was queued: a SIP
#: CANCEL right after the INVITE, or a hang-up during the greeting (set when the call
#: ends in those steps, only if the queue never saw it and nothing else decided its
#: outcome).
CANCELLED_EARLY = "cancelled_early"
#: ``Call.hangup_cause_txt`` of such a call (ARI's ChannelHangupRequest has no text).
CANCELLED_EARLY_TXT = "caller hung up before the greeting"
#: ARI statuses of a request on a channel that has left our application: gone (404) or
#: no longer in Stasis (409), i.e. the caller hung up meanwhile.
LEFT_APP = (404, 409)


def ari_time(event: dict[str, Any]) -> datetime:
    """The event's own timestamp (so replays are idempotent), else now."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("+0000", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


class CallService:
    def __init__(self, ari: AriClient, store: TimelineStore, notifier: Notifier,
                 settings: Settings, calendar: CalendarStore | CachedCalendar,
                 clock: Callable[[], datetime] | None = None,
                 recorder: Recorder | None = None,
                 transcription: TranscriptionService | None = None) -> None:
        self.ari = ari
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.calendar = calendar
        self.recorder = recorder or Recorder(notifier.publish)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tz = ZoneInfo(settings.site.timezone)
        self.transcription = transcription
        self.prompts: dict[str, str] = {
            name: spec["fallback"] for name, spec in load_prompts().items()
        }

    async def load_prompts_from_asterisk(self) -> None:
        """Read PROMPT_* globals so ari_app plays exactly what the dialplan plays, with
        the prompts said per service (``PROMPT_<NAME>__<SERVICE>``, where rendered)."""
        names = list(self.prompts)
        names += [service_key(name, service.id) for name, spec in load_prompts().items()
                  if per_service(spec["ja"]) for service in self.settings.services]
        for name in names:
            try:
                resp = await self.ari.get("/asterisk/variable", variable=variable_name(name))
            except AriError as exc:
                logger.warning("prompt %s: cannot read %s from Asterisk (%s); using %s",
                               name, variable_name(name), exc,
                               self.prompts.get(name, "the service's plain prompt"))
                continue
            value = (resp or {}).get("value")
            if value:
                self.prompts[name] = value

    # ----------------------------------------------------------------- inbound

    async def inbound(self, session: CallSession, event: dict[str, Any],
                      resumed: bool = False) -> None:
        # in our application until its StasisEnd (left_app): a hang-up meanwhile ends it
        session.data["in_app"] = True
        try:
            await self._inbound(session, event, resumed)
        except AriError as exc:
            if exc.status not in LEFT_APP:
                raise
            logger.info("%s: the caller hung up while the call was being routed (%s %s "
                        "-> %d); it ends when it leaves the application", session.call_id,
                        exc.method, exc.path, exc.status)

    async def _inbound(self, session: CallSession, event: dict[str, Any],
                       resumed: bool) -> None:
        channel = event["channel"]
        did = channel.get("dialplan", {}).get("exten", "")
        if resumed:
            did = await self._channel_var(session.channel_id, "MADO_DID") or did
        caller = channel.get("caller", {})
        session.data["channel_name"] = channel.get("name", "")
        session.data["caller"] = caller.get("number", "")
        service = self.settings.service_for_did(did)
        session.service = service
        session.tenant = service.tenant if service else ""
        at = ari_time(event)
        new = NewCall(call_id=session.call_id, tenant_id=session.tenant,
                      service_id=service.id if service else None,
                      channel=service.channel if service else "phone", did=did,
                      caller=caller.get("number", ""), caller_name=caller.get("name", ""),
                      arrived_at=at)
        self.recorder.write(self.store.call_arrived, new,
                            {"did": did, "channel_name": channel.get("name", "")},
                            only_if_new=True, publish=CallArrived(
                                at=at, call_id=session.call_id, tenant=session.tenant,
                                service=service.id if service else "", channel=new.channel,
                                did=did, caller=new.caller, caller_name=new.caller_name))
        if resumed:
            # The controller restarted while this caller was inside Stasis, before it was
            # sent on (announcements of open services are played by the dialplan): route
            # it now, as if it had just arrived.
            logger.info("%s resumed after restart: routing it now", session.call_id)
        if service is None:
            session.state = "rejecting"
            self.recorder.write(self.store.set_outcome, session.call_id, "rejected")
            await self._watch(session)
            await self._answer(session)
            self.recorder.write(self.store.record, session.call_id, "rejected",
                                datetime.now(UTC), {"reason": "unknown DID", "did": did},
                                publish=CallRejected(call_id=session.call_id, did=did,
                                                     reason="unknown DID"))
            logger.info("%s: DID %s is not configured; announcing and hanging up",
                        session.call_id, did)
            await self._play(session, "unknown_number", lambda: self._hangup(session))
            return
        decision = await self._decide(service)
        if not decision.open:
            session.state = "closed"
            self._record_hours(session, decision)
            self.recorder.write(self.store.set_outcome, session.call_id, "out_of_hours")
            await self._watch(session)
            await self._answer(session)
            logger.info("%s: %s is closed (%s %s); announcing the hours", session.call_id,
                        service.id, decision.reason, decision.detail)
            await self._play(session, "out_of_hours", lambda: self._hangup(session))
            return
        await self._greet_and_queue(session, decision)

    async def _decide(self, service: Service) -> HoursDecision:
        """The hours decision; in the loop when the calendar is cached (the usual case),
        in a thread when it has to be read from the database."""
        calendar = self.calendar
        if isinstance(calendar, CachedCalendar) and calendar.fresh(service.id):
            return self.hours(service)
        return await asyncio.to_thread(self.hours, service)

    def _record_hours(self, session: CallSession, decision: HoursDecision) -> None:
        self.recorder.write(self.store.record, session.call_id, "hours", datetime.now(UTC),
                            decision.as_dict())
        self.recorder.write(self.store.update_call, session.call_id,
                            hours_reason=decision.reason)

    async def _greet_and_queue(self, session: CallSession, decision: HoursDecision) -> None:
        """Open: hand the caller to ``[mado-greet]`` at once. The dialplan plays the
        greeting as early media, answers (``MadoAnswered``, ``dialplan_answered``), plays
        the survey invitation and enters the queue; this is the only ARI request on the
        way to the operator's phone."""
        assert session.service is not None  # nosec B101 # type narrowing, not a check
        queue = session.service.queue
        session.state = "greeting"
        # The subscription (events after the channel leaves Stasis: the prompts' user
        # events, the queue, the hang-up) goes out alongside the continue, just ahead;
        # both are answered before a failure of either is raised (the continue's first).
        results = await asyncio.gather(
            self.ari.post(f"/channels/{session.channel_id}/continue", context="mado-greet",
                          extension=queue, priority=1),
            self._watch(session), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        at = datetime.now(UTC)
        self._record_hours(session, decision)
        self._prompt_started(session, "greeting")
        self.recorder.write(self.store.record, session.call_id, "to_queue", at,
                            {"queue": queue, "after": "greeting"})

    async def dialplan_prompt(self, session: CallSession, event: dict[str, Any]) -> None:
        """A ``MadoPrompt`` user event from ``[mado-greet]``: a prompt ended there."""
        data = event.get("userevent") or {}
        prompt = str(data.get("prompt", ""))
        status = str(data.get("status", "")).upper()
        if prompt not in ("greeting", "survey_invite"):
            return
        state = "failed" if status in ("FAILED", "ERROR") else "finished"
        row: dict[str, Any] = {"prompt": prompt, "state": state}
        if prompt == "survey_invite":
            session.data["survey_opt_in"] = row["opt_in"] = str(data.get("survey", "")) == "1"
        self.recorder.write(self.store.record, session.call_id, "prompt_end", ari_time(event),
                            row, f"prompt_end:{prompt}",
                            publish=CallPrompt(call_id=session.call_id, tenant=session.tenant,
                                               prompt=prompt, state=state))
        if prompt == "greeting" and session.service is not None \
                and session.service.survey == "opt_in":
            self._prompt_started(session, "survey_invite")
        elif session.state == "greeting":
            session.state = "queued"

    def dialplan_answered(self, session: CallSession, event: dict[str, Any]) -> None:
        """A ``MadoAnswered`` user event from ``[mado-greet]``: the greeting was heard (as
        early media) and the dialplan answered the caller, on the way to the queue."""
        at = ari_time(event)
        self.recorder.write(self.store.call_answered, session.call_id, at,
                            publish=CallAnswered(at=at, call_id=session.call_id,
                                                 tenant=session.tenant))

    def _prompt_started(self, session: CallSession, prompt: str) -> None:
        self.recorder.write(self.store.record, session.call_id, "prompt", datetime.now(UTC),
                            {"prompt": prompt, "state": "started"}, f"prompt:{prompt}",
                            publish=CallPrompt(call_id=session.call_id, tenant=session.tenant,
                                               prompt=prompt, state="started"))

    def hours(self, service: Service) -> HoursDecision:
        """Service hours decision now (the clock is injectable for tests)."""
        return decide(service.hours_rule(), self.clock(), self.tz,
                      self.calendar.special_days(service.id))

    async def _answer(self, session: CallSession) -> None:
        await self.ari.post(f"/channels/{session.channel_id}/answer")
        at = datetime.now(UTC)
        self.recorder.write(self.store.call_answered, session.call_id, at,
                            publish=CallAnswered(at=at, call_id=session.call_id,
                                                 tenant=session.tenant))

    def prompt_sound(self, prompt: str, service: Service | None) -> str:
        """What ``prompt`` plays to a caller of ``service``: its own version where the
        prompt is said per service (out_of_hours with that service's hours), else the
        prompt's."""
        if service is not None:
            return self.prompts.get(service_key(prompt, service.id), self.prompts[prompt])
        return self.prompts[prompt]

    async def _play(self, session: CallSession, prompt: str,
                    then: Callable[[], Awaitable[None]]) -> None:
        playback_id = uuid.uuid4().hex
        session.playback_id = playback_id
        session.after_playback = then
        session.data["prompt"] = prompt
        await self.ari.post(f"/channels/{session.channel_id}/play",
                            media=f"sound:{self.prompt_sound(prompt, session.service)}",
                            playbackId=playback_id, lang=self.settings.site.language)
        self._prompt_started(session, prompt)

    async def play_then(self, session: CallSession, prompt: str,
                        then: Callable[[], Awaitable[None]]) -> None:
        await self._play(session, prompt, then)

    async def hangup(self, session: CallSession) -> None:
        await self._hangup(session)

    async def play_prompt(self, session: CallSession, prompt: str) -> None:
        """Play a prompt without waiting for it (e.g. while the call is being moved)."""
        try:
            await self.ari.post(f"/channels/{session.channel_id}/play",
                                media=f"sound:{self.prompt_sound(prompt, session.service)}",
                                lang=self.settings.site.language)
        except AriError as exc:
            logger.info("%s: prompt %s not played: %s", session.call_id, prompt, exc)

    async def publish_transfer(self, session: CallSession, data: dict[str, Any]) -> None:
        await self.notifier.publish(CallTransferState(
            call_id=session.call_id, tenant=session.tenant, kind=data["kind"],
            target=data["target"], department=data["department"], operator=data["operator"],
            result=data["result"], reason=data["reason"], note=data["note"]))

    async def agent_connected(self, session: CallSession, agent: str, channel: str,
                              channel_id: str, restarted: bool = False) -> None:
        """An operator answered: watch their leg too (a REFER from their phone arrives as
        a ChannelTransfer event on it). ``restarted``: found talking after a restart (its
        transcription, if any, is taken over rather than started)."""
        session.data.update(agent=agent, agent_channel=channel, agent_channel_id=channel_id)
        if channel_id:
            session.legs.add(channel_id)
            await self._subscribe(channel_id)
        if self.transcription is not None:
            if restarted:
                await self.transcription.take_over(session)
            else:
                await self.transcription.start(session)

    async def playback_finished(self, session: CallSession, event: dict[str, Any]) -> None:
        playback = event.get("playback", {})
        if playback.get("id") != session.playback_id:
            return
        session.playback_id = None
        then, session.after_playback = session.after_playback, None
        state = "failed" if playback.get("state") == "failed" else "finished"
        prompt = session.data.get("prompt", "")
        self.recorder.write(self.store.record, session.call_id, "prompt_end", ari_time(event),
                            {"prompt": prompt, "state": state}, f"prompt_end:{prompt}",
                            publish=CallPrompt(call_id=session.call_id, tenant=session.tenant,
                                               prompt=prompt, state=state))
        if then is not None:
            await then()

    async def _hangup(self, session: CallSession) -> None:
        try:
            await self.ari.delete(f"/channels/{session.channel_id}", reason="normal")
        except AriNotFound:
            pass

    async def rescue(self, session: CallSession) -> None:
        """Something failed while handling this call: land it somewhere safe."""
        target = session.service.queue if session.service else None
        try:
            if target:
                await self.ari.post(f"/channels/{session.channel_id}/continue",
                                    context="mado-fallback", extension=target, priority=1)
            else:
                await self._hangup(session)
        except AriNotFound:
            pass
        except Exception:
            logger.exception("%s: could not rescue the call", session.call_id)

    # ------------------------------------------------------------------ ending

    async def channel_destroyed(self, session: CallSession, event: dict[str, Any]) -> None:
        # a phone call that ends before its queue (the caller hung up in the greeting, or
        # the CANCEL came just after the continue) is cancelled_early when the queue
        # never saw it; not a kiosk session, nor a caller the queue refused (no operator:
        # the callback offer)
        unqueued = CANCELLED_EARLY if session.kind == "call" and \
            session.state in ("new", "greeting") else None
        session.state = "ended"
        cause = event.get("cause")
        cause_txt = event.get("cause_txt", "")
        at = ari_time(event)
        self.recorder.write(self.store.call_ended, session.call_id, at,
                            cause if isinstance(cause, int) else None, cause_txt,
                            unqueued_outcome=unqueued, only_if_new=True,
                            publish=CallEnded(at=at, call_id=session.call_id,
                                              tenant=session.tenant,
                                              cause=cause if isinstance(cause, int) else 0,
                                              cause_txt=cause_txt))

    def hangup_requested(self, session: CallSession, event: dict[str, Any]) -> None:
        """``ChannelHangupRequest`` of the caller's channel: while it is still in our
        application, the caller hung up there (remembered for ``left_app``)."""
        if session.data.get("in_app") and not event.get("soft"):
            cause = event.get("cause")
            session.data["hung_up"] = cause if isinstance(cause, int) else None

    async def left_app(self, session: CallSession, event: dict[str, Any]) -> None:
        """``StasisEnd`` of an inbound caller's channel before we sent it on (or while
        that request was under way). When the caller hung up inside our application, or
        the channel was gone before we could subscribe to it, no ChannelDestroyed will
        follow: the call ends now (``cancelled_early`` unless it was rejected or out of
        hours)."""
        if not session.data.pop("in_app", False):
            return  # sent on by us (continue), or not an inbound call's first visit
        hung_up = "hung_up" in session.data
        watched = bool(session.data.get("watched"))
        early = session.state in ("new", "greeting") and (hung_up or not watched)
        if not early and watched:
            return  # its ChannelDestroyed comes through the subscription
        session.state = "ended"
        cause: int | None = session.data.get("hung_up")
        at = ari_time(event)
        cause_txt = CANCELLED_EARLY_TXT if early else \
            "caller hung up" if hung_up else "left the application before it was watched"
        self.recorder.write(self.store.call_ended, session.call_id, at, cause, cause_txt,
                            unqueued_outcome=CANCELLED_EARLY, only_if_new=True,
                            publish=CallEnded(at=at, call_id=session.call_id,
                                              tenant=session.tenant, cause=cause or 0,
                                              cause_txt=cause_txt))
        logger.info("%s: %s (cause %s); the call ends", session.call_id,
                    "the caller hung up before the greeting" if early
                    else "the channel left the application before it was watched", cause)

    async def ended_while_away(self, call_id: str) -> None:
        """A call we had as active no longer exists in Asterisk (we were disconnected)."""
        at = datetime.now(UTC)
        txt = "ended while the controller was disconnected"
        self.recorder.write(self.store.call_ended, call_id, at, None, txt, None, "system",
                            only_if_new=True,
                            publish=CallEnded(at=at, call_id=call_id, tenant="", cause=0,
                                              cause_txt=txt))

    # ----------------------------------------------------------------- helpers

    async def _subscribe(self, channel_id: str) -> bool:
        """Keep receiving this channel's events after it leaves Stasis (queue, hang-up).
        False: the channel is already gone."""
        try:
            await self.ari.post(f"/applications/{self.ari.app}/subscription",
                                eventSource=f"channel:{channel_id}")
        except AriError as exc:
            # 404/422: the channel is already gone ("Event source does not exist")
            if exc.status not in (404, 422):
                raise
            return False
        return True

    async def _watch(self, session: CallSession) -> None:
        """Subscribe to the caller's channel; ``watched``: its ChannelDestroyed will come."""
        session.data["watched"] = await self._subscribe(session.channel_id)

    async def resubscribe(self, channel_id: str) -> None:
        await self._subscribe(channel_id)

    async def watch_again(self, session: CallSession, channel: dict[str, Any]) -> bool:
        """After a restart or reconnect: a call already past Stasis (waiting in the queue
        or talking to an operator) is watched again, and what the controller knew of it
        is rebuilt from Asterisk, so it can still be transferred or listened to. True:
        the caller is inside a transfer (``TransferService.take_over`` goes on)."""
        await self._subscribe(session.channel_id)
        did = await self._channel_var(session.channel_id, "MADO_DID")
        service = self.settings.service_for_did(did) if did else None
        session.service = service
        session.tenant = service.tenant if service else ""
        session.data["channel_name"] = channel.get("name", "")
        session.data["caller"] = (channel.get("caller") or {}).get("number", "")
        session.state = "queued"
        dialplan = channel.get("dialplan") or {}
        if dialplan.get("app_name") == "Stasis" and \
                ",transfer," in f"{dialplan.get('app_data', '')},":
            return True
        # talking to an operator: app_queue named the member, the bridge names the peer
        member = await self._channel_var(session.channel_id, "MEMBERNAME")
        peer = await self._channel_var(session.channel_id, "BRIDGEPEER")
        if member and peer:
            try:
                channels = await self.ari.get("/channels")
            except AriError:
                channels = []
            peer_id = next((str(c["id"]) for c in channels or [] if c.get("name") == peer), "")
            if peer_id:
                await self.agent_connected(session, member, peer, peer_id, restarted=True)
        logger.info("%s watched again after a restart (%s)", session.call_id,
                    f"talking to {member}" if member and peer else "in the queue")
        return False

    async def _channel_var(self, channel_id: str, name: str) -> str:
        try:
            resp = await self.ari.get(f"/channels/{channel_id}/variable", variable=name)
        except AriError:
            return ""
        return str((resp or {}).get("value", ""))
