"""Presence mirror on real Redis: a phone's device states arrive as concurrent handler
tasks (as panoramisk dispatches AMI events) and must end in the order Asterisk sent them
(the staff directory once kept "ringing" for a phone that had answered)."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from ari_app.ami import AmiConnection
from ari_app.notifier import Notifier
from ari_app.presence import PresenceMonitor
from common.bus import read_events
from common.console_events import presence_key
from common.events import decode
from common.keys import Keys
from common.settings import Settings


def test_device_states_close_together_are_mirrored_in_order(settings: Settings) -> None:
    keys = Keys(settings.redis.prefix)

    async def run() -> None:
        client = aioredis.Redis.from_url(settings.redis.url)
        ami = AmiConnection("127.0.0.1", 1, "nobody", "x")
        monitor = PresenceMonitor(ami, client, keys, Notifier(client, keys, 1000), settings)
        handler = next(h for name, h in ami._handlers if name == "DeviceStateChange")
        for _ in range(20):  # each round: the staff phone rings, is answered, hangs up
            tasks = [asyncio.ensure_future(handler(None, {"Device": "PJSIP/staff2001",
                                                          "State": state}))
                     for state in ("RINGING", "INUSE", "NOT_INUSE", "RINGING", "INUSE")]
            await asyncio.gather(*tasks)
            assert await client.hget(presence_key(keys), "2001") == b"in_use"
        assert monitor.devices["PJSIP/staff2001"][0] == "2001"
        await client.aclose()

    asyncio.run(run())
    sync = redis.Redis.from_url(settings.redis.url)
    try:
        states = [e.state for _i, body in read_events(sync, keys)  # type: ignore[attr-defined]
                  if (e := decode(body)).type == "device.state"]
    finally:
        sync.close()
    assert states == ["ringing", "in_use", "not_in_use", "ringing", "in_use"] * 20
