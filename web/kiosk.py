"""The remote window in web: the kiosk page and its API, the console's kiosk view, the
maintainer's fleet view (docs/kiosk.md).

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
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from redis.exceptions import RedisError
from sqlalchemy import update

from common import audit
from common import commands as cmds
from common.events import EventError, decode
from common.kiosk import (
    CARD_ITEMS,
    CARD_STATES,
    KioskBridgeReply,
    KioskBridgeRequest,
    KioskCardState,
    KioskEnd,
    KioskKeys,
    find_kiosk,
    new_token,
    purge_session,
    request_if_live,
    token_hash,
    verify_credential,
    write_if_live,
)
from common.models.calls import Call, CallEvent
from common.settings import Kiosk, Settings
from web.access import audit_event, current_user, login_required, remote_addr
from web.console import publish, transferred_to
from web.db import get_db, get_redis, get_settings, resources
from web.security import CONTENT_SECURITY_POLICY, csrf_exempt

logger = logging.getLogger(__name__)

bp = Blueprint("kiosk", __name__, url_prefix="/kiosk")
console_bp = Blueprint("kiosk_console", __name__, url_prefix="/console/kiosk")
fleet_bp = Blueprint("kiosk_fleet", __name__, url_prefix="/kiosk-fleet")

F = TypeVar("F", bound=Callable[..., Any])

APP_VERSION = "1"
HANGUP_REASONS = ("kiosk_hangup", "network", "idle", "bridge_restart", "error")
DEVICES = ("camera", "document_camera", "microphone", "speaker", "card_reader", "keypad")
FLEET_ACTIONS = ("reload", "device_check", "collect_log")
MAX_SDP = 64 * 1024
_verified: dict[str, tuple[str, float]] = {}  # credential digest -> (kiosk id, until)


def kk() -> KioskKeys:
    return KioskKeys(resources().keys)


def _error(status: int, code: str, message: str) -> Response:
    response = jsonify({"ok": False, "code": code, "error": message})
    response.status_code = status
    return response


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
            return _error(401, "kiosk_credential", "this page is not a registered kiosk: "
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
            texts[lang] = _page_texts()
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


def _page_texts() -> dict[str, str]:
    return {
        "title": _("Remote window"),
        "welcome": _("Welcome. You can talk with city staff on the screen."),
        "start": _("Touch here to start"),
        "choose": _("What would you like help with?"),
        "connecting": _("Connecting. Please wait."),
        "waiting": _("Please wait. A staff member will answer soon."),
        "position": _("People before you"),
        "expected": _("Expected wait (minutes)"),
        "in_call": _("You are talking with city staff."),
        "show_document": _("Show a document"),
        "document_hint": _("Place the document under the camera, then touch the button."),
        "document_sent": _("The document picture was sent to the staff member."),
        "volume": _("Volume"),
        "hang_up": _("End the call"),
        "survey": _("How satisfied were you? Touch 1 to 5."),
        "survey_low": _("Not satisfied"),
        "survey_high": _("Very satisfied"),
        "thanks": _("Thank you. Everything you showed here has been deleted."),
        "back": _("Back"),
        "error": _("Sorry, the connection failed. Please try again."),
        "not_registered": _("This screen is not registered as a kiosk. Please call the staff."),
        "ended": _("The call has ended."),
        "no_operator": _("Sorry, nobody can answer now. Please try again later."),
        # the My Number card (the agent's own messages come with its answers)
        "card_title": _("Reading your My Number card"),
        "card_consent": _("To help fill in your application, the staff member asks to read "
                          "the information printed on your My Number card: name, address, "
                          "date of birth and sex. It is used during this call only and erased "
                          "when the call ends. Your individual number (My Number) is not "
                          "read."),
        "card_agree": _("Agree and read the card"),
        "card_decline": _("Do not read"),
        "card_insert": _("Place your My Number card on the card reader."),
        "card_checking": _("Checking the card."),
        "card_pin": _("Enter the 4-digit PIN for the card-surface information "
                      "(券面事項入力補助用暗証番号)."),
        "card_pin_note": _("Your PIN is not shown or recorded, and it is not sent to the "
                           "staff member."),
        "card_tries": _("Tries left:"),
        "card_clear": _("Delete"),
        "card_ok": _("Enter"),
        "card_reading": _("Reading the card. Please do not move it."),
        "card_done": _("The card was read. Please take your card."),
        "card_retry": _("Try again"),
        "card_cancel": _("Stop"),
        "card_close": _("Close"),
        "card_agent_down": _("The card reader is not ready. Please tell the staff member."),
        "card_no_reader": _("No card reader was found. Please tell the staff member."),
        "card_notice_agent_down": _("The card agent on the kiosk PC does not answer "
                                    "(is madoguchi-card-agent running?)."),
        "card_notice_no_reader": _("No card reader is connected to the kiosk PC."),
        "card_notice_pcsc": _("The kiosk PC's PC/SC service (pcscd) is not available."),
    }


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
        return _error(400, "bad_offer", "send the browser's SDP offer as 'sdp'")
    if category and category not in {c.id for c in settings.kiosk_categories}:
        return _error(400, "bad_category", f"unknown category {category!r}")
    if not any(s.channel == "kiosk" and s.tenant == kiosk.tenant for s in settings.services):
        return _error(409, "no_kiosk_service", "no remote-window service for this kiosk's "
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
            return _error(503, "bridge_unavailable", "the video bridge did not answer; is "
                          "kiosk_bridge running?")
        return _error(502, reply.code or "bridge_error", reply.error)
    logger.info("kiosk %s: session %s started", kiosk.id, session_id[:8])
    return jsonify({"ok": True, "session": session_id, "token": token, "sdp": reply.sdp})


def bridge_request(req: KioskBridgeRequest, instance: str = "",
                   timeout: float | None = None) -> KioskBridgeReply | None:
    """Hand a request to kiosk_bridge and wait for its reply (None: no bridge answered)."""
    settings = get_settings()
    r = get_redis()
    keys = kk()
    target = keys.bridge_instance(instance) if instance else keys.bridge_requests
    body = req.encode()
    r.rpush(target, body)
    deadline = time.monotonic() + (timeout or settings.kiosk_bridge.answer_timeout)
    while time.monotonic() < deadline:
        wait = max(1, min(3, math.ceil(deadline - time.monotonic())))
        item: Any = r.blpop([keys.reply(req.id)], timeout=wait)
        if item is None:
            continue
        try:
            reply = decode(item[1])
        except EventError:
            return None
        return reply if isinstance(reply, KioskBridgeReply) else None
    r.lrem(target, 1, body)  # nobody took it: do not leave it for a later bridge
    return None


@bp.get("/api/session/<session_id>")
@csrf_exempt
def session_state(session_id: str) -> Response:
    meta = _session_meta(session_id)
    if meta is None:
        return _error(404, "no_session", "no such session (ended, or a wrong token)")
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
    pending: Any = r.lpop(kk().requests(session_id), 10)
    out["requests"] = [p.decode() for p in pending or []]
    return jsonify(out)


@bp.post("/api/session/<session_id>/hangup")
@csrf_exempt
def hangup(session_id: str) -> Response:
    meta = _session_meta(session_id)
    if meta is None:
        return _error(404, "no_session", "no such session (ended, or a wrong token)")
    body = request.get_json(silent=True) or {}
    reason = str(body.get("reason", "kiosk_hangup"))
    if reason not in HANGUP_REASONS:
        return _error(400, "bad_reason", f"reason must be one of {', '.join(HANGUP_REASONS)}")
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
        return _error(404, "no_session", "no such session (ended, or a wrong token)")
    limit = get_settings().kiosk.still_max_bytes
    request.max_content_length = limit  # a 10 MP still is larger than the app's default
    data = request.get_data(cache=False)
    if len(data) > limit:
        return _error(413, "too_large", f"a still may be at most {limit} bytes")
    if not data.startswith(b"\xff\xd8") and not data.startswith(b"\x89PNG"):
        return _error(400, "not_an_image", "send the still as JPEG or PNG")
    still_id = uuid.uuid4().hex[:12]
    if not write_if_live(get_redis(), kk(), session_id, kk().stills(session_id),
                         {still_id: data}, get_settings().kiosk.session_max_hours * 3600):
        return _error(404, "no_session", "the session ended meanwhile; nothing was kept")
    call_id = meta.get("call_id", "")
    if call_id:
        _timeline(call_id, "kiosk_still", {"still": still_id, "bytes": len(data)},
                  f"kiosk_still:{still_id}")
    return jsonify({"ok": True, "still": still_id})


# ------------------------------------------------------------- My Number card (R5)

#: The card agent's error ids (docs/card_agent.md) and the page's own one for an agent
#: that does not answer; anything else is refused.
CARD_ERRORS = ("no-reader", "reader-unplugged", "pcsc-unavailable", "no-card", "card-removed",
               "not-my-number-card", "wrong-pin", "pin-locked", "bad-pin-format",
               "unexpected-response", "busy", "agent-unavailable")
#: Longest accepted item (characters): the card's own fields are far shorter.
CARD_ITEM_MAX = {"name": 200, "address": 400, "birth": 10, "sex": 1}
SEX_LABELS = {"1": ("男", "male"), "2": ("女", "female"), "9": ("適用不能", "not applicable"),
              "0": ("不明", "unknown")}
#: States in which the citizen has agreed and the read is under way.
CARD_ACTIVE = ("consented", "waiting_card", "pin", "reading", "error")
#: card_* fields of the session hash: the flow's state for the console, never the data.
CARD_FIELDS = ("card_state", "card_error", "card_tries", "card_notice_ja", "card_notice_en",
               "card_detail", "card_at")


#: Japanese eras (first day, name): dates on the city's forms are written in the era.
ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"), (date(1926, 12, 25), "昭和"),
        (date(1912, 7, 30), "大正"), (date(1873, 1, 1), "明治"))


def japanese_date(iso: str) -> str:
    """``1985-04-01`` → ``1985年4月1日（昭和60年）`` (the era year, 元年 for the first)."""
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return iso
    text = f"{day.year}年{day.month}月{day.day}日"
    for start, name in ERAS:
        if day >= start:
            year = day.year - start.year + 1
            return f"{text}（{name}{'元' if year == 1 else year}年）"
    return text


def _clean_text(value: Any, limit: int) -> str | None:
    """A bounded single-line text, or None when it is not one."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        return None
    return value


def card_items(raw: Any) -> dict[str, str] | str:
    """The four items as sent by the kiosk page, checked; or what is wrong with them."""
    if not isinstance(raw, dict) or set(raw) - set(CARD_ITEMS) - {"sex_ja", "sex_en"}:
        return f"items must be an object with {', '.join(CARD_ITEMS)}"
    items: dict[str, str] = {}
    for name in CARD_ITEMS:
        value = _clean_text(raw.get(name), CARD_ITEM_MAX[name])
        if value is None or (name in ("name", "birth", "sex") and not value.strip()):
            return f"item {name!r} is missing or not a single line of at most " \
                   f"{CARD_ITEM_MAX[name]} characters"
        items[name] = value
    try:
        datetime.strptime(items["birth"], "%Y-%m-%d")
    except ValueError:
        return "item 'birth' must be a date YYYY-MM-DD"
    if items["sex"] not in SEX_LABELS:
        return "item 'sex' must be the ISO 5218 code 0, 1, 2 or 9"
    return items


def _card_state(session_id: str, meta: dict[str, str], state: str,
                fields: dict[str, str]) -> bool:
    """Record a step of the card flow: session hash, the call's timeline, the consoles.
    False when the session ended meanwhile (nothing is written then)."""
    values = {name: "" for name in CARD_FIELDS}
    values.update(fields)
    values["card_state"] = state
    values["card_at"] = f"{time.time():.3f}"
    if not write_if_live(get_redis(), kk(), session_id, kk().session(session_id), values):
        return False
    call_id = meta.get("call_id", "")
    if not call_id:
        return True
    data: dict[str, Any] = {"state": state}
    if fields.get("card_error"):
        data["error"] = fields["card_error"]
    if fields.get("card_tries"):
        data["tries_left"] = int(fields["card_tries"])
    _timeline(call_id, "kiosk_card", data, f"kiosk_card:{state}:{values['card_at']}")
    publish(KioskCardState(call_id=call_id, tenant=meta.get("tenant", ""), state=state,
                           error=fields.get("card_error", "")))
    return True


@bp.post("/api/session/<session_id>/card")
@csrf_exempt
def card_step(session_id: str) -> Response:
    """The kiosk page reports the card flow: the citizen's consent, the steps, an error
    (with the card agent's operator notice), and finally the four items. The PIN never
    comes here: the page sends it to the card agent on its own machine only."""
    meta = _session_meta(session_id)
    if meta is None:
        return _error(404, "no_session", "no such session (ended, or a wrong token)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "bad_body", "send a JSON object with 'state'")
    if "pin" in body:
        return _error(400, "pin_refused", "the PIN is never sent to the server")
    state = body.get("state")
    if state not in CARD_STATES or state == "requested":
        return _error(400, "bad_state", "state must be one of " +
                      ", ".join(s for s in CARD_STATES if s != "requested"))
    if not meta.get("agent"):
        return _error(409, "not_connected", "the card can be read only during a call")
    current = meta.get("card_state", "")
    if state in ("consented", "declined"):
        if current != "requested":
            return _error(409, "not_requested", "the operator has not asked for the card")
    elif current not in CARD_ACTIVE:
        return _error(409, "no_consent", "no card read the citizen agreed to is under way")
    settings = get_settings()
    fields: dict[str, str] = {}
    if state == "error":
        error = body.get("error")
        if error not in CARD_ERRORS:
            return _error(400, "bad_error", "error must be one of " + ", ".join(CARD_ERRORS))
        fields["card_error"] = str(error)
        tries = body.get("tries_left")
        if tries is not None:
            if not isinstance(tries, int) or isinstance(tries, bool) or not 0 <= tries <= 15:
                return _error(400, "bad_tries", "tries_left must be a whole number 0-15")
            fields["card_tries"] = str(tries)
        for name, field, limit in (("operator_notice_ja", "card_notice_ja", 300),
                                   ("operator_notice_en", "card_notice_en", 300),
                                   ("detail", "card_detail", 200)):
            text = _clean_text(body.get(name, ""), limit)
            if text is None:
                return _error(400, "bad_notice", f"{name} must be one line of at most "
                              f"{limit} characters")
            fields[field] = text
    if state == "read":
        items = card_items(body.get("items"))
        if isinstance(items, str):
            return _error(400, "bad_items", items)
        if not write_if_live(get_redis(), kk(), session_id, kk().card(session_id), items,
                             settings.kiosk.session_max_hours * 3600, replace=True):
            return _error(404, "no_session", "the session ended meanwhile; nothing was kept")
        kiosk = meta.get("kiosk", "")
        audit.write(resources().factory, audit.Actor(name=f"kiosk:{kiosk}",
                                                     tenant_id=meta.get("tenant", ""),
                                                     remote_addr=remote_addr(), source="kiosk"),
                    "kiosk_card.read", object_type="call", object_id=meta.get("call_id", ""),
                    tenant_id=meta.get("tenant", ""))
        logger.info("kiosk %s: card data read for session %s", kiosk, session_id[:8])
    if not _card_state(session_id, meta, str(state), fields):
        return _error(404, "no_session", "the session ended meanwhile")
    return jsonify({"ok": True})


@bp.post("/api/survey")
@csrf_exempt
def survey() -> Response:
    token = request.headers.get("X-Kiosk-Session", "")
    body = request.get_json(silent=True) or {}
    score = body.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        return _error(400, "bad_score", "score must be a whole number from 1 to 5")
    r = get_redis()
    key = kk().survey(token_hash(token)) if token else ""
    call_id: Any = r.getdel(key) if key else None
    if call_id is None:
        return _error(404, "no_survey", "no finished call to rate from this session")
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


def _timeline(call_id: str, kind: str, data: dict[str, Any], dedup: str) -> None:
    try:
        with resources().factory() as db, db.begin():
            if db.get(Call, call_id) is not None:
                db.add(CallEvent(call_id=call_id, at=datetime.now(UTC), kind=kind,
                                 source="web", dedup_key=dedup, data=data))
    except Exception:  # noqa: BLE001 - the still is kept; only its timeline row is missing
        logger.exception("timeline row %s for %s not written", kind, call_id)


# ------------------------------------------------------------- console: a kiosk call


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
    assert user is not None
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
        return _error(400, "bad_offer", "send the browser's SDP offer as 'sdp'")
    user = current_user()
    assert user is not None
    reply = bridge_request(KioskBridgeRequest(action="view", session_id=session_id, sdp=sdp,
                                              viewer=str(user.id)),
                           instance=meta.get("bridge", ""))
    if reply is None:
        return _error(503, "bridge_unavailable", "the video bridge did not answer")
    if not reply.ok:
        return _error(409, reply.code, reply.error)
    audit_event("kiosk_video.view", object_type="call", object_id=call_id)
    return jsonify({"ok": True, "sdp": reply.sdp})


@console_bp.post("/<call_id>/still-request")
@login_required(roles=("operator", "staff", "supervisor"))
def request_still(call_id: str) -> Response:
    session_id, _meta = _call_session(call_id)
    if not request_if_live(get_redis(), kk(), session_id, "still",
                           get_settings().kiosk.session_max_hours * 3600):
        return _error(409, "not_connected", "the kiosk call has ended")
    return jsonify({"ok": True})


@console_bp.post("/<call_id>/card-request")
@login_required(roles=("operator", "staff", "supervisor"))
def request_card(call_id: str) -> Response:
    """Ask the citizen at the kiosk to read their My Number card (they must agree)."""
    session_id, meta = _call_session(call_id)
    if not meta.get("agent"):
        return _error(409, "not_connected", "the kiosk call is not connected")
    if meta.get("card_state") in CARD_ACTIVE and meta.get("card_state") != "error":
        return _error(409, "card_in_progress", "a card read is already under way")
    if not _card_state(session_id, meta, "requested", {}) or not request_if_live(
            get_redis(), kk(), session_id, "card", get_settings().kiosk.session_max_hours * 3600):
        return _error(409, "not_connected", "the kiosk call has ended")
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
        return _error(404, "no_card_data", "no card data for this call")
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


# ------------------------------------------------------------------ maintainer: fleet


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
    assert user is not None
    settings = get_settings()
    return render_template("kiosk/fleet.html", kiosks=fleet_status(settings, user.tenant_id),
                           actions=FLEET_ACTIONS, devices=DEVICES)


@fleet_bp.get("/status.json")
@login_required(roles=("administrator", "supervisor"))
def fleet_json() -> Response:
    user = current_user()
    assert user is not None
    return jsonify({"kiosks": fleet_status(get_settings(), user.tenant_id)})


def _own_kiosk(kiosk_id: str) -> Kiosk:
    """The viewer's tenant's kiosk of that id, or 404 (another tenant's is not found)."""
    user = current_user()
    assert user is not None
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
        return _error(400, "bad_action", f"action must be one of {', '.join(FLEET_ACTIONS)}")
    try:
        get_redis().rpush(kk().actions(kiosk_id), action)
    except RedisError as exc:
        return _error(503, "redis", f"the action was not queued: {exc}")
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
