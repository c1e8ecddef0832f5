"""Reading form input safely: every value is text of bounded length, never a 500."""

from __future__ import annotations

import unicodedata

from flask import request


def field(name: str, max_length: int = 256) -> str:
    """A form field as stripped, NFC-normalized text ('' when missing); over-long values
    are kept whole so that the view can report them instead of silently cutting them."""
    raw = request.form.get(name, "")
    if not isinstance(raw, str):
        return ""
    value = unicodedata.normalize("NFC", raw).strip()
    return value if len(value) <= max_length * 4 else value[: max_length * 4]


def secret_field(name: str) -> str:
    """A password field: not stripped or normalized (spaces may be part of it)."""
    raw = request.form.get(name, "")
    return raw[:1024] if isinstance(raw, str) else ""


def choices(name: str, allowed: tuple[str, ...] | list[str]) -> set[str]:
    """The checked values of a multi-valued field that are among ``allowed``."""
    return {v for v in request.form.getlist(name) if v in allowed}


def has_control_chars(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in value)


def safe_next(target: str | None) -> str | None:
    """A local path to return to after log-in, or None (no open redirects)."""
    if not target or not isinstance(target, str) or len(target) > 512:
        return None
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if has_control_chars(target):
        return None
    return target
