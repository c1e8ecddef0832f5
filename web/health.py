"""Health of every part of the system: ``/health`` (page) and ``/health.json``.

No log-in is needed: the pages show component states only, never personal data, and
details are scrubbed of credentials before they are shown. Each component is ``ok``,
``down`` or ``not_configured`` (its ``state``); only ``down`` makes the status "degraded"
(HTTP 503).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from flask_babel import lazy_gettext as _l

from common.health import COMPONENTS, DOWN, NOT_CONFIGURED, ComponentHealth, collect
from web.db import resources

bp = Blueprint("health", __name__)

#: Components none of which may be down for the overall status to be "ok" (HTTP 200);
#: one that is not configured (an optional part the settings leave off) is not down.
REQUIRED = COMPONENTS
MAX_DETAIL = 200

LABELS = {
    "asterisk": _l("Telephone system (Asterisk)"),
    "ari": _l("Call control interface (ARI)"),
    "ami": _l("Queue management interface (AMI)"),
    "rtp": _l("Call audio ports (RTP)"),
    "ari_app": _l("Call controller"),
    "redis": _l("Live data store (Redis)"),
    "database": _l("Database"),
    "worker": _l("Background jobs"),
    "cron": _l("Scheduled jobs"),
    "kiosk_bridge": _l("Remote window bridge"),
    "transcriber": _l("Speech recognition (transcriber)"),
    "sites": _l("Operator sites and SIP edge"),
}


#: How to turn on an optional part that is not configured (the detail says why it is off).
TURN_ON = {
    "transcriber": (_l("Calls are not transcribed. To turn it on, set this setting to the "
                       "folder of an unpacked speech model and start the transcriber:"),
                    "transcription.model_path"),
    "kiosk_bridge": (_l("No remote windows are registered, so the bridge is not needed. To "
                        "turn it on, register the remote windows in this section of the "
                        "site file and start the bridge:"), "[[kiosks]]"),
}


def component_label(name: str) -> str:
    return str(LABELS.get(name, name))


def turn_on_hint(name: str) -> tuple[str, str] | None:
    """How to turn on an optional part: the sentence, and the setting it names."""
    hint = TURN_ON.get(name)
    return (str(hint[0]), hint[1]) if hint is not None else None

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
    components = [dataclasses.replace(c, detail=scrub(c.detail))
                  for c in collect(res.redis, res.keys, res.engine, res.settings)]
    by_name = {c.component: c for c in components}
    healthy = all(name in by_name and by_name[name].state != DOWN for name in REQUIRED)
    return healthy, components


@bp.get("/health.json")
def health_json() -> tuple[Response, int]:
    healthy, components = snapshot()
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "components": {c.component: {"ok": c.ok, "state": c.state, "detail": c.detail}
                       for c in components},
    }
    return jsonify(body), 200 if healthy else 503


@bp.get("/health")
def health_page() -> tuple[str, int]:
    healthy, components = snapshot()
    page = render_template("health.html", healthy=healthy, components=components,
                           required=REQUIRED, component_label=component_label,
                           turn_on_hint=turn_on_hint,
                           any_off=any(c.state == NOT_CONFIGURED for c in components))
    return page, 200 if healthy else 503
