"""AMI connection (panoramisk) with clear log-in errors, state and reconnect.

app_queue cannot be driven from ARI: operator log-in/out and pauses go over AMI
(QueueAdd/QueueRemove/QueuePause), and queue events come back on it.
Pitfalls handled here (see docs): ``Originate`` always with ``Async: true``;
``QueueAdd`` and friends need ``as_list=False`` or the reply never resolves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager

logger = logging.getLogger(__name__)

EventHandler = Callable[[Manager, Any], Any]

# Every AMI event the controller handles. manager.conf is rendered with one include
# filter per name (asterisk/templates/manager.conf.j2), so Asterisk sends nothing else;
# registering a handler for another event fails loudly instead of never firing.
QUEUE_EVENTS = (
    "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberStatus", "QueueMemberPause",
    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
    "AgentRingNoAnswer", "AgentConnect", "AgentComplete",
)
PRESENCE_EVENTS = ("DeviceStateChange",)
SUBSCRIBED_EVENTS = QUEUE_EVENTS + PRESENCE_EVENTS


class AmiConnection:
    def __init__(self, host: str, port: int, user: str, secret: str,
                 reconnect_delay: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._secret = secret
        self.reconnect_delay = reconnect_delay
        self.manager: Manager | None = None
        self.logged_in = asyncio.Event()
        self.last_error = ""
        self._handlers: list[tuple[str, EventHandler]] = []
        self.on_login: list[Callable[[], Any]] = []
        self.on_disconnect: list[Callable[[], Any]] = []

    def register_event(self, pattern: str, handler: EventHandler) -> None:
        if pattern not in SUBSCRIBED_EVENTS:
            raise ValueError(f"AMI event {pattern!r} is filtered out by manager.conf: add it "
                             "to SUBSCRIBED_EVENTS in ari_app/ami.py")
        self._handlers.append((pattern, handler))
        if self.manager is not None:
            self.manager.register_event(pattern, handler)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.manager = Manager(
            host=self.host, port=self.port, username=self.user, secret=self._secret,
            ping_delay=5, ping_interval=5, reconnect_timeout=int(max(1, self.reconnect_delay)),
            # panoramisk schedules its own callbacks on this loop (it predates get_running_loop)
            loop=loop, on_login=self._logged_in, on_disconnect=self._disconnected,
            on_connect=self._connected, log=logging.getLogger("panoramisk"))
        for pattern, handler in self._handlers:
            self.manager.register_event(pattern, handler)
        self._connect()

    def _connect(self) -> None:
        assert self.manager is not None  # nosec B101 # type narrowing, not a check
        task = self.manager.connect()
        task.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.last_error = f"cannot reach AMI at {self.host}:{self.port}: {exc}"
            logger.warning("%s; panoramisk retries", self.last_error)

    def _connected(self, manager: Manager) -> None:
        fut = manager.authenticated_future
        if fut is not None:
            fut.add_done_callback(self._check_login)

    def _check_login(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        resp = fut.result()
        if not getattr(resp, "success", False):
            self.last_error = (
                f"AMI refused the log-in of user {self.user!r}: {resp.get('Message', '')}. "
                "Check asterisk.ami_user / asterisk.ami_secret (MADOGUCHI_ASTERISK__AMI_SECRET) "
                "and that manager.conf was rendered from the same settings.")
            logger.error("%s; retrying in %.0f s", self.last_error, self.reconnect_delay)
            assert self.manager is not None  # nosec B101 # type narrowing, not a check
            # closing the transport makes panoramisk reconnect after reconnect_timeout
            self.manager.close()

    def _logged_in(self, manager: Manager) -> None:
        logger.info("AMI logged in (%s:%s as %s)", self.host, self.port, self.user)
        self.last_error = ""
        self.logged_in.set()
        for cb in self.on_login:
            try:
                result = cb()
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:
                logger.exception("AMI on_login callback failed")

    def _disconnected(self, manager: Manager, exc: Exception | None) -> None:
        if self.logged_in.is_set():
            logger.warning("AMI connection lost (%s); reconnecting", exc)
        self.logged_in.clear()
        self.last_error = f"AMI connection lost: {exc}"
        for cb in self.on_disconnect:
            try:
                cb()
            except Exception:
                logger.exception("AMI on_disconnect callback failed")

    async def action(self, action: dict[str, Any], as_list: bool | None = False) -> Any:
        if self.manager is None or not self.logged_in.is_set():
            raise ConnectionError(self.last_error or "AMI not connected")
        return await self.manager.send_action(action, as_list=as_list)

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()
            self.manager = None
        self.logged_in.clear()
