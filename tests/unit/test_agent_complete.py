"""An operator's talk time when Asterisk's AgentComplete has no caller fields.

app_queue sends AgentComplete with the caller's and the operator's channel fields only
while their snapshots still exist; when the caller's channel is already gone the event
carries just the queue, the member and the times (seen on Asterisk 22 in the 7-line
queue test: one call in a few dozen lost its talk time). The events below are the ones
Asterisk sent then, trimmed to the fields the controller reads; real Redis and a real
database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import select

from ari_app.ami import AmiConnection
from ari_app.notifier import Notifier
from ari_app.queues import QueueManager
from ari_app.timeline import Recorder, TimelineStore
from common.db import init_schema, make_engine, session_factory
from common.keys import Keys
from common.models import Call
from common.settings import Settings

CALLER = "1796206513.14"
JOIN = {"Event": "QueueCallerJoin", "Timestamp": "1796206519.101000", "Queue": "citizens",
        "Channel": "PJSIP/carrier-0000000e", "Uniqueid": CALLER, "CallerIDNum": "0902000008",
        "CallerIDName": "0902000008", "Position": "1", "Count": "1"}
CONNECT = {"Event": "AgentConnect", "Timestamp": "1796206522.824624", "Queue": "citizens",
           "Channel": "PJSIP/carrier-0000000e", "Uniqueid": CALLER,
           "CallerIDNum": "0902000008", "DestChannel": "PJSIP/op01-0000000f",
           "DestUniqueid": "1796206522.15", "Interface": "PJSIP/op01", "MemberName": "op01",
           "HoldTime": "4", "RingTime": "0"}
# what Asterisk sent when the caller's channel was gone: no Channel, no Uniqueid
COMPLETE_BARE = {"Event": "AgentComplete", "Timestamp": "1796206527.421105",
                 "Queue": "citizens", "Interface": "PJSIP/op01", "MemberName": "op01",
                 "HoldTime": "8", "TalkTime": "5", "Reason": "caller"}

Handler = Callable[[Any, Any], Awaitable[None]]


class Harness:
    """A QueueManager as the controller builds it, fed AMI events by hand."""

    def __init__(self, settings: Settings) -> None:
        self.keys = Keys(settings.redis.prefix)
        self.redis = aioredis.Redis.from_url(settings.redis.url)
        self.engine = make_engine(settings.database_url)
        init_schema(self.engine)
        self.factory = session_factory(self.engine)
        self.store = TimelineStore(self.factory)
        notifier = Notifier(self.redis, self.keys, 1000)
        self.recorder = Recorder(notifier.publish)
        self.ami = AmiConnection("127.0.0.1", 1, "nobody", "x")
        self.queues = QueueManager(self.ami, self.redis, self.keys, self.store, notifier,
                                   settings, self.recorder)
        self.handlers: dict[str, Handler] = dict(self.ami._handlers)
        self.task = asyncio.ensure_future(self.recorder.run())

    async def feed(self, *events: dict[str, str]) -> None:
        for event in events:
            await self.handlers[event["Event"]](None, event)
        await self.recorder.flush()

    def call(self) -> Call:
        with self.factory() as session:
            call = session.scalars(select(Call).where(Call.id == CALLER)).one()
            _ = call.events
            return call

    async def close(self) -> None:
        self.task.cancel()
        await self.redis.aclose()
        self.engine.dispose()


@asynccontextmanager
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    h = Harness(settings)
    try:
        yield h
    finally:
        await h.close()


def test_talk_time_without_the_callers_fields_goes_to_the_operators_call(
        settings: Settings) -> None:
    async def run() -> None:
        async with harness(settings) as h:
            await h.feed(JOIN, CONNECT)
            assert h.call().talk_seconds is None
            await h.feed(COMPLETE_BARE)
            call = h.call()
            assert call.agent == "op01" and call.talk_seconds == 5
            complete = [e for e in call.events if e.kind == "agent_complete"]
            assert len(complete) == 1 and complete[0].data["reason"] == "caller"
            # the operator's next call is found again, not the finished one
            nxt = {**CONNECT, "Uniqueid": "1796206530.20", "Timestamp": "1796206531.000000"}
            await h.feed({**JOIN, "Uniqueid": "1796206530.20"}, nxt,
                         {**COMPLETE_BARE, "Timestamp": "1796206540.000000", "TalkTime": "9"})
            with h.factory() as session:
                second = session.get(Call, "1796206530.20")
                assert second is not None and second.talk_seconds == 9
            assert h.call().talk_seconds == 5

    asyncio.run(run())


def test_after_a_restart_the_talk_time_is_found_from_the_database(
        settings: Settings) -> None:
    async def run() -> None:
        async with harness(settings) as first:
            await first.feed(JOIN, CONNECT)
        # a new controller, which never saw the AgentConnect
        async with harness(settings) as second:
            await second.feed(COMPLETE_BARE)
            assert second.call().talk_seconds == 5
            # an AgentComplete that matches no open call changes nothing
            await second.feed({**COMPLETE_BARE, "MemberName": "op02",
                               "Interface": "PJSIP/op02", "TalkTime": "7"})
            await second.feed({**COMPLETE_BARE, "TalkTime": "7",
                               "Timestamp": "1796206599.000000"})
            call = second.call()
            assert call.talk_seconds == 5
            assert len([e for e in call.events if e.kind == "agent_complete"]) == 1

    asyncio.run(run())


def test_an_agent_complete_with_its_caller_still_uses_the_caller(settings: Settings) -> None:
    async def run() -> None:
        async with harness(settings) as h:
            await h.feed(JOIN, CONNECT, {**COMPLETE_BARE, "Uniqueid": CALLER,
                                         "Channel": "PJSIP/carrier-0000000e"})
            assert h.call().talk_seconds == 5
            assert h.queues._talking == {}

    asyncio.run(run())
