"""Loopback-only HTTP API for the kiosk page (standard library ``http.server``).

    GET  /status[?wait=S]  reader/card presence; with ``wait`` block up to S seconds
                           for a card to be inserted
    GET  /card             is it a My Number card, and how many PIN tries are left
                           (``warning_ja/en`` when only one is left)
    POST /read {"pin": "1234"}
                           VERIFY and read the four basic items
    OPTIONS *              CORS preflight for the configured kiosk page origin only

Errors answer ``{"error": id, "message_ja", "message_en", "operator_notice_ja",
"operator_notice_en", ["tries_left"], ["detail"]}`` with a 4xx/5xx status.

Guards: the server binds loopback only (refused otherwise); requests whose ``Host``
is not a loopback name (DNS rebinding) or whose ``Origin`` is not the configured kiosk
origin are refused; POST needs ``Content-Type: application/json`` (so a cross-origin
page always triggers a preflight). Every response is ``Cache-Control: no-store``.

The request body of ``/read`` is received straight from the socket into a
``bytearray`` (unbuffered reads), the PIN is taken out of it without creating a
``str``, and the body is zeroed before the card is even contacted.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from .card import BasicFour, CardCheck, ReaderStatus
from .exceptions import BadPinFormat, CardError
from .pin import Pin, extract_pin, wipe
from .settings import AgentSettings, require_loopback

logger = logging.getLogger(__name__)

MAX_BODY = 256
"""The /read body is ``{"pin":"1234"}``; anything much bigger is refused."""


class CardService(Protocol):
    def status(self, wait_for_card: float = 0.0) -> ReaderStatus: ...
    def check_card(self) -> CardCheck: ...
    def read_basic_four(self, pin: Pin) -> BasicFour: ...


class CardAgentServer(ThreadingHTTPServer):
    daemon_threads = True
    # Single kiosk page: keep the accept queue short.
    request_queue_size = 8

    def __init__(self, settings: AgentSettings, reader: CardService) -> None:
        require_loopback(settings.bind)
        self.settings = settings
        self.reader = reader
        super().__init__((settings.bind, settings.port), CardAgentHandler)
        port = self.server_address[1]
        self.allowed_hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="card-agent-http",
                                  daemon=True)
        thread.start()
        return thread


class CardAgentHandler(BaseHTTPRequestHandler):
    server: CardAgentServer
    # Unbuffered: the /read body goes from the socket straight into our bytearray,
    # no BufferedReader keeps a copy of the PIN.
    rbufsize = 0
    protocol_version = "HTTP/1.1"
    server_version = "MadoguchiCardAgent/1"
    sys_version = ""

    # -- plumbing -----------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        # Request line and status only; bodies are never logged.
        logger.info("%s " + format, self.address_string(), *args)

    def _cors_headers(self) -> None:
        origin = self.headers.get("Origin")
        if origin and origin == self.server.settings.allowed_origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def _send_json(self, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self._cors_headers()
        self.end_headers()
        self.wfile.write(payload)

    def _send_error(self, error: CardError) -> None:
        logger.warning("card error %s (%s)", error.error_id, error.detail or "-")
        self._send_json(error.http_status, error.to_dict())

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        self.close_connection = True
        self._send_json(status, {"error": "refused", "detail": reason})

    def _guard(self) -> bool:
        """Host and Origin checks shared by all methods; False when refused."""
        host = self.headers.get("Host", "")
        if host not in self.server.allowed_hosts:
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST, "Host must be a loopback name")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin != self.server.settings.allowed_origin:
            self._refuse(HTTPStatus.FORBIDDEN, "origin not allowed")
            return False
        return True

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY:
            junk = bytearray(length)
            self._read_into(junk)
            wipe(junk)
        elif length:
            self.close_connection = True

    def _read_into(self, buf: bytearray) -> None:
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.rfile.readinto(view[got:])
            if not n:
                raise ConnectionError("body shorter than Content-Length")
            got += n
        view.release()

    # -- methods ------------------------------------------------------------------------

    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib naming
        if not self._guard():
            return
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors_headers()
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        # Chrome's Private Network Access: a page on the city's server calling loopback.
        if self.headers.get("Access-Control-Request-Private-Network") == "true":
            self.send_header("Access-Control-Allow-Private-Network", "true")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if not self._guard():
            return
        url = urlsplit(self.path)
        try:
            if url.path == "/status":
                query = parse_qs(url.query)
                try:
                    wait = float(query.get("wait", ["0"])[0])
                except ValueError:
                    wait = 0.0
                wait = max(0.0, min(wait, self.server.settings.max_card_wait))
                self._send_json(HTTPStatus.OK,
                                self.server.reader.status(wait_for_card=wait).to_dict())
            elif url.path == "/card":
                self._send_json(HTTPStatus.OK, self.server.reader.check_card().to_dict())
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "not-found"})
        except CardError as exc:
            self._send_error(exc)

    def do_POST(self) -> None:  # noqa: N802
        if not self._guard():
            self._discard_body()
            return
        if urlsplit(self.path).path != "/read":
            self._discard_body()
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not-found"})
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._discard_body()
            self._refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be JSON")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self.close_connection = True
            self._send_error(BadPinFormat("body missing or too large"))
            return
        body = bytearray(length)
        try:
            self._read_into(body)
            pin = extract_pin(body)
        except BadPinFormat as exc:
            self._send_error(exc)
            return
        finally:
            wipe(body)
        try:
            items = self.server.reader.read_basic_four(pin)
        except CardError as exc:
            self._send_error(exc)
            return
        finally:
            pin.wipe()
        self._send_json(HTTPStatus.OK, items.to_dict())
