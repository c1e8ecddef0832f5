"""The case card of a call, shared by the operator, staff and supervisor pages.

Who may open a case: the operator whose phone took the call, a staff member whose
extension a transfer of the call targeted, a supervisor of the tenant. Every opening is
audited (``case.view``); notes are added here and announced live (``case.note``).
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from common.models.accounts import OPERATOR, STAFF, SUPERVISOR, User
from common.models.calls import Call
from web import console, contacts
from web.access import audit_event, audit_view, current_user, deny, ensure_tenant, login_required
from web.db import get_db, get_settings
from web.forms import field, has_control_chars

bp = Blueprint("cases", __name__, url_prefix="/calls")
CASE_ROLES = {OPERATOR, STAFF, SUPERVISOR}
CALL_ID_MAX = 64
#: Transfer steps (``transfer`` rows' result) while it is still under way.
TRANSFER_OPEN = ("started", "ringing", "consulting")

Reply = str | tuple[str, int] | WerkzeugResponse | tuple[WerkzeugResponse, int]


def me() -> User:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    return user


def wants_fetch() -> bool:
    """A request made by the page's script (answered with JSON, not a redirect)."""
    return request.headers.get("X-Requested-With") == "fetch" or request.is_json


def answer(ok: bool, message: str, target: str, *, status: int = 200,
            **extra: Any) -> Reply:
    """JSON for the page's script, else a flash message and a redirect (303)."""
    if wants_fetch():
        return jsonify({"ok": ok, "message": message, **extra}), status if not ok else 200
    flash(message, "success" if ok else "error")
    return redirect(target), 303


def role_for(call: Call, user: User) -> str | None:
    """The role under which ``user`` may open ``call``'s case, or None."""
    if OPERATOR in user.roles and user.sip_endpoint and call.agent == user.sip_endpoint:
        return OPERATOR
    if STAFF in user.roles and user.extension and \
            console.transferred_to(get_db(), call.id, user.extension):
        return STAFF
    if SUPERVISOR in user.roles:
        return SUPERVISOR
    return None


def load_case(call_id: str) -> tuple[Call, str]:
    """The call (of the user's tenant, one they may see) and the role they see it as."""
    if len(call_id) > CALL_ID_MAX or has_control_chars(call_id):
        abort(404)
    call = get_db().get(Call, call_id)
    if call is None:
        abort(404)
    ensure_tenant(call.tenant_id, object_type="case", object_id=call_id)
    role = role_for(call, me())
    if role is None:
        deny("not_assigned", object_type="case", object_id=call_id, status=404)
        raise AssertionError("unreachable")
    return call, role


def card_context(call: Call, role: str) -> dict[str, Any]:
    """Everything the case card template shows."""
    db = get_db()
    settings = get_settings()
    days = settings.web.earlier_contacts_days
    used = console.faq_used(db, call.id)
    transfer_steps = console.transfers(db, call.id)
    escalation = next((str((t.data or {}).get("note", "")) for t in reversed(transfer_steps)
                       if (t.data or {}).get("note")), "")
    svc = console.service_by_id(call.service_id)
    last = (transfer_steps[-1].data or {}) if transfer_steps else {}
    in_progress = last.get("result") in TRANSFER_OPEN
    return {
        "call": call,
        "role": role,
        "service": svc,
        "wait": console.wait_seconds(call),
        "earlier": contacts.earlier_contacts(db, call, days),
        "earlier_days": days,
        "outcomes": outcome_labels(),
        "transcript": console.transcript(call.id),
        "suggestions": console.suggestions(call.id),
        "transcription_state": console.transcription_state(call.id),
        "notes": console.notes(db, call.id),
        "faq_used": used,
        "faq_titles": console.faq_titles(db, used, call.tenant_id),
        "transfers": transfer_steps,
        # a transfer under way: no new one; complete or cancel only an attended one
        "transfer_in_progress": in_progress,
        "can_complete": in_progress and last.get("kind") == "attended"
        and last.get("result") == "consulting",
        "can_cancel": in_progress and last.get("kind") == "attended",
        # the caller is with the staff member now (the operator's part has ended)
        "handed_over": last.get("result") == "answered",
        "escalation_note": escalation,
        "departments": console.tenant_departments(call.tenant_id),
        "presence": console.presence([e for d in console.tenant_departments(call.tenant_id)
                                      for e in d.extensions]),
        "dispositions": disposition_labels(),
        "presence_labels": presence_labels(),
        "transfer_labels": transfer_labels(),
        "transfer_reasons": transfer_reason_labels(),
    }


def presence_labels() -> dict[str, str]:
    return {"not_in_use": _("Available"), "in_use": _("On a call"), "busy": _("Busy"),
            "ringing": _("Ringing"), "on_hold": _("On hold"),
            "unavailable": _("Unavailable"), "unknown": _("Unknown")}


def transfer_labels() -> dict[str, str]:
    return {"started": _("Transfer started"), "ringing": _("Ringing"),
            "consulting": _("Operator on the line"), "answered": _("Connected"),
            "failed": _("Failed"), "returned": _("Returned to the operator"),
            "abandoned": _("Caller hung up")}


def transfer_reason_labels() -> dict[str, str]:
    """Why a transfer did not reach the staff member or came back (ari_app.transfers)."""
    return {"busy": _("the line was busy"), "no_answer": _("no answer"),
            "unavailable": _("the phone is not reachable"), "rejected": _("declined"),
            "cancelled": _("the operator went back to the caller"),
            "staff_hung_up": _("the staff member hung up"),
            "operator": _("back with the operator"),
            "queue_front": _("the operator did not answer; the caller waits first in line")}


def outcome_labels() -> dict[str, str]:
    """How a contact ended (``Call.outcome``), for the earlier contacts."""
    return {"answered": _("Answered"), "abandoned": _("Hung up while waiting"),
            "rejected": _("Not accepted"), "out_of_hours": _("Outside service hours"),
            "callback": _("Callback booked"),
            "site_lost": _("Cut by the loss of the operator site")}


def disposition_labels() -> dict[str, str]:
    return {
        "resolved_faq": _("Resolved by FAQ"),
        "e_application_help": _("E-application help"),
        "complaint": _("Complaint"),
        "escalated": _("Escalated"),
        "other": _("Other"),
    }


@bp.get("/<call_id>")
@login_required(roles=CASE_ROLES)
def card(call_id: str) -> Reply:
    call, role = load_case(call_id)
    audit_view("case", call.id)
    ctx = card_context(call, role)
    if request.args.get("partial") == "1":
        return render_template("console/_case_card.html", **ctx)
    return render_template("console/case.html", **ctx)


@bp.get("/<call_id>/notes")
@login_required(roles=CASE_ROLES)
def notes(call_id: str) -> Reply:
    call, _role = load_case(call_id)
    return render_template("console/_notes.html", call=call,
                           notes=console.notes(get_db(), call.id))


@bp.get("/<call_id>/live")
@login_required(roles=CASE_ROLES)
def live(call_id: str) -> Reply:
    """The live transcript and FAQ suggestion panes (refreshed on transcript.updated)."""
    call, _role = load_case(call_id)
    return render_template("console/_live.html", call=call,
                           transcript=console.transcript(call.id),
                           suggestions=console.suggestions(call.id),
                           transcription_state=console.transcription_state(call.id))


@bp.post("/<call_id>/notes")
@login_required(roles=CASE_ROLES)
def add_note(call_id: str) -> Reply:
    call, role = load_case(call_id)
    text = field("text", console.NOTE_MAX)
    error = None
    if not text:
        error = _("Write the note first.")
    elif len(text) > console.NOTE_MAX:
        error = _("A note can be at most %(n)d characters.", n=console.NOTE_MAX)
    elif any(has_control_chars(line) for line in text.splitlines()):
        error = _("The note contains characters that cannot be saved.")
    if error is not None:
        if wants_fetch():
            return jsonify({"ok": False, "error": error}), 400
        flash(error, "error")
        return redirect(url_for("cases.card", call_id=call.id)), 303
    row = console.add_note(get_db(), call, me(), role, text)
    if wants_fetch():
        return jsonify({"ok": True, "note_id": row.id})
    flash(_("The note was saved."), "success")
    return redirect(url_for("cases.card", call_id=call.id)), 303


@bp.post("/<call_id>/citizen-phone")
@login_required(roles={OPERATOR})
def citizen_phone(call_id: str) -> Reply:
    """The phone number a kiosk citizen stated, with their consent, to find their earlier
    contacts (a kiosk call has no number of its own). Kept as the call's ``citizen_ref``;
    the audit log records that it was set, not the number."""
    call, role = load_case(call_id)
    target = url_for("cases.card", call_id=call.id)
    if role != OPERATOR or call.channel != "kiosk":
        return answer(False, _("Only the operator of a kiosk call can add the citizen's "
                               "number."), target, status=409)
    if request.form.get("consent") != "yes":
        return answer(False, _("Ask the citizen first, and tick that they agreed."), target,
                      status=400)
    number = contacts.phone_number(field("number", 40))
    if number is None:
        return answer(False, _("Enter a phone number of 10 to 15 digits, for example "
                               "09012345678."), target, status=400)
    contacts.set_citizen_ref(get_db(), call, "tel:" + number)
    audit_event("case.citizen_phone", object_type="call", object_id=call.id)
    return answer(True, _("The citizen's earlier contacts are shown."), target, refresh_card=True)
