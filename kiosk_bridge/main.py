"""kiosk_bridge entry point: ``python -m kiosk_bridge.main``.

Currently a skeleton: it loads the settings, reports a heartbeat to Redis so the health
page shows it, and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.keys import Keys
from common.logging_ import set_level, setup_logging
from common.settings import Settings, SettingsError, load_settings

logger = logging.getLogger(__name__)


async def heartbeat(settings: Settings, stop: asyncio.Event) -> None:
    keys = Keys(settings.redis.prefix)
    instance = f"{socket.gethostname()}-{os.getpid()}"
    key = keys.health("kiosk_bridge", instance)
    client = aioredis.Redis.from_url(settings.redis.url)
    interval = settings.ari.heartbeat_interval
    try:
        while not stop.is_set():
            fields: dict[Any, Any] = {"sessions": "0", "pid": str(os.getpid()),
                                      "updated_at": f"{time.time():.3f}"}
            try:
                async with client.pipeline() as pipe:
                    pipe.hset(key, mapping=fields)
                    pipe.pexpire(key, int(interval * 3000))
                    await pipe.execute()
            except RedisError as exc:
                logger.warning("heartbeat not written (Redis: %s)", exc)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
    finally:
        try:
            await client.delete(key)
        except RedisError:
            pass
        await client.aclose()


async def _serve() -> int:
    settings = load_settings()
    set_level(settings.site.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("kiosk_bridge started (skeleton: heartbeat only)")
    await heartbeat(settings, stop)
    logger.info("kiosk_bridge stopped")
    return 0


def main() -> int:
    setup_logging("kiosk_bridge")
    try:
        return asyncio.run(_serve())
    except SettingsError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
