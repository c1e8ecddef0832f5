"""Publishing and reading events on Redis: one stream (replayable) plus pub/sub (live).

Both the asyncio processes (ari_app, kiosk_bridge) and the synchronous ones (web, rq
jobs) use the same functions, so the wire form is defined once.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from common.events import Event
from common.keys import Keys


def publish(client: redis.Redis, keys: Keys, event: Event, maxlen: int = 100000) -> str:
    """Append ``event`` to the event stream and announce it live; returns the stream id."""
    body = event.encode()
    pipe = client.pipeline(transaction=False)
    pipe.xadd(keys.events, {"e": body}, maxlen=maxlen, approximate=True)
    pipe.publish(keys.events_live, body)
    stream_id, _ = pipe.execute()
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


async def apublish(client: aioredis.Redis, keys: Keys, event: Event,
                   maxlen: int = 100000) -> str:
    body = event.encode()
    async with client.pipeline(transaction=False) as pipe:
        pipe.xadd(keys.events, {"e": body}, maxlen=maxlen, approximate=True)
        pipe.publish(keys.events_live, body)
        stream_id, _ = await pipe.execute()
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def read_events(client: redis.Redis, keys: Keys, after: str = "0-0",
                count: int = 1000) -> list[tuple[str, str]]:
    """(stream id, encoded event) after ``after``, oldest first."""
    rows: Any = client.xrange(keys.events, min=f"({after}" if after != "0-0" else "-",
                                    count=count)
    out = []
    for stream_id, fields in rows:
        sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        body = fields.get(b"e") or fields.get("e")
        out.append((sid, body.decode() if isinstance(body, bytes) else body))
    return out
