"""The operator's console: queue state, the case card of the call in hand, wrap-up,
FAQ search and the transfer panel.

State changes and transfers are commands to the controller (``common.commands``); the
page shows their ``command.result`` and the queue events that follow over the event
stream (``web.sse``). Wrap-up (notes, disposition, FAQ items used) is saved to SQL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.commands import (
    PAUSE_REASONS,
    AgentLogin,
    AgentLogout,
    AgentPause,
    AgentUnpause,
    CallTransfer,
    CallTransferCancel,
    CallTransferComplete,
)
from common.console_events import DISPOSITIONS, CaseOutcome
from common.events import Event
from common.models.accounts import OPERATOR, User
from common.models.calls import Call, CallEvent
from faq import usage
from web import callbacks, console
from web.access import audit_event, login_required
from web.cases import Reply, answer, card_context, disposition_labels, load_case, me, wants_fetch
from web.db import get_db, get_keys, get_redis, get_settings
from web.forms import field, has_control_chars
from web.sse import latest_id
from web.views import register_nav

#: After-call work longer than this is not counted (the operator left the page open).
WRAPUP_MAX_SECONDS = 1800

bp = Blueprint("operator", __name__, url_prefix="/operator")
ROLES = {OPERATOR}
FAQ_QUERY_MAX = 200
FAQ_ITEMS_MAX = 20
ITEM_IDS_RE = re.compile(r"^\s*\d{1,9}(\s*[,、\s]\s*\d{1,9})*\s*$")

register_nav("operator.console", _l("Operator console"), ROLES, order=10)


def pause_labels() -> dict[str, str]:
    return {"break": _("Break"), "after_call_work": _("After-call work"),
            "training": _("Training"), "meeting": _("Meeting"), "other": _("Other")}


def state_labels() -> dict[str, str]:
    return {"offline": _("Logged out"), "ready": _("Ready"), "paused": _("Paused"),
            "after_call_work": _("After-call work"), "in_call": _("On a call"),
            "no_phone": _("Phone not connected"),
            "busy_elsewhere": _("On a call for another service")}


def _no_phone(user: User) -> Reply | None:
    if not user.sip_endpoint:
        return answer(False, _("No softphone is set for your account. Ask an administrator."),
                       url_for("operator.console"), status=400)
    return None


@bp.get("/", endpoint="console")
@login_required(roles=ROLES)
def console_page() -> str:
    user = me()
    db = get_db()
    endpoint = user.sip_endpoint or ""
    call = console.current_call(db, user.tenant_id, endpoint) if endpoint else None
    ctx: dict[str, Any] = {}
    if call is not None:
        audit_event("case.view", object_type="case", object_id=call.id)
        ctx = card_context(call, OPERATOR)
    return render_template(
        "operator/console.html", member=console.member_state(user.tenant_id, endpoint),
        state_labels=state_labels(), pause_labels=pause_labels(), reasons=PAUSE_REASONS,
        current=call, recent=console.recent_calls(db, user.tenant_id, endpoint)
        if endpoint else [], last_id=latest_id(get_redis(), get_keys()),
        services=console.tenant_services(user.tenant_id),
        phone_extension=dict(get_settings().operators.endpoints()).get(endpoint, ""),
        all_dispositions=disposition_labels(), **callback_context(user), **ctx)


def callback_context(user: User, service_id: str = "") -> dict[str, Any]:
    """What the callback list template needs (the list as ``user`` may see it)."""
    return {"callbacks": callbacks.rows_for(get_db(), user, service_id),
            "callback_labels": callbacks.status_labels(),
            "callback_results": callbacks.result_labels()}


@bp.get("/callbacks")
@login_required(roles=ROLES)
def callback_list() -> Reply:
    """The callbacks of the tenant's services (``?partial=1``: the table alone)."""
    user = me()
    ctx = callback_context(user)
    if request.args.get("partial") == "1":
        return render_template("console/_callbacks.html", **ctx)
    return render_template("console/callbacks.html", list_url=url_for(
        "operator.callback_list", partial=1), last_id=latest_id(get_redis(), get_keys()),
        services=[], service="", **ctx)


@bp.get("/state")
@login_required(roles=ROLES)
def state() -> Reply:
    user = me()
    member = console.member_state(user.tenant_id, user.sip_endpoint or "")
    if request.args.get("partial") == "1":
        return render_template("operator/_state.html", member=member,
                               state_labels=state_labels(), pause_labels=pause_labels(),
                               reasons=PAUSE_REASONS)
    return jsonify({**member.as_dict(), "label": state_labels()[member.state]})


@bp.post("/state")
@login_required(roles=ROLES)
def change_state() -> Reply:
    user = me()
    refused = _no_phone(user)
    if refused is not None:
        return refused
    endpoint = user.sip_endpoint or ""
    action = field("action", 16)
    reason = field("reason", 32)
    command: Event
    makes_ready = action == "ready" or (action == "login" and field("paused", 8) != "1")
    if makes_ready and console.member_state(user.tenant_id, endpoint).phone_down:
        return answer(False, _("Your phone is not connected. Start the softphone and wait "
                               "until it is registered, then try again."),
                       url_for("operator.console"), status=409)
    if action == "login":
        command = AgentLogin(tenant=user.tenant_id, endpoint=endpoint, operator=str(user.id),
                             paused=field("paused", 8) == "1")
    elif action == "logout":
        command = AgentLogout(tenant=user.tenant_id, endpoint=endpoint)
    elif action == "ready":
        command = AgentUnpause(tenant=user.tenant_id, endpoint=endpoint)
    elif action == "pause":
        if reason not in PAUSE_REASONS:
            return answer(False, _("Choose a reason for the pause."),
                           url_for("operator.console"), status=400)
        command = AgentPause(tenant=user.tenant_id, endpoint=endpoint, reason=reason)
    else:
        return answer(False, _("Unknown action."), url_for("operator.console"), status=400)
    command_id = console.send(command, user)
    audit_event(f"agent.{action}", object_type="endpoint", object_id=endpoint)
    return answer(True, _("Sent. The state changes when the phone system confirms it."),
                   url_for("operator.console"), command_id=command_id)


# ----------------------------------------------------------------------- wrap-up


def _item_ids(raw: str) -> list[int] | None:
    if not raw:
        return []
    if not ITEM_IDS_RE.match(raw):
        return None
    ids = sorted({int(x) for x in re.split(r"[,、\s]+", raw.strip()) if x})
    return ids if len(ids) <= FAQ_ITEMS_MAX else None


@bp.post("/calls/<call_id>/wrapup")
@login_required(roles=ROLES)
def wrapup(call_id: str) -> Reply:
    call, role = load_case(call_id)
    target = url_for("cases.card", call_id=call.id)
    if role != OPERATOR:
        return answer(False, _("Only the operator who took the call can close it."),
                       target, status=403)
    notes = field("notes", console.WRAPUP_NOTES_MAX)
    disposition = field("disposition", 32)
    items_raw = " ".join(request.form.getlist("faq_items"))[:400]
    errors = []
    if disposition not in DISPOSITIONS:
        errors.append(_("Choose how the call ended."))
    if len(notes) > console.WRAPUP_NOTES_MAX:
        errors.append(_("Notes can be at most %(n)d characters.", n=console.WRAPUP_NOTES_MAX))
    if any(has_control_chars(line) for line in notes.splitlines()):
        errors.append(_("The notes contain characters that cannot be saved."))
    ids = _item_ids(items_raw)
    db = get_db()
    if ids is None:
        errors.append(_("FAQ items: give item numbers separated by commas (at most %(n)d).",
                        n=FAQ_ITEMS_MAX))
    elif ids:
        known = console.faq_titles(db, ids, call.tenant_id)
        unknown = [i for i in ids if i not in known]
        if unknown:
            errors.append(_("No published FAQ item has the number %(ids)s.",
                            ids=", ".join(str(i) for i in unknown)))
    if errors:
        return answer(False, " ".join(errors), target, status=400)
    call.notes = notes or None
    call.disposition = disposition
    record_wrapup(db, call, disposition)
    already = set(console.faq_used(db, call.id))
    for item_id in ids or []:
        if item_id not in already:
            usage.record(db, item_id, "resolved" if disposition == "resolved_faq" else "used",
                         tenant=call.tenant_id, call_id=call.id, actor=me().username,
                         channel=call.channel)
    db.commit()
    console.publish(CaseOutcome(call_id=call.id, tenant=call.tenant_id,
                                disposition=disposition, author_role=OPERATOR))
    audit_event("case.wrapup", object_type="case", object_id=call.id)
    return answer(True, _("Saved: %(what)s.", what=disposition_labels()[disposition]),
                   target)


def record_wrapup(db: Session, call: Call, disposition: str) -> None:
    """After-call work: from the end of the operator's part of the call (app_queue's
    AgentComplete, else the call's end) to the first wrap-up; kept on the call and its
    timeline for the KPIs' handle time. A call still in progress has none."""
    if call.wrapup_seconds is not None:
        return
    finished = db.scalar(select(CallEvent.at).where(
        CallEvent.call_id == call.id, CallEvent.kind == "agent_complete")
        .order_by(CallEvent.at.desc()).limit(1)) or call.ended_at
    if finished is None:
        return
    now = datetime.now(UTC)
    seconds = max(0, min(int((now - finished).total_seconds()), WRAPUP_MAX_SECONDS))
    call.wrapup_seconds = seconds
    db.add(CallEvent(call_id=call.id, at=now, kind="wrapup_end", source="web",
                     dedup_key="wrapup_end",
                     data={"agent": call.agent, "seconds": seconds,
                           "disposition": disposition}))


# ------------------------------------------------------------------------- FAQ


@bp.get("/faq")
@login_required(roles=ROLES)
def faq() -> Reply:
    query = (request.args.get("q") or "").strip()[:FAQ_QUERY_MAX * 2]
    results: list[dict[str, Any]] = []
    error = ""
    if len(query) > FAQ_QUERY_MAX:
        error = _("The search text can be at most %(n)d characters.", n=FAQ_QUERY_MAX)
    elif query and not has_control_chars(query):
        searcher = console.faq_search()
        searcher.refresh(wait=searcher.generation == 0)
        for s in searcher.suggest(query, tenant=me().tenant_id, k=8):
            results.append({"item_id": s.item_id, "title": s.title, "category": s.category,
                            "department": s.department, "score": round(float(s.score), 3),
                            "matched_terms": list(s.matched_terms)})
    if request.args.get("partial") == "1":
        return render_template("operator/_faq_results.html", query=query, results=results,
                               error=error)
    if wants_fetch() or request.accept_mimetypes.best == "application/json":
        return jsonify({"query": query, "results": results, "error": error}), \
            400 if error else 200
    return render_template("operator/faq.html", query=query, results=results, error=error)


# -------------------------------------------------------------------- transfers


@bp.post("/calls/<call_id>/transfer")
@login_required(roles=ROLES)
def transfer(call_id: str) -> Reply:
    call, role = load_case(call_id)
    target_url = url_for("cases.card", call_id=call.id)
    if role != OPERATOR or call.status != "active":
        return answer(False, _("This call cannot be transferred now."), target_url,
                       status=409)
    kind = field("kind", 16)
    target = field("target", 64)
    note = field("note", console.TRANSFER_NOTE_MAX)
    departments = console.tenant_departments(call.tenant_id)
    valid_targets = {d.id for d in departments} | {e for d in departments
                                                    for e in d.extensions}
    errors = []
    if kind not in ("blind", "attended"):
        errors.append(_("Choose a blind or an attended transfer."))
    if target not in valid_targets:
        errors.append(_("Choose a department or an extension from the list."))
    if len(note) > console.TRANSFER_NOTE_MAX:
        errors.append(_("The escalation note can be at most %(n)d characters.",
                        n=console.TRANSFER_NOTE_MAX))
    if any(has_control_chars(line) for line in note.splitlines()):
        errors.append(_("The escalation note contains characters that cannot be saved."))
    if errors:
        return answer(False, " ".join(errors), target_url, status=400)
    command_id = console.send(CallTransfer(tenant=call.tenant_id, call_id=call.id, kind=kind,
                                           target=target, note=note), me())
    audit_event("case.transfer", object_type="case", object_id=call.id, reason=kind)
    return answer(True, _("Transfer requested."), target_url, command_id=command_id)


def _transfer_step(call_id: str, command: type[CallTransferComplete | CallTransferCancel],
                   action: str) -> Reply:
    call, role = load_case(call_id)
    target_url = url_for("cases.card", call_id=call.id)
    if role != OPERATOR:
        return answer(False, _("This call cannot be transferred now."), target_url,
                       status=409)
    command_id = console.send(command(tenant=call.tenant_id, call_id=call.id), me())
    audit_event(f"case.transfer_{action}", object_type="case", object_id=call.id)
    return answer(True, _("Sent."), target_url, command_id=command_id)


@bp.post("/calls/<call_id>/transfer/complete")
@login_required(roles=ROLES)
def transfer_complete(call_id: str) -> Reply:
    return _transfer_step(call_id, CallTransferComplete, "complete")


@bp.post("/calls/<call_id>/transfer/cancel")
@login_required(roles=ROLES)
def transfer_cancel(call_id: str) -> Reply:
    return _transfer_step(call_id, CallTransferCancel, "cancel")

