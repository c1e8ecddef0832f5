"""The agent's settings: a small TOML file on the kiosk PC plus command-line flags.

The agent does not read environment variables (the project's one env-reading
settings module, ``common/settings.py``, belongs to the servers and is not installed
on kiosks). ``load_settings(data)`` is a pure function of a parsed mapping.

Example ``/etc/madoguchi/card-agent.toml``::

    port = 47110
    allowed_origin = "https://madoguchi.city.example.jp"
    reader = ""             # empty: the first reader with a card, else the first one
    max_card_wait = 30
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class SettingsError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"card agent setting '{key}': {message}")


@dataclass(frozen=True)
class AgentSettings:
    bind: str = "127.0.0.1"
    """Loopback address only; anything else is refused."""
    port: int = 47110
    allowed_origin: str = "http://127.0.0.1:8000"
    """Origin of the kiosk page (scheme://host[:port]); the only one CORS allows."""
    reader: str = ""
    """Reader name or name prefix; empty: the first reader holding a card."""
    max_card_wait: float = 30.0
    """Upper bound for ``GET /status?wait=`` (seconds)."""
    log_level: str = "INFO"


def require_loopback(bind: str) -> str:
    """Return ``bind`` if it is a literal loopback address, else raise."""
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise SettingsError("bind", f"{bind!r} is not an IP address; use 127.0.0.1") from None
    if not address.is_loopback:
        raise SettingsError(
            "bind", f"{bind} is not a loopback address: the card agent only serves the "
            "kiosk page on the same machine")
    return bind


def _check_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("",):
        raise SettingsError("allowed_origin", f"{origin!r} is not an origin like "
                            "https://host[:port] (no path, no trailing slash)")
    return origin


def load_settings(data: Mapping[str, Any]) -> AgentSettings:
    known = {f.name: f for f in fields(AgentSettings)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key not in known:
            raise SettingsError(key, "unknown setting")
        values[key] = value
    try:
        settings = AgentSettings(**values)
        port = int(settings.port)
        wait = float(settings.max_card_wait)
    except (TypeError, ValueError) as exc:
        raise SettingsError("port", str(exc)) from None
    if not 0 <= port <= 65535:
        raise SettingsError("port", "out of range")
    require_loopback(str(settings.bind))
    _check_origin(str(settings.allowed_origin))
    return AgentSettings(bind=str(settings.bind), port=port,
                         allowed_origin=str(settings.allowed_origin),
                         reader=str(settings.reader), max_card_wait=wait,
                         log_level=str(settings.log_level).upper())


def read_file(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)
