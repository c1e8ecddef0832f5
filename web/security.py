"""Security headers and CSRF protection for every response and every unsafe request.

- A strict Content-Security-Policy: only same-origin scripts, styles, images and
  connections; no ``'unsafe-inline'``, no ``eval``; no framing. Templates therefore carry
  no inline ``<script>``, ``style=`` or event-handler attributes.
- CSRF: one random token per session. Every form posts it as ``csrf_token``; JavaScript
  sends it in the ``X-CSRF-Token`` header (the page carries it in
  ``<meta name="csrf-token">``). Every POST/PUT/PATCH/DELETE is checked before the view
  runs, unless the view is marked with ``csrf_exempt`` (none is, so far).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, request, session

logger = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_SESSION_KEY = "_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

F = TypeVar("F", bound=Callable[..., Any])


def csrf_exempt(view: F) -> F:
    """Mark a view that must accept unsafe requests without a CSRF token."""
    view._csrf_exempt = True  # type: ignore[attr-defined]
    return view


def csrf_token() -> str:
    """The session's CSRF token (created on first use)."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def _valid_token(given: str | None) -> bool:
    expected = session.get(CSRF_SESSION_KEY)
    if not isinstance(expected, str) or not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def check_csrf() -> None:
    if request.method in SAFE_METHODS or not current_app.config.get("CSRF_ENABLED", True):
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, "_csrf_exempt", False):
        return
    given = request.headers.get(CSRF_HEADER)
    if not given and request.mimetype in ("application/x-www-form-urlencoded",
                                          "multipart/form-data"):
        given = request.form.get(CSRF_FIELD)
    if not _valid_token(given):
        logger.info("CSRF check failed for %s %s", request.method, request.path)
        abort(400, description="csrf")


def set_security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Permissions-Policy",
                       "camera=(self), microphone=(self), geolocation=(), payment=(), usb=()")
    if not current_app.config.get("DEVELOPMENT", False):
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        # Pages may show personal data: nothing is kept in the browser's cache (R3, S1).
        headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    app.before_request(check_csrf)
    app.after_request(set_security_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
