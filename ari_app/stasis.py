"""ARI event dispatch: one ordered queue and one task per call.

``on_event`` is called by the ARI client for every event in arrival order and never
blocks: it routes the event to its call's queue. Each call's task handles its events
one after another, so a slow database write for one call never delays another, and a
failure in one call's handler is logged and that call is rescued (sent on to its
queue), never crashing the controller.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ari_app.callbacks import CallbackService
from ari_app.exceptions import AriNotFound, CommandError
from ari_app.kiosk import KioskService
from ari_app.services import CallService
from ari_app.session import CallSession
from ari_app.supervision import SupervisionService
from ari_app.survey import SurveyService
from ari_app.transcription import TranscriptionService
from ari_app.transfers import TransferService

logger = logging.getLogger(__name__)

# Channels our own media plumbing creates; they enter the app but are not calls.
INTERNAL_PREFIXES = ("UnicastRTP/", "Snoop/", "Local/")


def channel_of(event: dict[str, Any]) -> str | None:
    channel = event.get("channel")
    if isinstance(channel, dict) and "id" in channel:
        return str(channel["id"])
    referred_by = event.get("referred_by")
    if isinstance(referred_by, dict):  # ChannelTransfer: the phone that sent the REFER
        source = referred_by.get("source_channel")
        if isinstance(source, dict) and "id" in source:
            return str(source["id"])
    playback = event.get("playback")
    if isinstance(playback, dict):
        target = str(playback.get("target_uri", ""))
        if target.startswith("channel:"):
            return target.split(":", 1)[1]
    return None


class StasisDispatcher:
    def __init__(self, service: CallService, transfers: TransferService,
                 callbacks: CallbackService, survey: SurveyService,
                 supervision: SupervisionService,
                 transcription: TranscriptionService | None) -> None:
        self.service = service
        self.transfers = transfers
        self.callbacks = callbacks
        self.survey = survey
        self.supervision = supervision
        self.transcription = transcription
        callbacks.later = self.later
        survey.later = self.later
        self.sessions: dict[str, CallSession] = {}
        self._queues: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.seen_stasis_start = 0
        # set by the controller (the kiosk service opens its sessions here)
        self.kiosk: KioskService

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        channel_id = channel_of(event)
        logger.debug("ARI %s channel %s", kind, channel_id)
        if channel_id is None:
            logger.debug("ARI event %s without a channel: %.600s", kind, event)
            return
        owner = self._owner(channel_id)
        if owner is not None and owner.channel_id != channel_id:
            event = {**event, "mado_leg": channel_id}
            channel_id = owner.channel_id
        if kind == "StasisStart" and channel_id not in self.sessions:
            name = str(event.get("channel", {}).get("name", ""))
            args = event.get("args") or []
            if args and args[0] == "callback" and name.startswith("Local/"):
                # a callback's placeholder reached an operator
                self._open(CallSession(channel_id=channel_id, call_id=channel_id,
                                       kind="callback"))
                self._queues[channel_id].put_nowait(event)
                return
            if name.startswith(INTERNAL_PREFIXES) or "inbound" not in args:
                if self.transcription is not None:  # snoop/ExternalMedia legs
                    self.transcription.channel_entered(channel_id)
                logger.debug("StasisStart for %s (%s) is not an inbound call", name, args)
                return
            self.seen_stasis_start += 1
            self._open(CallSession(channel_id=channel_id, call_id=channel_id))
        queue = self._queues.get(channel_id)
        if queue is None:
            return
        queue.put_nowait(event)

    def _owner(self, channel_id: str) -> CallSession | None:
        """The call a channel belongs to: its caller leg, or one of its other legs."""
        session = self.sessions.get(channel_id)
        if session is not None:
            return session
        for candidate in self.sessions.values():
            if channel_id in candidate.legs:
                return candidate
        return None

    def submit(self, call_id: str, kind: str, **data: Any) -> asyncio.Future[Any] | None:
        """Hand something to a call's own task (in order with its ARI events); the
        future resolves with the handler's result. None when the call is unknown here."""
        queue = self._queues.get(call_id)
        if queue is None:
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.put_nowait({"type": kind, "future": future, **data})
        return future

    def later(self, call_id: str, kind: str, delay: float) -> None:
        """Deliver a synthetic event to a call's task after ``delay`` seconds."""
        def fire() -> None:
            queue = self._queues.get(call_id)
            if queue is not None:
                queue.put_nowait({"type": kind})
        asyncio.get_running_loop().call_later(delay, fire)

    def adopt(self, channel: dict[str, Any], in_stasis: bool) -> None:
        """Take over a call found during resync (after a reconnect or restart)."""
        channel_id = str(channel["id"])
        if channel_id in self.sessions:
            return
        session = CallSession(channel_id=channel_id, call_id=channel_id)
        self._open(session)
        kind = "MadoResume" if in_stasis else "MadoWatch"
        self._queues[channel_id].put_nowait({"type": kind, "channel": channel})

    def open_session(self, session: CallSession) -> None:
        """Start the task of a call the controller creates itself (a kiosk session)."""
        self._open(session)

    def _open(self, session: CallSession) -> None:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.sessions[session.channel_id] = session
        self._queues[session.channel_id] = queue
        task = asyncio.create_task(self._run(session, queue),
                                   name=f"call-{session.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, session: CallSession,
                   queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                await self._handle(session, event)
                if session.state == "ended":
                    return
        finally:
            self.sessions.pop(session.channel_id, None)
            self._queues.pop(session.channel_id, None)
            while not queue.empty():
                left = queue.get_nowait()
                future = left.get("future") if left else None
                if future is not None and not future.done():
                    future.set_exception(CommandError("call_gone", "the call has ended"))

    async def _handle(self, session: CallSession, event: dict[str, Any]) -> None:
        """One event of a call; a failure goes back to its command, or the call is rescued."""
        kind = event.get("type")
        future: asyncio.Future[Any] | None = event.get("future")
        try:
            await self._route(session, event)
        except AriNotFound as exc:
            logger.info("%s: channel gone while handling %s (caller hung up)",
                        session.call_id, kind)
            if future is not None and not future.done():
                future.set_exception(CommandError("call_gone", f"the call has ended: {exc}"))
        except asyncio.CancelledError:
            raise
        except CommandError as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
        except Exception as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            if kind == "MadoCall":
                logger.exception("%s: command failed", session.call_id)
                return
            logger.exception("%s: handling %s failed; sending the call on safely",
                             session.call_id, kind)
            await self.service.rescue(session)

    async def _route(self, session: CallSession, event: dict[str, Any]) -> None:
        """Hand an event to whoever owns it: the caller's channel, or another leg."""
        leg = event.get("mado_leg")
        if leg is None:
            await self._caller_event(session, event)
        elif session.kind == "kiosk" and self.kiosk.owns(session, leg):
            await self.kiosk.leg_event(session, event)
        elif session.kind == "callback":
            await self._citizen_event(session, event)
        else:
            await self._leg_event(session, event, leg)

    async def _citizen_event(self, session: CallSession, event: dict[str, Any]) -> None:
        """An event of the citizen's leg a callback dialled."""
        kind = event.get("type")
        if kind == "StasisStart":
            await self.callbacks.citizen_answered(session, event)
        elif kind == "ChannelDestroyed":
            await self.callbacks.leg_destroyed(session, event)

    async def _leg_event(self, session: CallSession, event: dict[str, Any], leg: str) -> None:
        """Another leg's event (operator, staff, supervisor): supervision first, then transfer."""
        kind = event.get("type")
        supervision = self.supervision
        if kind == "StasisStart":
            if not await supervision.leg_started(session, event):
                await self.transfers.stasis_start(session, event)
        elif kind == "ChannelDestroyed":
            if leg == session.data.get("agent_channel_id"):
                await supervision.stop(session, "call_ended")
            if not await supervision.leg_gone(session, leg):
                await self.transfers.leg_destroyed(session, event)
        elif kind == "ChannelTransfer":
            await self.transfers.refer(session, event)

    async def _caller_event(self, session: CallSession, event: dict[str, Any]) -> None:
        """An event of the call's own channel, or one the controller hands to its task."""
        kind = event.get("type")
        if kind == "StasisStart":
            await self._stasis_start(session, event)
        elif kind == "ChannelDtmfReceived":
            if session.state == "survey":
                await self.survey.dtmf(session, event)
            else:
                await self.callbacks.dtmf(session, event)
        elif kind == "ChannelUserevent" and event.get("eventname") == "MadoPrompt":
            await self.service.dialplan_prompt(session, event)
        elif kind == "ChannelUserevent" and event.get("eventname") == "MadoAnswered":
            self.service.dialplan_answered(session, event)
        elif kind == "PlaybackFinished":
            await self.service.playback_finished(session, event)
            await self.callbacks.playback_finished(session, event)
        elif kind == "ChannelDestroyed":
            await self._channel_destroyed(session, event)
        elif kind == "ChannelHangupRequest":
            self.service.hangup_requested(session, event)
        elif kind == "StasisEnd":
            # an inbound caller who hung up inside the app ends here (no ChannelDestroyed)
            await self.service.left_app(session, event)
        else:
            await self._controller_event(session, event)

    async def _stasis_start(self, session: CallSession, event: dict[str, Any]) -> None:
        """The call's channel entered the app: the dialplan's arguments say for what."""
        args = event.get("args") or []
        if session.kind == "callback":
            await self.callbacks.operator_reached(session, event)
        elif args and args[0] == "transfer":
            await self.transfers.stasis_start(session, event)
        elif args and args[0] == "callback":
            await self.callbacks.offer(session, event)
        elif args and args[0] == "survey":
            await self.survey.ask(session)
        else:
            await self.service.inbound(session, event)

    async def _controller_event(self, session: CallSession, event: dict[str, Any]) -> None:
        """The controller's own events (``Mado*``): timers, answers, commands, restarts."""
        kind = event.get("type")
        if kind == "MadoSurveyTimeout":
            await self.survey.timeout(session)
        elif kind == "MadoCallbackTimeout":
            await self.callbacks.timeout(session)
        elif kind == "MadoAgentConnected":
            await self.service.agent_connected(session, event["agent"],
                                               event["channel_name"],
                                               event["agent_channel_id"])
        elif kind == "MadoCall":
            result = await event["call"](session)
            future: asyncio.Future[Any] | None = event.get("future")
            if future is not None and not future.done():
                future.set_result(result)
        elif kind == "MadoResume":
            await self.service.inbound(session, event, resumed=True)
        elif kind == "MadoWatch":
            if await self.service.watch_again(session, event["channel"]):
                await self.transfers.take_over(session)

    async def _channel_destroyed(self, session: CallSession, event: dict[str, Any]) -> None:
        """The call's channel is gone: release what that kind of call still holds."""
        # every kind of call: its snoops, ExternalMedia channels, bridges and stream
        # registrations go with it
        if self.transcription is not None:
            await self.transcription.stop(session)
        if session.kind == "kiosk":
            await self.kiosk.call_ended(session, event)
        elif session.kind == "callback":
            await self.callbacks.placeholder_gone(session)
        else:
            await self.transfers.caller_gone(session)
            await self.service.channel_destroyed(session, event)

    async def close(self) -> None:
        for queue in self._queues.values():
            queue.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
