"""Publishes the controller's events outward (Redis stream + pub/sub)."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.bus import apublish
from common.events import Event
from common.keys import Keys

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, client: aioredis.Redis, keys: Keys, maxlen: int) -> None:
        self._client = client
        self._keys = keys
        self._maxlen = maxlen

    async def publish(self, event: Event) -> None:
        """Publish; a Redis outage is logged, never fatal for the call (SQL has the record)."""
        try:
            await apublish(self._client, self._keys, event, self._maxlen)
        except RedisError as exc:
            logger.error("could not publish %s for the console (Redis: %s); the timeline in "
                         "the database still has it", event.type, exc)
