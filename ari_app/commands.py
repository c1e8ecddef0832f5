"""The command API: commands from the console arrive on a Redis stream.

All ari_app instances read ``Keys.commands`` through one consumer group, so each
command is carried out once. Every command gets a ``command.result`` event. A command
older than ``MAX_AGE`` seconds (sent while no controller was running) is answered
``expired`` instead of being carried out late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from ari_app.exceptions import CommandError
from ari_app.notifier import Notifier
from common import commands as cmds
from common.events import Event, EventError, decode
from common.keys import Keys

logger = logging.getLogger(__name__)

GROUP = "ari_app"
MAX_AGE = 30.0

Handler = Callable[[Any], Awaitable[None]]


class CommandConsumer:
    def __init__(self, redis: aioredis.Redis, keys: Keys, notifier: Notifier,
                 consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.notifier = notifier
        self.consumer = consumer
        self.handlers: dict[type[Event], Handler] = {}
        self.handled = 0

    def register(self, kind: type[Event], handler: Handler) -> None:
        self.handlers[kind] = handler

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.commands, GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._ensure_group()
                # first what this consumer took but never acknowledged (it crashed), then new
                for start in ("0", ">"):
                    while True:
                        batch: Any = await self.redis.xreadgroup(
                            GROUP, self.consumer, {self.keys.commands: start}, count=20,
                            block=2000 if start == ">" else None)
                        entries = batch[0][1] if batch else []
                        if not entries:
                            if start == "0":
                                break
                            continue
                        for entry_id, fields in entries:
                            await self._one(entry_id, fields)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("command stream unavailable (Redis: %s); retrying in %.1f s",
                               exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _one(self, entry_id: Any, fields: dict[Any, Any]) -> None:
        body = fields.get(b"c") or fields.get("c") or b""
        try:
            command = decode(body)
        except EventError as exc:
            logger.error("rejected a malformed command: %s", exc)
            await self.redis.xack(self.keys.commands, GROUP, entry_id)
            return
        result = await self.execute(command)
        await self.redis.xack(self.keys.commands, GROUP, entry_id)
        await self.notifier.publish(result)

    async def execute(self, command: Event) -> cmds.CommandResult:
        handler = self.handlers.get(type(command))
        age = (datetime.now(UTC) - command.at).total_seconds()
        self.handled += 1
        if handler is None:
            return cmds.CommandResult(command_id=command.id, command=command.type, ok=False,
                                      code="not_a_command",
                                      error=f"{command.type} is not a command")
        if age > MAX_AGE:
            return cmds.CommandResult(command_id=command.id, command=command.type, ok=False,
                                      code="expired", error=f"sent {age:.0f} s ago while no "
                                      "controller was running; not carried out")
        try:
            await handler(command)
        except CommandError as exc:
            logger.info("command %s refused: %s", command.type, exc)
            return cmds.CommandResult(command_id=command.id, command=command.type, ok=False,
                                      code=exc.code, error=str(exc))
        except Exception as exc:
            logger.exception("command %s failed", command.type)
            return cmds.CommandResult(command_id=command.id, command=command.type, ok=False,
                                      code="internal", error=f"internal error: {exc}")
        return cmds.CommandResult(command_id=command.id, command=command.type, ok=True)
