"""app_queue over AMI: operator lines (members), their states, and the queue part of
every call's timeline.

- Commands (``cmd.agent.*``) become ``QueueAdd`` / ``QueueRemove`` / ``QueuePause``.
- AMI queue events are mirrored live into Redis (``Keys.queue_members`` and
  ``Keys.queue_callers``), published as ``queue.member`` / ``queue.caller`` events and
  written to the call timelines (join with position, each ring, connect with the wait,
  completion with the talk time, abandonment with the position).
- After every AMI log-in the mirror is rebuilt from ``QueueStatus``, so a lost
  connection or a restarted controller never leaves stale state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ari_app.ami import AmiConnection
from ari_app.exceptions import CommandError
from ari_app.notifier import Notifier
from ari_app.timeline import NewCall, Recorder, TimelineStore
from common.commands import (
    PAUSE_REASONS,
    AgentLogin,
    AgentLogout,
    AgentPause,
    AgentUnpause,
)
from common.events import QueueCallerState, QueueMemberState
from common.keys import Keys
from common.settings import Settings

logger = logging.getLogger(__name__)

# app_queue member Status numbers (AST_DEVICE_*)
DEVICE_STATUS = {
    "0": "unknown", "1": "not_in_use", "2": "in_use", "3": "busy", "4": "invalid",
    "5": "unavailable", "6": "ringing", "7": "ringinuse", "8": "on_hold",
}


BUSY_STATUSES = ("in_use", "busy", "ringinuse", "on_hold")
#: Asterisk device states of a phone that cannot ring (no registration, or qualify fails)
PHONE_DOWN_STATES = ("UNAVAILABLE", "INVALID")
#: how long a just-registered phone may take to leave UNAVAILABLE (its first qualify)
PHONE_SETTLE_SECONDS = 2.0


def ami_time(event: Any) -> datetime:
    stamp = event.get("Timestamp")
    try:
        return datetime.fromtimestamp(float(stamp), UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def member_record(event: Any, endpoint: str, now: float) -> dict[str, Any]:
    """The mirror's record of one queue member, from a ``QueueMember*`` AMI event."""
    status = DEVICE_STATUS.get(str(event.get("Status", "")), "unknown")
    return {
        "endpoint": endpoint,
        "paused": event.get("Paused") == "1",
        "reason": event.get("PausedReason", "") or "",
        # the phone's device state: "unavailable"/"invalid" = not registered or not
        # reachable (qualify), which the consoles show as 電話機未接続
        "status": status,
        # app_queue's InCall flag lags the device state; either means "on a call"
        "in_call": event.get("InCall") == "1" or status in BUSY_STATUSES,
        "calls_taken": _int(event.get("CallsTaken")),
        # when the member's last queue call ended (epoch s, 0 = none): the consoles
        # show after-call work until the service's wrapuptime has passed
        "last_call": _int(event.get("LastCall")),
        "since": now,
    }


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class QueueManager:
    def __init__(self, ami: AmiConnection, redis: aioredis.Redis, keys: Keys,
                 store: TimelineStore, notifier: Notifier, settings: Settings,
                 recorder: Recorder) -> None:
        self.recorder = recorder
        self.ami = ami
        self.redis = redis
        self.keys = keys
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.queue_service = {svc.queue: svc for svc in settings.services}
        self.operator_endpoints = {ep for ep, _ext in settings.operators.endpoints()}
        for pattern, handler in (
            ("QueueMemberAdded", self._member_event), ("QueueMemberRemoved", self._member_event),
            ("QueueMemberStatus", self._member_event), ("QueueMemberPause", self._member_event),
            ("QueueCallerJoin", self._caller_join), ("QueueCallerLeave", self._caller_leave),
            ("QueueCallerAbandon", self._caller_abandon), ("AgentCalled", self._agent_called),
            ("AgentRingNoAnswer", self._agent_noanswer), ("AgentConnect", self._agent_connect),
            ("AgentComplete", self._agent_complete),
        ):
            ami.register_event(pattern, self._guard(handler))
        ami.on_login.append(self.rebuild)
        self.rebuilds = 0
        self._locks: dict[str, asyncio.Lock] = {}
        # (queue, member) -> (call id, is a callback) of each call an operator is talking
        # on: Asterisk sends AgentComplete without the caller's fields (no Uniqueid) when
        # the caller's channel is already gone, so the call is found from its member
        self._talking: dict[tuple[str, str], tuple[str, bool]] = {}
        # told when an operator answers a queued call: (call id, operator endpoint,
        # operator channel name, operator channel id)
        self.on_agent_connect: Callable[[str, str, str, str], None] = \
            lambda _call, _agent, _name, _id: None
        # maps a queue event's caller to (call id, is a callback placeholder)
        self.resolve_call: Callable[[Any], tuple[str, bool]] = \
            lambda event: (str(event.get("Uniqueid", "")), False)

    def _guard(self, handler: Any) -> Any:
        """Run ``handler`` for each event, in arrival order per member and per call.

        panoramisk starts one task per event; without ordering, a member's "ringing"
        could be written after its "in use". Tasks start in arrival order and asyncio
        locks queue their waiters first come, first served, so one lock per member (or
        per caller) keeps each one's events in order while others run concurrently.
        """
        async def run(_manager: Any, event: Any) -> None:
            key = str(event.get("Uniqueid") or "") or (
                f"{event.get('Queue', '')}/{event.get('MemberName') or event.get('Interface')}")
            lock = self._locks.setdefault(key, asyncio.Lock())
            try:
                async with lock:
                    await handler(event)
            except Exception:
                logger.exception("handling AMI %s failed", event.get("Event"))
            finally:
                if not lock.locked() and not getattr(lock, "_waiters", None):
                    self._locks.pop(key, None)
        return run

    # --------------------------------------------------------------- commands

    def _check_endpoint(self, tenant: str, endpoint: str) -> None:
        if endpoint not in self.operator_endpoints:
            raise CommandError("unknown_endpoint",
                               f"{endpoint!r} is not an operator phone of this system")

    def _queues_for(self, tenant: str, wanted: tuple[str, ...] | list[str]) -> list[str]:
        own = [svc.queue for svc in self.settings.services if svc.tenant == tenant]
        if not own:
            raise CommandError("unknown_tenant", f"tenant {tenant!r} has no services")
        if not wanted:
            return own
        for queue in wanted:
            if queue not in own:
                raise CommandError("unknown_queue",
                                   f"queue {queue!r} does not belong to tenant {tenant!r}")
        return list(wanted)

    async def _action(self, action: dict[str, Any]) -> Any:
        try:
            reply = await self.ami.action(action)
        except ConnectionError as exc:
            raise CommandError("ami_down", f"Asterisk's AMI is not connected: {exc}") from None
        if isinstance(reply, list):
            reply = reply[0] if reply else None
        return reply

    async def _require_phone(self, endpoint: str) -> None:
        """Refuse to make an operator ready whose phone cannot ring: app_queue would
        skip the member, and the console would say 受付可 while no call can reach them.

        A registration made a moment ago is qualified (OPTIONS) before its device state
        leaves UNAVAILABLE, so an unavailable phone is asked again for a short while.
        """
        deadline = time.monotonic() + PHONE_SETTLE_SECONDS
        while True:
            reply = await self._action({"Action": "Getvar",
                                        "Variable": f"DEVICE_STATE(PJSIP/{endpoint})"})
            state = str(reply.get("Value", "") if reply is not None else "").upper()
            if state not in PHONE_DOWN_STATES:
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        raise CommandError("phone_unavailable",
                           f"the phone {endpoint} is not registered or not reachable "
                           f"(device state {state}): start the softphone and let it "
                           "register, then try again")

    async def login(self, cmd: AgentLogin) -> None:
        self._check_endpoint(cmd.tenant, cmd.endpoint)
        queues = self._queues_for(cmd.tenant, cmd.queues)
        if not cmd.paused:
            await self._require_phone(cmd.endpoint)
        for queue in queues:
            lines = self.queue_service[queue].lines
            members = await self.redis.hkeys(self.keys.queue_members(queue))
            names = {m.decode() if isinstance(m, bytes) else m for m in members}
            if cmd.endpoint not in names and len(names) >= lines:
                raise CommandError("all_lines_in_use", f"all {lines} operator lines of "
                                   f"{queue} are taken ({', '.join(sorted(names))})")
        for queue in queues:
            reply = await self._action({
                "Action": "QueueAdd", "Queue": queue, "Interface": f"PJSIP/{cmd.endpoint}",
                "MemberName": cmd.endpoint, "StateInterface": f"PJSIP/{cmd.endpoint}",
                "Paused": "true" if cmd.paused else "false",
                "Reason": "login" if cmd.paused else ""})
            message = str(reply.get("Message", "")) if reply is not None else ""
            if reply is not None and not reply.success and "Already there" not in message:
                raise CommandError("ami_refused", f"QueueAdd {queue}: {message}")

    async def logout(self, cmd: AgentLogout) -> None:
        self._check_endpoint(cmd.tenant, cmd.endpoint)
        for queue in self._queues_for(cmd.tenant, cmd.queues):
            reply = await self._action({"Action": "QueueRemove", "Queue": queue,
                                        "Interface": f"PJSIP/{cmd.endpoint}"})
            message = str(reply.get("Message", "")) if reply is not None else ""
            if reply is not None and not reply.success and "Not there" not in message:
                raise CommandError("ami_refused", f"QueueRemove {queue}: {message}")

    async def pause(self, cmd: AgentPause | AgentUnpause) -> None:
        self._check_endpoint(cmd.tenant, cmd.endpoint)
        paused = isinstance(cmd, AgentPause)
        reason = cmd.reason if isinstance(cmd, AgentPause) else ""
        if paused and reason not in PAUSE_REASONS:
            raise CommandError("bad_reason", f"pause reason must be one of "
                               f"{', '.join(PAUSE_REASONS)}")
        if not paused:
            await self._require_phone(cmd.endpoint)
        reply = await self._action({"Action": "QueuePause",
                                    "Interface": f"PJSIP/{cmd.endpoint}",
                                    "Paused": "true" if paused else "false", "Reason": reason})
        if reply is not None and not reply.success:
            raise CommandError("not_logged_in", f"{cmd.endpoint} is not in any queue: "
                               f"{reply.get('Message', '')}")

    # ----------------------------------------------------------------- members

    async def _member_event(self, event: Any) -> None:
        queue = event.get("Queue", "")
        endpoint = event.get("MemberName") or str(event.get("Interface", "")).split("/")[-1]
        logged_in = event.get("Event") != "QueueMemberRemoved"
        state = member_record(event, endpoint, time.time())
        try:
            key = self.keys.queue_members(queue)
            if logged_in:
                previous = await self.redis.hget(key, endpoint)
                if previous:
                    old = json.loads(previous)
                    if (old.get("paused"), old.get("in_call"), old.get("status")) == (
                            state["paused"], state["in_call"], state["status"]):
                        state["since"] = old.get("since", state["since"])
                await self.redis.hset(key, endpoint, json.dumps(state))
            else:
                await self.redis.hdel(key, endpoint)
        except RedisError as exc:
            logger.warning("queue mirror not updated (Redis: %s)", exc)
        await self.notifier.publish(QueueMemberState(
            at=ami_time(event), queue=queue, endpoint=endpoint, logged_in=logged_in,
            paused=bool(state["paused"]), reason=str(state["reason"]),
            status=str(state["status"]), in_call=bool(state["in_call"]),
            calls_taken=int(state["calls_taken"])))

    # ----------------------------------------------------------------- callers

    async def _ensure_call(self, event: Any) -> str:
        call_id = str(event.get("Uniqueid", ""))
        service = self.queue_service.get(event.get("Queue", ""))
        self.recorder.write(self.store.ensure_call, NewCall(
            call_id=call_id, tenant_id=service.tenant if service else "",
            service_id=service.id if service else None,
            channel=service.channel if service else "phone", did="",
            caller=str(event.get("CallerIDNum", "") or ""),
            caller_name=str(event.get("CallerIDName", "") or ""), arrived_at=ami_time(event)))
        return call_id

    async def _record(self, call_id: str, kind: str, event: Any, data: dict[str, Any],
                      key_extra: str = "") -> None:
        if not call_id:
            logger.debug("AMI %s without a known call; not recorded", kind)
            return
        at = ami_time(event)
        dedup = f"{kind}:{event.get('Timestamp', '')}{key_extra}"
        self.recorder.write(self.store.record, call_id, kind, at, data, dedup, "ami")

    async def _callers_changed(self, queue: str, call_id: str, state: str, event: Any,
                               position: int = 0, wait: int = 0, agent: str = "") -> None:
        key = self.keys.queue_callers(queue)
        waiting = 0
        try:
            if state == "joined":
                await self.redis.hset(key, call_id, json.dumps(
                    {"position": position, "joined_at": ami_time(event).timestamp()}))
            else:
                await self.redis.hdel(key, call_id)
            waiting = int(await self.redis.hlen(key))
        except RedisError as exc:
            logger.warning("queue mirror not updated (Redis: %s)", exc)
        self.recorder.publish(QueueCallerState(
            at=ami_time(event), queue=queue, call_id=call_id, state=state, position=position,
            waiting=waiting, wait_seconds=wait, agent=agent))

    async def _caller_join(self, event: Any) -> None:
        call_id, callback = self.resolve_call(event)
        queue = event.get("Queue", "")
        position = _int(event.get("Position"))
        if callback:
            if call_id:
                await self._record(call_id, "callback_queue_join", event,
                                   {"queue": queue, "position": position})
            await self._callers_changed(queue, str(event.get("Uniqueid", "")), "joined", event,
                                        position=position)
            return
        call_id = await self._ensure_call(event)
        await self._record(call_id, "queue_join", event, {"queue": queue, "position": position,
                                                          "count": _int(event.get("Count"))})
        self.recorder.write(self.store.update_call, call_id, ("queued_at",), queue=queue,
                                queued_at=ami_time(event), queue_position=position)
        await self._callers_changed(queue, call_id, "joined", event, position=position)

    async def _caller_leave(self, event: Any) -> None:
        call_id, callback = self.resolve_call(event)
        queue = event.get("Queue", "")
        if callback:
            await self._callers_changed(queue, str(event.get("Uniqueid", "")), "left", event,
                                        position=_int(event.get("Position")))
            return
        await self._record(call_id, "queue_leave", event, {"queue": queue,
                                                           "position": _int(event.get("Position"))})
        await self._callers_changed(queue, call_id, "left", event,
                                    position=_int(event.get("Position")))

    async def _caller_abandon(self, event: Any) -> None:
        call_id, callback = self.resolve_call(event)
        if callback:
            return
        queue = event.get("Queue", "")
        position = _int(event.get("Position"))
        wait = _int(event.get("HoldTime"))
        await self._record(call_id, "abandon", event, {
            "queue": queue, "position": position,
            "original_position": _int(event.get("OriginalPosition")), "wait_seconds": wait})
        self.recorder.write(self.store.update_call, call_id, outcome="abandoned",
                                abandoned_position=position, wait_seconds=wait)
        await self._callers_changed(queue, call_id, "abandoned", event, position=position,
                                    wait=wait)

    async def _agent_called(self, event: Any) -> None:
        call_id, callback = self.resolve_call(event)
        agent = str(event.get("MemberName", ""))
        await self._record(call_id, "callback_ring" if callback else "ring", event,
                           {"queue": event.get("Queue", ""), "agent": agent}, f":{agent}")

    async def _agent_noanswer(self, event: Any) -> None:
        call_id, callback = self.resolve_call(event)
        if callback:
            return
        agent = str(event.get("MemberName", ""))
        await self._record(call_id, "ring_noanswer", event, {
            "agent": agent, "ring_ms": _int(event.get("RingTime")) * 1000}, f":{agent}")

    async def _agent_connect(self, event: Any) -> None:
        call_id, callback = self.resolve_call(event)
        agent = str(event.get("MemberName", ""))
        wait = _int(event.get("HoldTime"))
        queue = event.get("Queue", "")
        if call_id:
            self._talking[(queue, agent)] = (call_id, callback)
        if callback:
            await self._record(call_id, "callback_agent_connect", event,
                               {"queue": queue, "agent": agent, "wait_seconds": wait})
            await self._callers_changed(queue, str(event.get("Uniqueid", "")), "connected",
                                        event, wait=wait, agent=agent)
            return
        await self._record(call_id, "agent_connect", event, {
            "queue": queue, "agent": agent, "wait_seconds": wait,
            "ring_seconds": _int(event.get("RingTime")),
            "agent_channel": event.get("DestChannel", "")})
        self.on_agent_connect(call_id, agent, str(event.get("DestChannel", "")),
                              str(event.get("DestUniqueid", "")))
        self.recorder.write(self.store.update_call, call_id, agent=agent,
                                agent_connected_at=ami_time(event), wait_seconds=wait,
                                outcome="answered")
        await self._callers_changed(queue, call_id, "connected", event, wait=wait, agent=agent)

    async def _completed_call(self, event: Any) -> tuple[str, bool]:
        """(call id, is a callback) of an AgentComplete: from its caller fields or, when
        Asterisk left them out (the caller's channel was gone), from the member's call."""
        member = (str(event.get("Queue", "")), str(event.get("MemberName", "")))
        if event.get("Uniqueid"):
            found = self.resolve_call(event)
            if self._talking.get(member) == found:
                del self._talking[member]
            return found
        talking = self._talking.pop(member, None)
        if talking is not None:
            return talking
        # connected before this process started: the member's last unfinished call
        await self.recorder.flush()
        call_id = await asyncio.to_thread(self.store.talking_call, *member)
        if call_id is None:
            logger.warning("AgentComplete of %s in %s matches no call; talk time not "
                           "recorded", member[1], member[0])
        return call_id or "", False

    async def _agent_complete(self, event: Any) -> None:
        call_id, callback = await self._completed_call(event)
        talk = _int(event.get("TalkTime"))
        if callback:
            await self._record(call_id, "callback_agent_complete", event,
                               {"agent": event.get("MemberName", ""), "talk_seconds": talk})
            return
        await self._record(call_id, "agent_complete", event, {
            "agent": event.get("MemberName", ""), "talk_seconds": talk,
            "reason": event.get("Reason", "")})
        self.recorder.write(self.store.update_call, call_id, talk_seconds=talk)

    # ----------------------------------------------------------------- rebuild

    async def rebuild(self) -> None:
        """Replace the Redis mirror with Asterisk's own view (``QueueStatus``)."""
        try:
            replies = await self.ami.action({"Action": "QueueStatus"}, as_list=True)
        except ConnectionError as exc:
            logger.warning("QueueStatus not possible: %s", exc)
            return
        members: dict[str, dict[str, str]] = {q: {} for q in self.queue_service}
        callers: dict[str, dict[str, str]] = {q: {} for q in self.queue_service}
        now = time.time()
        for msg in replies or []:
            kind = msg.get("Event")
            queue = msg.get("Queue", "")
            if kind == "QueueMember":
                endpoint = msg.get("Name") or str(msg.get("Location", "")).split("/")[-1]
                members.setdefault(queue, {})[endpoint] = json.dumps(
                    member_record(msg, endpoint, now))
            elif kind == "QueueEntry":
                callers.setdefault(queue, {})[str(msg.get("Uniqueid", ""))] = json.dumps({
                    "position": _int(msg.get("Position")),
                    "joined_at": now - _int(msg.get("Wait"))})
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for queue in set(members) | set(callers):
                    pipe.delete(self.keys.queue_members(queue), self.keys.queue_callers(queue))
                    if members.get(queue):
                        pipe.hset(self.keys.queue_members(queue),
                                  mapping=members[queue])  # type: ignore[arg-type]
                    if callers.get(queue):
                        pipe.hset(self.keys.queue_callers(queue),
                                  mapping=callers[queue])  # type: ignore[arg-type]
                await pipe.execute()
        except RedisError as exc:
            logger.warning("queue mirror not rebuilt (Redis: %s)", exc)
            return
        self.rebuilds += 1
        logger.info("queue state rebuilt from QueueStatus: %s",
                    ", ".join(f"{q}: {len(members.get(q, {}))} member(s), "
                              f"{len(callers.get(q, {}))} waiting" for q in self.queue_service))
