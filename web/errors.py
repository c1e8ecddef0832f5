"""Error pages: Japanese first, never a stack trace, JSON for JSON clients."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException, InternalServerError

logger = logging.getLogger(__name__)


def wants_json() -> bool:
    if request.path.endswith(".json") or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _message(code: int, description: str | None) -> str:
    if code == 400 and description == "csrf":
        return _("The form has expired. Please reload the page and try again.")
    messages = {
        400: _("The request could not be understood. Please check your input."),
        401: _("Please log in."),
        403: _("You do not have permission to view this page."),
        404: _("The page was not found."),
        405: _("This action is not allowed here."),
        413: _("The submitted data is too large."),
        429: _("Too many attempts. Please wait and try again."),
        503: _("The service is temporarily unavailable. Please try again shortly."),
    }
    return messages.get(code, _("An error occurred. Please try again."))


def render_error(code: int, description: str | None = None) -> tuple[Response | str, int]:
    message = _message(code, description)
    if wants_json():
        error = "csrf" if description == "csrf" else str(code)
        return jsonify({"error": error, "message": message}), code
    return render_template("errors/error.html", code=code, message=message), code


def handle_http(exc: HTTPException) -> tuple[Response | str, int] | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc
    return render_error(exc.code, exc.description)


def handle_redis(exc: redis.RedisError) -> tuple[Response | str, int]:
    logger.error("Redis unavailable: %s", exc)
    return render_error(503)


def handle_unexpected(exc: InternalServerError) -> tuple[Response | str, int]:
    original = exc.original_exception or exc
    logger.error("unhandled error on %s %s", request.method, request.path, exc_info=original)
    return render_error(500)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(redis.RedisError, handle_redis)
    app.register_error_handler(InternalServerError, handle_unexpected)
