"""The remote window in web: the kiosk page and its API (docs/kiosk.md). The console's
view of a kiosk call is ``web.kiosk_console``, the maintainer's fleet view
``web.kiosk_fleet``; the card flow's data lives in ``web.kiosk_card``, what the three
share in ``web.kiosk_shared``.

Kiosk API authentication: every call carries either the kiosk's credential
(``Authorization: Kiosk <id>:<secret>``, checked against the registered kiosks) or,
during a session, the session token web issued when the session started
(``X-Kiosk-Session``; Redis keeps only its hash). No cookie is set and nothing is kept in
the browser: the page holds the credential (from its start URL's fragment) and the token
in memory only. JSON calls without cookies are not exposed to CSRF, so these views are
exempt from the CSRF check; the console's views are not.

Signalling: web forwards SDP offers to kiosk_bridge over Redis (``kiosk.request`` on a
list, the answer on a reply list) and returns the answer; ICE candidates are gathered
before the offer is sent (no trickle), so one request/response pair is enough.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, make_response, render_template, request
from flask_babel import force_locale
from sqlalchemy import update

from common import audit
from common import commands as cmds
from common.kiosk import (
    CARD_STATES,
    KioskBridgeRequest,
    KioskEnd,
    find_kiosk,
    new_token,
    purge_session,
    token_hash,
    verify_credential,
    write_if_live,
)
from common.models.calls import Call, CallEvent
from common.settings import Kiosk, Settings
from web.access import audit_event, remote_addr
from web.contacts import citizen_ref_for_card
from web.db import get_redis, get_settings, resources
from web.kiosk_card import CARD_ACTIVE, CARD_ERRORS, card_items, clean_text, record_card_state
from web.kiosk_shared import DEVICES, MAX_SDP, add_timeline_event, api_error, bridge_request, kk
from web.kiosk_texts import hours_texts, page_texts
from web.security import CONTENT_SECURITY_POLICY, csrf_exempt

logger = logging.getLogger(__name__)

bp = Blueprint("kiosk", __name__, url_prefix="/kiosk")

F = TypeVar("F", bound=Callable[..., Any])

APP_VERSION = "1"
HANGUP_REASONS = ("kiosk_hangup", "network", "idle", "bridge_restart", "error")
#: Errors the page may report before the citizen agreed: it checks the card agent and the
#: reader first, so that nobody is asked to agree to a read that cannot happen.
READER_ERRORS = ("agent-unavailable", "no-reader", "pcsc-unavailable")
_verified: dict[str, tuple[str, float]] = {}  # credential digest -> (kiosk id, until)


# ----------------------------------------------------------------- authentication


def _kiosk_from_header(settings: Settings) -> Kiosk | None:
    header = request.headers.get("Authorization", "")
    scheme, _sp, credential = header.partition(" ")
    if scheme != "Kiosk" or not credential:
        return None
    digest = hashlib.sha256(credential.encode()).hexdigest()
    cached = _verified.get(digest)
    now = time.monotonic()
    if cached is not None and cached[1] > now:  # argon2 is slow by design: verify once
        return find_kiosk(settings, cached[0])
    kiosk = verify_credential(settings, credential)
    if kiosk is not None:
        _verified[digest] = (kiosk.id, now + 300)
    return kiosk


def kiosk_required(view: F) -> F:
    """The request must carry a registered kiosk's credential."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kiosk = _kiosk_from_header(get_settings())
        if kiosk is None:
            audit_event("kiosk.auth", object_type="kiosk", outcome="denied",
                        reason="bad_credential")
            return api_error(401, "kiosk_credential", "this page is not a registered kiosk: "
                             "start it with the kiosk's URL including its credential")
        g.kiosk = kiosk
        return view(*args, **kwargs)

    return csrf_exempt(wrapped)  # type: ignore[return-value]


def _session_meta(session_id: str) -> dict[str, str] | None:
    """The session named in the URL, if the request carries its token."""
    token = request.headers.get("X-Kiosk-Session", "")
    if not token or len(session_id) != 32:
        return None
    raw: Any = get_redis().hgetall(kk().session(session_id))
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    stored = meta.get("token", "")
    if not stored or not hashlib.sha256(token.encode()).hexdigest() == stored:
        return None
    return meta


# --------------------------------------------------------------------- the page


@bp.get("/")
def page() -> Response:
    """The kiosk application (one page). Its credential is in the URL's fragment, which
    the browser never sends; without it the page cannot start a session."""
    settings = get_settings()
    texts = {}
    for lang in ("ja", "en"):
        with force_locale(lang):
            texts[lang] = page_texts()
    texts["ja"]["language"] = "English"  # the switch names the other language
    texts["en"]["language"] = "日本語"
    categories = [{"id": c.id, "ja": c.name, "en": c.name_en or c.name}
                  for c in settings.kiosk_categories]
    config = {"texts": texts, "categories": categories,
              "heartbeat_seconds": settings.kiosk.heartbeat_seconds,
              "idle_seconds": settings.kiosk.idle_seconds,
              "ice_servers": [e.split("|")[0] for e in settings.kiosk_bridge.ice_servers],
              "version": APP_VERSION}
    config["card_agent_url"] = settings.kiosk.card_agent_url
    text = json.dumps(config, ensure_ascii=False)  # escaped into an attribute by Jinja
    response = make_response(render_template("kiosk/kiosk.html", config=text))
    # the page may also talk to the card agent on the kiosk PC's loopback (issue 6)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "connect-src 'self'", f"connect-src 'self' {settings.kiosk.card_agent_url}".rstrip())
    return response


# ------------------------------------------------------------------ kiosk API


@bp.post("/api/hello")
@kiosk_required
def hello() -> Response:
    kiosk: Kiosk = g.kiosk
    return jsonify({"ok": True, "kiosk": kiosk.id, "location": kiosk.location,
                    "location_en": kiosk.location_en or kiosk.location})


@bp.post("/api/session")
@kiosk_required
def start_session() -> Response:
    kiosk: Kiosk = g.kiosk
    settings = get_settings()
    body = request.get_json(silent=True) or {}
    sdp = body.get("sdp")
    category = str(body.get("category", ""))[:64]
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP:
        return api_error(400, "bad_offer", "send the browser's SDP offer as 'sdp'")
    if category and category not in {c.id for c in settings.kiosk_categories}:
        return api_error(400, "bad_category", f"unknown category {category!r}")
    if not any(s.channel == "kiosk" and s.tenant == kiosk.tenant for s in settings.services):
        return api_error(409, "no_kiosk_service", "no remote-window service for this kiosk's "
                         "tenant (settings: [[services]] channel = \"kiosk\")")
    r = get_redis()
    keys = kk()
    previous = r.get(keys.active(kiosk.id))
    if previous is not None:  # the page restarted mid-session: that session ends now
        _end(settings, previous.decode(), "bridge_restart")  # type: ignore[union-attr]
    session_id = uuid.uuid4().hex
    token = new_token()
    ttl = settings.kiosk.session_max_hours * 3600
    pipe = r.pipeline()
    pipe.hset(keys.session(session_id), mapping={
        "kiosk": kiosk.id, "tenant": kiosk.tenant, "location": kiosk.location,
        "category": category, "state": "new", "token": token_hash(token),
        "created_at": f"{time.time():.3f}"})
    pipe.expire(keys.session(session_id), ttl)
    pipe.set(keys.active(kiosk.id), session_id, ex=ttl)
    pipe.execute()
    reply = bridge_request(KioskBridgeRequest(action="offer", session_id=session_id, sdp=sdp))
    if reply is None or not reply.ok:
        purge_session(settings, r, session_id, "error", resources().factory)
        if reply is None:
            return api_error(503, "bridge_unavailable", "the video bridge did not answer; is "
                             "kiosk_bridge running?")
        return api_error(502, reply.code or "bridge_error", reply.error)
    logger.info("kiosk %s: session %s started", kiosk.id, session_id[:8])
    return jsonify({"ok": True, "session": session_id, "token": token, "sdp": reply.sdp})


@bp.get("/api/session/<session_id>")
@csrf_exempt
def session_state(session_id: str) -> Response:
    meta = _session_meta(session_id)
    if meta is None:
        return api_error(404, "no_session", "no such session (ended, or a wrong token)")
    settings = get_settings()
    r = get_redis()
    out: dict[str, Any] = {"ok": True, "state": meta.get("state", "new")}
    call_id = meta.get("call_id", "")
    service = next((s for s in settings.services
                    if s.channel == "kiosk" and s.tenant == meta.get("tenant")), None)
    if call_id and service is not None and out["state"] == "queued":
        raw: Any = r.hgetall(resources().keys.queue_callers(service.queue))
        entries = [(json.loads(v), k.decode()) for k, v in raw.items()]
        mine = next((e for e, k in entries if k == call_id), None)
        if mine is not None:
            position = int(mine.get("position", 0)) or 1
            ahead = sum(1 for e, _k in entries if int(e.get("position", 0)) < position)
            out["position"] = ahead + 1
            out["waiting"] = len(entries)
            out["expected_minutes"] = math.ceil(
                (ahead + 1) * settings.kiosk.minutes_per_session / max(1, service.lines))
    if out["state"] == "unavailable":  # nobody can answer, or closed (ari_app.kiosk)
        out["reason"] = meta.get("unavailable") or "no_operator"
        out["wait"] = meta.get("wait") == "1"
        if service is not None:
            out["hours"] = hours_texts(settings, service, meta.get("next_open", ""))
    elif out["state"] == "ended":
        out["reason"] = meta.get("end_reason", "")
    pending: Any = r.lpop(kk().requests(session_id), 10)
    out["requests"] = [p.decode() for p in pending or []]
    return jsonify(out)


@bp.post("/api/session/<session_id>/wait")
@csrf_exempt
def wait(session_id: str) -> Response:
    """Nobody could answer and the citizen chooses to wait: ari_app puts the kiosk in the
    queue again as soon as an operator can answer (music on hold meanwhile)."""
    meta = _session_meta(session_id)
    if meta is None:
        return api_error(404, "no_session", "no such session (ended, or a wrong token)")
    if meta.get("state") != "unavailable":
        return api_error(409, "not_unavailable", f"the session is {meta.get('state', 'new')}"
                         ": there is nothing to wait for")
    if meta.get("unavailable") == "closed":
        return api_error(409, "closed", "the service is closed: nobody answers before it "
                         "opens")
    if not write_if_live(get_redis(), kk(), session_id, kk().session(session_id),
                         {"wait": "1"}):
        return api_error(404, "no_session", "the session ended meanwhile")
    return jsonify({"ok": True})


@bp.post("/api/session/<session_id>/hangup")
@csrf_exempt
def hangup(session_id: str) -> Response:
    meta = _session_meta(session_id)
    if meta is None:
        return api_error(404, "no_session", "no such session (ended, or a wrong token)")
    body = request.get_json(silent=True) or {}
    reason = str(body.get("reason", "kiosk_hangup"))
    if reason not in HANGUP_REASONS:
        return api_error(400, "bad_reason", f"reason must be one of {', '.join(HANGUP_REASONS)}")
    survey = _end(get_settings(), session_id, reason, meta)
    return jsonify({"ok": True, "survey": survey})


def _end(settings: Settings, session_id: str, reason: str,
         meta: dict[str, str] | None = None) -> bool:
    """End a session from web: tell its bridge, ask ari_app to hang up its leg (in case
    the bridge is gone), purge it. True when the user can answer the survey."""
    r = get_redis()
    if meta is None:
        raw: Any = r.hgetall(kk().session(session_id))
        meta = {k.decode(): v.decode() for k, v in raw.items()}
    if meta.get("bridge"):
        r.rpush(kk().bridge_instance(meta["bridge"]), KioskBridgeRequest(
            action="hangup", session_id=session_id, reason=reason).encode())
    if meta.get("tenant"):
        cmds.send_command(r, resources().keys, KioskEnd(session_id=session_id,
                                                        tenant=meta["tenant"], reason=reason))
    purge_session(settings, r, session_id, reason, resources().factory)
    # whoever purges (web or the bridge, racing) leaves the survey ticket behind
    return bool(meta.get("agent") and meta.get("token"))


@bp.post("/api/session/<session_id>/still")
@csrf_exempt
def upload_still(session_id: str) -> Response:
    meta = _session_meta(session_id)
    if meta is None:
        return api_error(404, "no_session", "no such session (ended, or a wrong token)")
    limit = get_settings().kiosk.still_max_bytes
    request.max_content_length = limit  # a 10 MP still is larger than the app's default
    data = request.get_data(cache=False)
    if len(data) > limit:
        return api_error(413, "too_large", f"a still may be at most {limit} bytes")
    if not data.startswith(b"\xff\xd8") and not data.startswith(b"\x89PNG"):
        return api_error(400, "not_an_image", "send the still as JPEG or PNG")
    still_id = uuid.uuid4().hex[:12]
    if not write_if_live(get_redis(), kk(), session_id, kk().stills(session_id),
                         {still_id: data}, get_settings().kiosk.session_max_hours * 3600):
        return api_error(404, "no_session", "the session ended meanwhile; nothing was kept")
    call_id = meta.get("call_id", "")
    if call_id:
        add_timeline_event(call_id, "kiosk_still", {"still": still_id, "bytes": len(data)},
                           f"kiosk_still:{still_id}")
    return jsonify({"ok": True, "still": still_id})


# ------------------------------------------------------------- My Number card (R5)


@bp.post("/api/session/<session_id>/card")
@csrf_exempt
def card_step(session_id: str) -> Response:
    """The kiosk page reports the card flow: the citizen's consent, the steps, an error
    (with the card agent's operator notice), and finally the four items. The PIN never
    comes here: the page sends it to the card agent on its own machine only."""
    meta = _session_meta(session_id)
    if meta is None:
        return api_error(404, "no_session", "no such session (ended, or a wrong token)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return api_error(400, "bad_body", "send a JSON object with 'state'")
    if "pin" in body:
        return api_error(400, "pin_refused", "the PIN is never sent to the server")
    state = body.get("state")
    if state not in CARD_STATES or state == "requested":
        return api_error(400, "bad_state", "state must be one of " +
                         ", ".join(s for s in CARD_STATES if s != "requested"))
    if not meta.get("agent"):
        return api_error(409, "not_connected", "the card can be read only during a call")
    current = meta.get("card_state", "")
    consented = meta.get("card_consent") == "1"
    if state in ("consented", "declined"):
        # after the operator's request, or again after the reader's state stopped it
        if current != "requested" and not (current == "error" and not consented):
            return api_error(409, "not_requested", "the operator has not asked for the card")
    elif state == "error" and not consented:
        if current not in ("requested", "error") or body.get("error") not in READER_ERRORS:
            return api_error(409, "no_consent", "before the citizen agrees, only the card "
                             "reader's state (" + ", ".join(READER_ERRORS) + ") is reported")
    elif current not in CARD_ACTIVE or (state != "cancelled" and not consented):
        return api_error(409, "no_consent", "no card read the citizen agreed to is under way")
    settings = get_settings()
    # whether this request's read was agreed to (card_* fields other than this one are
    # reset at each step)
    fields: dict[str, str] = {}
    if state in ("consented", "declined", "cancelled"):
        fields["card_consent"] = "1" if state == "consented" else ""
    if state == "error":
        error = body.get("error")
        if error not in CARD_ERRORS:
            return api_error(400, "bad_error", "error must be one of " + ", ".join(CARD_ERRORS))
        fields["card_error"] = str(error)
        tries = body.get("tries_left")
        if tries is not None:
            if not isinstance(tries, int) or isinstance(tries, bool) or not 0 <= tries <= 15:
                return api_error(400, "bad_tries", "tries_left must be a whole number 0-15")
            fields["card_tries"] = str(tries)
        for name, field, limit in (("operator_notice_ja", "card_notice_ja", 300),
                                   ("operator_notice_en", "card_notice_en", 300),
                                   ("detail", "card_detail", 200)):
            text = clean_text(body.get(name, ""), limit)
            if text is None:
                return api_error(400, "bad_notice", f"{name} must be one line of at most "
                                 f"{limit} characters")
            fields[field] = text
    if state == "read":
        items = card_items(body.get("items"))
        if isinstance(items, str):
            return api_error(400, "bad_items", items)
        if not write_if_live(get_redis(), kk(), session_id, kk().card(session_id), items,
                             settings.kiosk.session_max_hours * 3600, replace=True):
            return api_error(404, "no_session", "the session ended meanwhile; nothing was kept")
        call_id = meta.get("call_id", "")
        if call_id:  # who this citizen is, for their earlier contacts; not the items
            ref = citizen_ref_for_card(settings.web.secret_key, items["name"], items["birth"])
            with resources().factory() as db, db.begin():
                db.execute(update(Call).where(Call.id == call_id).values(citizen_ref=ref))
        kiosk = meta.get("kiosk", "")
        audit.write(resources().factory, audit.Actor(name=f"kiosk:{kiosk}",
                                                     tenant_id=meta.get("tenant", ""),
                                                     remote_addr=remote_addr(), source="kiosk"),
                    "kiosk_card.read", object_type="call", object_id=meta.get("call_id", ""),
                    tenant_id=meta.get("tenant", ""))
        logger.info("kiosk %s: card data read for session %s", kiosk, session_id[:8])
    if not record_card_state(session_id, meta, str(state), fields):
        return api_error(404, "no_session", "the session ended meanwhile")
    return jsonify({"ok": True})


@bp.post("/api/survey")
@csrf_exempt
def survey() -> Response:
    token = request.headers.get("X-Kiosk-Session", "")
    body = request.get_json(silent=True) or {}
    score = body.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        return api_error(400, "bad_score", "score must be a whole number from 1 to 5")
    r = get_redis()
    key = kk().survey(token_hash(token)) if token else ""
    call_id: Any = r.getdel(key) if key else None
    if call_id is None:
        return api_error(404, "no_survey", "no finished call to rate from this session")
    call = call_id.decode()
    with resources().factory() as db, db.begin():
        db.execute(update(Call).where(Call.id == call).values(survey_score=score))
        db.add(CallEvent(call_id=call, at=datetime.now(UTC), kind="survey", source="web",
                         dedup_key="survey", data={"score": score, "channel": "kiosk"}))
    return jsonify({"ok": True})


@bp.post("/api/heartbeat")
@kiosk_required
def heartbeat() -> Response:
    kiosk: Kiosk = g.kiosk
    body = request.get_json(silent=True) or {}
    raw_devices = body.get("devices")
    devices: dict[str, Any] = raw_devices if isinstance(raw_devices, dict) else {}
    state = {d: str(devices.get(d, "unknown"))[:16] for d in DEVICES}
    fields: dict[str | bytes, str] = {"version": str(body.get("version", ""))[:32],
              "devices": json.dumps(state), "rtt_ms": str(body.get("rtt_ms", ""))[:16],
              "last_error": str(body.get("last_error", ""))[:300],
              "screen": str(body.get("screen", ""))[:32], "seen_at": f"{time.time():.3f}"}
    r = get_redis()
    keys = kk()
    pipe = r.pipeline()
    pipe.hset(keys.heartbeat(kiosk.id), mapping=fields)  # type: ignore[arg-type]
    pipe.expire(keys.heartbeat(kiosk.id), 7 * 86400)
    if fields["last_error"]:
        pipe.lpush(keys.errors(kiosk.id), json.dumps({"at": fields["seen_at"],
                                                      "error": fields["last_error"]}))
        pipe.ltrim(keys.errors(kiosk.id), 0, 19)
    pipe.lpop(keys.actions(kiosk.id), 10)
    results = pipe.execute()
    actions = [a.decode() for a in results[-1] or []]
    return jsonify({"ok": True, "actions": actions})


@bp.post("/api/diagnostics")
@kiosk_required
def diagnostics() -> Response:
    kiosk: Kiosk = g.kiosk
    body = request.get_json(silent=True) or {}
    raw_lines = body.get("log")
    lines: list[Any] = raw_lines if isinstance(raw_lines, list) else []
    text = "\n".join(str(line)[:500] for line in lines[-500:])
    get_redis().set(kk().diagnostics(kiosk.id), text, ex=7 * 86400)
    return jsonify({"ok": True})

