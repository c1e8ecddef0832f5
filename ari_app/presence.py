"""Presence of phones from Asterisk device state, for the console's staff directory.

AMI ``DeviceStateChange`` events for the operator and staff phones are mirrored into
the Redis hash ``presence_key`` (extension -> state) and published as ``device.state``;
after every AMI log-in the whole list is refreshed with ``DeviceStateList``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ari_app.ami import AmiConnection
from ari_app.notifier import Notifier
from common.console_events import DeviceState, presence_key
from common.keys import Keys
from common.settings import Settings, staff_endpoint

logger = logging.getLogger(__name__)

STATES = {"NOT_INUSE": "not_in_use", "INUSE": "in_use", "RINGING": "ringing",
          "RINGINUSE": "ringing", "BUSY": "busy", "UNAVAILABLE": "unavailable",
          "ONHOLD": "on_hold", "INVALID": "unavailable", "UNKNOWN": "unknown"}


class PresenceMonitor:
    def __init__(self, ami: AmiConnection, redis: aioredis.Redis, keys: Keys,
                 notifier: Notifier, settings: Settings) -> None:
        self.ami = ami
        self.redis = redis
        self.keys = keys
        self.notifier = notifier
        tenant = settings.tenants[0].id if settings.tenants else ""
        # PJSIP device -> (extension, tenant)
        self.devices: dict[str, tuple[str, str]] = {
            f"PJSIP/{endpoint}": (ext, tenant) for endpoint, ext in settings.operators.endpoints()
        }
        for dep in settings.departments:
            for ext in dep.extensions:
                self.devices[f"PJSIP/{staff_endpoint(ext)}"] = (ext, dep.tenant)
        # AMI events reach their handlers as concurrent tasks: a phone's RINGING and INUSE
        # a few ms apart must be mirrored in the order Asterisk sent them
        self._lock = asyncio.Lock()
        ami.register_event("DeviceStateChange", self._changed)
        ami.on_login.append(self.refresh)

    async def _changed(self, _manager: Any, event: Any) -> None:
        await self._set(str(event.get("Device", "")), str(event.get("State", "")))

    async def _set(self, device: str, raw_state: str) -> None:
        known = self.devices.get(device)
        if known is None:
            return
        extension, tenant = known
        state = STATES.get(raw_state.upper(), "unknown")
        async with self._lock:  # FIFO: the tasks take it in the order they were started
            try:
                previous = await self.redis.hget(presence_key(self.keys), extension)
                await self.redis.hset(presence_key(self.keys), extension, state)
            except RedisError as exc:
                logger.warning("presence not mirrored (Redis: %s)", exc)
                return
            if (previous.decode() if isinstance(previous, bytes) else previous) != state:
                await self.notifier.publish(DeviceState(tenant=tenant, extension=extension,
                                                        state=state))

    async def refresh(self) -> None:
        try:
            replies = await self.ami.action({"Action": "DeviceStateList"}, as_list=True)
        except ConnectionError as exc:
            logger.warning("DeviceStateList not possible: %s", exc)
            return
        for msg in replies or []:
            if msg.get("Event") == "DeviceStateChange":
                await self._set(str(msg.get("Device", "")), str(msg.get("State", "")))
