"""The console's view of a kiosk call (docs/kiosk.md): the kiosk's video, the document
stills and the My Number card, for the operator who answered, the staff member the call
was transferred to and supervisors. These views take the signed-in user's session and,
unlike the kiosk API (``web.kiosk``), the CSRF check.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from flask_babel import get_locale

from common.kiosk import KioskBridgeRequest, request_if_live
from web.access import audit_event, current_user, login_required
from web.console import transferred_to
from web.db import get_db, get_redis, get_settings
from web.kiosk_card import CARD_ACTIVE, SEX_LABELS, japanese_date, record_card_state
from web.kiosk_shared import MAX_SDP, api_error, bridge_request, kk

console_bp = Blueprint("kiosk_console", __name__, url_prefix="/console/kiosk")


def _call_session(call_id: str) -> tuple[str, dict[str, str]]:
    """The kiosk session of a call the signed-in user may see, or 404/403."""
    r = get_redis()
    sid: Any = r.get(kk().call_session(call_id))
    if sid is None:
        abort(404)
    session_id = sid.decode()
    raw: Any = r.hgetall(kk().session(session_id))
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    if meta.get("tenant") != user.tenant_id:
        abort(404)
    # the answering operator, the staff member the call was transferred to, supervisors
    allowed = user.has_role("supervisor") or (
        user.sip_endpoint is not None and user.sip_endpoint == meta.get("agent")) or (
        user.has_role("staff") and bool(user.extension)
        and transferred_to(get_db(), call_id, str(user.extension)))
    if not allowed:
        audit_event("kiosk_session.view", object_type="call", object_id=call_id,
                    outcome="denied", reason="not_on_call")
        abort(403)
    return session_id, meta


@console_bp.post("/<call_id>/view")
@login_required(roles=("operator", "staff", "supervisor"))
def view(call_id: str) -> Response:
    session_id, meta = _call_session(call_id)
    body = request.get_json(silent=True) or {}
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP:
        return api_error(400, "bad_offer", "send the browser's SDP offer as 'sdp'")
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    reply = bridge_request(KioskBridgeRequest(action="view", session_id=session_id, sdp=sdp,
                                              viewer=str(user.id)),
                           instance=meta.get("bridge", ""))
    if reply is None:
        return api_error(503, "bridge_unavailable", "the video bridge did not answer")
    if not reply.ok:
        return api_error(409, reply.code, reply.error)
    audit_event("kiosk_video.view", object_type="call", object_id=call_id)
    return jsonify({"ok": True, "sdp": reply.sdp})


@console_bp.post("/<call_id>/still-request")
@login_required(roles=("operator", "staff", "supervisor"))
def request_still(call_id: str) -> Response:
    session_id, _meta = _call_session(call_id)
    if not request_if_live(get_redis(), kk(), session_id, "still",
                           get_settings().kiosk.session_max_hours * 3600):
        return api_error(409, "not_connected", "the kiosk call has ended")
    return jsonify({"ok": True})


@console_bp.post("/<call_id>/card-request")
@login_required(roles=("operator", "staff", "supervisor"))
def request_card(call_id: str) -> Response:
    """Ask the citizen at the kiosk to read their My Number card (they must agree)."""
    session_id, meta = _call_session(call_id)
    if not meta.get("agent"):
        return api_error(409, "not_connected", "the kiosk call is not connected")
    if meta.get("card_state") in CARD_ACTIVE and meta.get("card_state") != "error":
        return api_error(409, "card_in_progress", "a card read is already under way")
    if not record_card_state(session_id, meta, "requested",
                             {"card_consent": ""}) or not request_if_live(
            get_redis(), kk(), session_id, "card", get_settings().kiosk.session_max_hours * 3600):
        return api_error(409, "not_connected", "the kiosk call has ended")
    audit_event("kiosk_card.request", object_type="call", object_id=call_id)
    return jsonify({"ok": True})


@console_bp.get("/<call_id>/card")
@login_required(roles=("operator", "staff", "supervisor"))
def card_status(call_id: str) -> Response:
    """Where the card flow is (for the case card), without the data itself."""
    session_id, meta = _call_session(call_id)
    lang = "en" if str(get_locale() or "").startswith("en") else "ja"
    has_data = bool(get_redis().exists(kk().card(session_id)))
    tries = meta.get("card_tries", "")
    return jsonify({"ok": True, "state": meta.get("card_state", ""),
                    "error": meta.get("card_error", ""),
                    "tries_left": int(tries) if tries else None,
                    "notice": meta.get(f"card_notice_{lang}", "") or
                    meta.get("card_notice_ja", ""),
                    "detail": meta.get("card_detail", ""), "at": meta.get("card_at", ""),
                    "has_data": has_data})


@console_bp.get("/<call_id>/card/data")
@login_required(roles=("operator", "staff", "supervisor"))
def card_data(call_id: str) -> Response:
    """The four card-surface items, for filling in forms during this call. Every view is
    audited (who saw the card data of which call), the data never is."""
    session_id, _meta = _call_session(call_id)
    raw: Any = get_redis().hgetall(kk().card(session_id))
    if not raw:
        return api_error(404, "no_card_data", "no card data for this call")
    items = {k.decode(): v.decode() for k, v in raw.items()}
    audit_event("kiosk_card.view", object_type="call", object_id=call_id)
    ja, en = SEX_LABELS.get(items.get("sex", ""), ("", ""))
    response = jsonify({"ok": True, "items": {**items, "sex_ja": ja, "sex_en": en,
                                              "birth_ja": japanese_date(items.get("birth", ""))}})
    response.headers["Cache-Control"] = "no-store"
    return response


@console_bp.get("/<call_id>/stills")
@login_required(roles=("operator", "staff", "supervisor"))
def stills(call_id: str) -> Response:
    session_id, _meta = _call_session(call_id)
    ids: Any = get_redis().hkeys(kk().stills(session_id))
    return jsonify({"ok": True, "stills": sorted(i.decode() for i in ids)})


@console_bp.get("/<call_id>/stills/<still_id>")
@login_required(roles=("operator", "staff", "supervisor"))
def still(call_id: str, still_id: str) -> Response:
    session_id, _meta = _call_session(call_id)
    data: Any = get_redis().hget(kk().stills(session_id), still_id[:32])
    if data is None:
        abort(404)
    audit_event("kiosk_still.view", object_type="call", object_id=call_id)
    mimetype = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return Response(data, mimetype=mimetype)
