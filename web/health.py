"""Health of every part of the system: ``/health`` (page) and ``/health.json``.

No log-in is needed: the pages show component states only, never personal data, and
details are scrubbed of credentials before they are shown.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from flask_babel import lazy_gettext as _l

from common.health import COMPONENTS, ComponentHealth, collect
from web.db import resources

bp = Blueprint("health", __name__)

#: Components that must all be ok for the overall status to be "ok" (HTTP 200).
REQUIRED = COMPONENTS
MAX_DETAIL = 200

LABELS = {
    "asterisk": _l("Telephone system (Asterisk)"),
    "ari": _l("Call control interface (ARI)"),
    "ami": _l("Queue management interface (AMI)"),
    "ari_app": _l("Call controller"),
    "redis": _l("Live data store (Redis)"),
    "database": _l("Database"),
    "worker": _l("Background jobs"),
    "cron": _l("Scheduled jobs"),
    "kiosk_bridge": _l("Remote window bridge"),
    "transcriber": _l("Speech recognition (transcriber)"),
}


def component_label(name: str) -> str:
    return str(LABELS.get(name, name))

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SECRET_PAIRS = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|key)\s*[=:]\s*\S+")


def scrub(detail: str) -> str:
    """A detail fit to show anyone: no credentials in URLs, no ``password=...``, short."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", detail)
    text = _SECRET_PAIRS.sub(lambda m: f"{m.group(1)}=***", text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def snapshot() -> tuple[bool, list[ComponentHealth]]:
    res = resources()
    components = [ComponentHealth(c.component, c.ok, scrub(c.detail))
                  for c in collect(res.redis, res.keys, res.engine)]
    by_name = {c.component: c for c in components}
    healthy = all(by_name[name].ok if name in by_name else False for name in REQUIRED)
    return healthy, components


@bp.get("/health.json")
def health_json() -> tuple[Response, int]:
    healthy, components = snapshot()
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "components": {c.component: {"ok": c.ok, "detail": c.detail} for c in components},
    }
    return jsonify(body), 200 if healthy else 503


@bp.get("/health")
def health_page() -> tuple[str, int]:
    healthy, components = snapshot()
    page = render_template("health.html", healthy=healthy, components=components,
                           required=REQUIRED, component_label=component_label)
    return page, 200 if healthy else 503
