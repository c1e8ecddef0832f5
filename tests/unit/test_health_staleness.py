"""The health readers judge a heartbeat by when it was written, not by its hash being
there (common.health.read_heartbeats), on a real Redis."""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio as aioredis

from common.health import Heartbeat, read_heartbeats, write_heartbeat
from common.keys import Keys

KEYS = Keys("test")


def test_a_beat_older_than_three_intervals_is_silent_even_if_its_hash_is_there(
        redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        write_heartbeat(client, KEYS, "ari_app", "alive", {"ari": "up"}, ttl=6)
        # a hash that outlived its writer (no expiry): last written 20 s ago, every 2 s
        client.hset(KEYS.health("ari_app", "dead"), mapping={
            "ari": "up", "updated_at": f"{time.time() - 20:.3f}", "interval": "2"})
        beats = read_heartbeats(client, KEYS, "ari_app", interval=2.0)
        assert [b["ari"] for b in beats.live] == ["up"] and set(beats.silent) == {"dead"}
        assert beats.reporting("Asia/Tokyo").startswith(
            "1 instance(s) reporting; 1 other silent, the last one since ")
        assert beats.reporting("Asia/Tokyo").endswith("(20 s ago)")

        # the live one's hash expires (killed): it is silent since its last beat
        client.delete(KEYS.health("ari_app", "alive"))
        later = read_heartbeats(client, KEYS, "ari_app", interval=2.0, now=time.time() + 7)
        assert not later.live and set(later.silent) == {"alive", "dead"}
        assert later.reporting("Asia/Tokyo").startswith(
            "0 instance(s) reporting: the last one went silent at ")
        assert later.reporting("Asia/Tokyo").endswith("(7 s ago)")
    finally:
        client.close()


def test_a_clean_stop_is_not_silence(redis_url: str) -> None:
    async def run_and_stop() -> None:
        client = aioredis.Redis.from_url(redis_url)

        async def fields() -> dict[str, str]:
            return {"peers": "0"}

        beat = Heartbeat(client, KEYS.health("kiosk_bridge", "one"), 0.2, fields)
        stop = asyncio.Event()
        task = asyncio.create_task(beat.run(stop))
        while not await client.exists(beat.key):
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
        await client.aclose()

    asyncio.run(run_and_stop())
    client = redis.Redis.from_url(redis_url)
    try:
        beats = read_heartbeats(client, KEYS, "kiosk_bridge", interval=0.2,
                                now=time.time() + 60)
        assert not beats.live and not beats.silent
        assert not client.exists(KEYS.health_seen("kiosk_bridge"))
    finally:
        client.close()
