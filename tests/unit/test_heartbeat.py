"""The processes' heartbeat (common.health.Heartbeat) on a real Redis: written at start,
rewritten at once after a change (not one interval later), deleted when it stops."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from common.health import Heartbeat

INTERVAL = 30.0  # far longer than any wait below: a write seen early came from changed()


def test_a_change_is_written_at_once_and_the_hash_goes_with_the_process(
        redis_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        state = {"ari": "down"}

        async def fields() -> dict[str, str]:
            return dict(state)

        beat = Heartbeat(client, "test:health:ari_app:one", INTERVAL, fields)
        stop = asyncio.Event()
        task = asyncio.create_task(beat.run(stop))

        async def seen(value: str) -> None:
            while (await client.hget(beat.key, "ari")) != value:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(seen("down"), 5)
        ttl = await client.pttl(beat.key)
        assert INTERVAL * 2000 < ttl <= INTERVAL * 3000, ttl  # three missed intervals
        state["ari"] = "up"
        beat.changed()
        await asyncio.wait_for(seen("up"), 2)
        assert await client.hget(beat.key, "updated_at")
        stop.set()
        await asyncio.wait_for(task, 5)
        assert not await client.exists(beat.key)
        await client.aclose()

    asyncio.run(scenario())


def test_cancelled_heartbeat_deletes_its_hash(redis_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)

        async def fields() -> dict[str, str]:
            return {"state": "up"}

        beat = Heartbeat(client, "test:health:transcriber:one", INTERVAL, fields)
        task = asyncio.create_task(beat.run())
        while not await client.exists(beat.key):
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not await client.exists(beat.key)
        await client.aclose()

    asyncio.run(scenario())
