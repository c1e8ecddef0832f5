"""The maintainer's fleet view (docs/kiosk.md): each kiosk's last heartbeat, devices,
alarms and errors, its diagnostic log, and actions the kiosk carries out with its next
heartbeat.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from redis.exceptions import RedisError

from common.kiosk import find_kiosk
from common.settings import Kiosk, Settings
from web.access import audit_event, current_user, login_required
from web.db import get_redis, get_settings
from web.kiosk_shared import DEVICES, api_error, kk

fleet_bp = Blueprint("kiosk_fleet", __name__, url_prefix="/kiosk-fleet")

FLEET_ACTIONS = ("reload", "device_check", "collect_log")


def fleet_status(settings: Settings, tenant: str) -> list[dict[str, Any]]:
    r = get_redis()
    keys = kk()
    now = time.time()
    out = []
    for kiosk in settings.kiosks:
        if kiosk.tenant != tenant:
            continue
        raw: Any = r.hgetall(keys.heartbeat(kiosk.id))
        beat = {k.decode(): v.decode() for k, v in raw.items()}
        seen = float(beat.get("seen_at", "0") or 0)
        devices = json.loads(beat.get("devices", "{}") or "{}")
        alarms = []
        if not seen or now - seen > settings.kiosk.offline_alarm_seconds:
            alarms.append("offline")
        for device in kiosk.devices:
            if seen and devices.get(device) in ("missing", "error"):
                alarms.append(f"device:{device}")
        errors: Any = r.lrange(keys.errors(kiosk.id), 0, 4)
        out.append({"id": kiosk.id, "location": kiosk.location,
                    "location_en": kiosk.location_en, "seen_at": seen,
                    "seen_ago": int(now - seen) if seen else None,
                    "version": beat.get("version", ""), "rtt_ms": beat.get("rtt_ms", ""),
                    "screen": beat.get("screen", ""), "devices": devices, "alarms": alarms,
                    "errors": [json.loads(e) for e in errors or []],
                    "has_log": bool(r.exists(keys.diagnostics(kiosk.id)))})
    return out


@fleet_bp.get("/")
@login_required(roles=("administrator", "supervisor"))
def fleet() -> str:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    settings = get_settings()
    return render_template("kiosk/fleet.html", kiosks=fleet_status(settings, user.tenant_id),
                           actions=FLEET_ACTIONS, devices=DEVICES, labels=fleet_labels())


def fleet_labels() -> dict[str, dict[str, str]]:
    """The fleet page's words for the ids the kiosk page reports."""
    return {
        "device": {"camera": _("Camera"), "document_camera": _("Document camera"),
                   "microphone": _("Microphone"), "speaker": _("Speaker"),
                   "card_reader": _("Card reader"), "keypad": _("PIN keypad")},
        "state": {"ok": _("Working"), "missing": _("Not found"), "error": _("Error"),
                  "unknown": _("Unknown")},
        "screen": {"loading": _("Starting"), "welcome": _("Welcome screen"),
                   "categories": _("Choosing a topic"), "connecting": _("Connecting"),
                   "waiting": _("Waiting"), "call": _("In a call"), "survey": _("Survey"),
                   "thanks": _("Finished"), "error": _("Error screen"),
                   "unregistered": _("Not registered"),
                   "unavailable": _("No operator can answer: choosing"),
                   "standby": _("Waiting for an operator to be free"),
                   "closed": _("Outside the opening hours")},
    }


@fleet_bp.get("/status.json")
@login_required(roles=("administrator", "supervisor"))
def fleet_json() -> Response:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    return jsonify({"kiosks": fleet_status(get_settings(), user.tenant_id)})


def _own_kiosk(kiosk_id: str) -> Kiosk:
    """The viewer's tenant's kiosk of that id, or 404 (another tenant's is not found)."""
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    kiosk = find_kiosk(get_settings(), kiosk_id)
    if kiosk is None or kiosk.tenant != user.tenant_id:
        abort(404)
    return kiosk


@fleet_bp.post("/<kiosk_id>/action")
@login_required(roles=("administrator", "supervisor"))
def fleet_action(kiosk_id: str) -> Any:
    _own_kiosk(kiosk_id)
    action = request.form.get("action", "")
    if action not in FLEET_ACTIONS:
        return api_error(400, "bad_action", f"action must be one of {', '.join(FLEET_ACTIONS)}")
    try:
        get_redis().rpush(kk().actions(kiosk_id), action)
    except RedisError as exc:
        return api_error(503, "redis", f"the action was not queued: {exc}")
    audit_event(f"kiosk.{action}", object_type="kiosk", object_id=kiosk_id)
    flash(_("The action was sent; the kiosk carries it out with its next heartbeat."))
    return redirect(url_for("kiosk_fleet.fleet"))


@fleet_bp.get("/<kiosk_id>/log")
@login_required(roles=("administrator", "supervisor"))
def fleet_log(kiosk_id: str) -> Response:
    _own_kiosk(kiosk_id)
    text: Any = get_redis().get(kk().diagnostics(kiosk_id))
    if text is None:
        abort(404)
    audit_event("kiosk.log_view", object_type="kiosk", object_id=kiosk_id)
    return Response(text, mimetype="text/plain")
