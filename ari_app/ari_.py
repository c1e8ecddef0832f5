"""A thin asyncio client for Asterisk's REST Interface (ARI).

Why our own: the design card's ari-py (PyPI ``ari`` 0.1.3) is Python 2 code and cannot
be imported on Python 3.11; asyncari kills the whole client when a handler takes longer
than ~1.5 s and puts the API key in URLs; aioari awaits handlers one after another.
This client is ~200 lines on httpx + websockets: Basic auth in a header (never in a
URL), one websocket per application with reconnect and exponential backoff, a callback
after every (re)connect so the controller can resync with ``GET /channels``, and typed
errors. Events are handed to one non-blocking ``on_event`` callback in arrival order;
the controller fans them out to one task per call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from ari_app.exceptions import AriAuthError, AriError, AriNotFound, AriUnavailable

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
ConnectCallback = Callable[[], Awaitable[None]]


class AriClient:
    def __init__(self, base_url: str, user: str, password: str, app: str,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.app = app
        self.user = user
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth_header = {"Authorization": f"Basic {token}"}
        # Enough parallel requests for hundreds of calls (Asterisk's http.conf allows
        # more sessions than this); a request waits for a free connection rather than
        # failing while a burst of calls arrives.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._auth_header,
            timeout=httpx.Timeout(timeout, pool=60.0),
            limits=httpx.Limits(max_connections=96, max_keepalive_connections=96))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_event: EventCallback = lambda _event: None
        self.on_connect: list[ConnectCallback] = []
        self.on_disconnect: list[ConnectCallback] = []
        self.connected = asyncio.Event()
        self.last_error = ""
        self.connect_attempts = 0

    # ------------------------------------------------------------------ REST

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      json_body: Any = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = await self._http.request(method, path, params=clean, json=json_body)
        except httpx.TransportError as exc:
            raise AriUnavailable(f"cannot reach ARI at {self.base_url}: {exc!r}") from None
        if resp.status_code == 401:
            raise AriAuthError(self._auth_message())
        if resp.status_code == 404:
            raise AriNotFound(method, path, resp.text)
        if resp.status_code >= 400:
            raise AriError(method, path, resp.status_code, resp.text)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.request("POST", path, params=params, json_body=body)

    async def delete(self, path: str, **params: Any) -> Any:
        return await self.request("DELETE", path, params=params)

    async def close(self) -> None:
        await self._http.aclose()

    def _auth_message(self) -> str:
        return (f"ARI refused the credentials of user {self.user!r} (HTTP 401). Check "
                "asterisk.ari_user / asterisk.ari_password (MADOGUCHI_ASTERISK__ARI_PASSWORD) "
                "and that Asterisk's ari.conf was rendered from the same settings "
                "(python -m stack.render).")

    # ------------------------------------------------------------- websocket

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        rest = self.base_url.split("://", 1)[1]
        return f"{scheme}://{rest}/events?app={self.app}&subscribeAll=false"

    async def run(self) -> None:
        """Keep one websocket open for the application; never returns unless cancelled."""
        delay = self.backoff_initial
        while True:
            self.connect_attempts += 1
            try:
                async with connect(self.ws_url, additional_headers=self._auth_header,
                                   open_timeout=10, ping_interval=20,
                                   max_size=8 * 1024 * 1024) as ws:
                    logger.info("ARI websocket connected (%s, app %s)", self.base_url, self.app)
                    self.last_error = ""
                    delay = self.backoff_initial
                    self.connected.set()
                    for cb in self.on_connect:
                        await self._safe(cb)
                    async for message in ws:
                        try:
                            event = json.loads(message)
                        except ValueError:
                            logger.warning("ARI sent a message that is not JSON: %.200r",
                                           message)
                            continue
                        try:
                            self.on_event(event)
                        except Exception:
                            logger.exception("dispatching ARI event %s failed",
                                             event.get("type"))
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                code = exc.response.status_code
                self.last_error = (self._auth_message() if code == 401 else
                                   f"ARI websocket refused with HTTP {code} at {self.ws_url}")
                logger.error("%s; retrying in %.1f s", self.last_error, delay)
            except (OSError, ConnectionClosed, InvalidURI, TimeoutError) as exc:
                self.last_error = (f"cannot reach ARI at {self.base_url}: {exc}. Is Asterisk "
                                   "running, and does http.conf bind that address and port?")
                logger.warning("%s; retrying in %.1f s", self.last_error, delay)
            if self.connected.is_set():
                self.connected.clear()
                for cb in self.on_disconnect:
                    await self._safe(cb)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    @staticmethod
    async def _safe(cb: ConnectCallback) -> None:
        try:
            await cb()
        except Exception:
            logger.exception("ARI connection callback %r failed", cb)
