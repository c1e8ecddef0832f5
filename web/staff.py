"""The staff member's view: the case card of a call transferred to their extension.

A ``call.transfer`` event naming the staff member's extension (``result`` ringing or
consulting) makes their open page load the case card (caller, the operator's escalation
note, FAQ items tried, transcript so far). Staff add notes the operator sees live
(``web.cases``) and set the outcome after the call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from common.console_events import DISPOSITIONS, CaseOutcome
from common.models.accounts import STAFF
from common.models.calls import CallEvent
from web import console
from web.access import audit_event, login_required
from web.cases import (
    Reply,
    answer,
    card_context,
    disposition_labels,
    load_case,
    me,
    transfer_labels,
)
from web.db import get_db, get_keys, get_redis
from web.forms import field, has_control_chars
from web.sse import latest_id
from web.views import register_nav

bp = Blueprint("staff", __name__, url_prefix="/staff")
ROLES = {STAFF}
#: Transfer steps after which the staff member has (or is about to have) the caller.
OPEN_STEPS = ("started", "ringing", "consulting", "answered")

register_nav("staff.index", _l("Transferred calls"), ROLES, order=20)


@bp.get("/")
@login_required(roles=ROLES)
def index() -> str:
    user = me()
    rows = console.staff_calls(get_db(), user.tenant_id, user.extension or "") \
        if user.extension else []
    if request.args.get("partial") == "transfers":  # refreshed live by console.js
        return render_template("staff/_transfers.html", rows=rows, labels=transfer_labels())
    # a call ringing at (or connected to) the staff member now: its card at once
    ctx: dict[str, Any] = {}
    live = next((call for call, ev in rows if call.status == "active"
                 and (ev.data or {}).get("result") in OPEN_STEPS), None)
    if live is not None:
        audit_event("case.view", object_type="case", object_id=live.id)
        ctx = card_context(live, STAFF)
    return render_template("staff/index.html", rows=rows, labels=transfer_labels(),
                           last_id=latest_id(get_redis(), get_keys()), live=live, **ctx)


@bp.post("/calls/<call_id>/outcome")
@login_required(roles=ROLES)
def outcome(call_id: str) -> Reply:
    call, role = load_case(call_id)
    target = url_for("cases.card", call_id=call.id)
    if role != STAFF:
        return answer(False, _("This call was not transferred to you."), target, status=403)
    disposition = field("disposition", 32)
    notes = field("notes", console.WRAPUP_NOTES_MAX)
    errors = []
    if disposition not in DISPOSITIONS:
        errors.append(_("Choose how the call ended."))
    if len(notes) > console.WRAPUP_NOTES_MAX:
        errors.append(_("Notes can be at most %(n)d characters.", n=console.WRAPUP_NOTES_MAX))
    if any(has_control_chars(line) for line in notes.splitlines()):
        errors.append(_("The notes contain characters that cannot be saved."))
    if errors:
        return answer(False, " ".join(errors), target, status=400)
    user = me()
    db = get_db()
    key = f"staff_outcome:{user.id}"
    data = {"disposition": disposition, "notes": notes,
            "author": user.display_name or user.username}
    row = db.scalars(select(CallEvent).where(CallEvent.call_id == call.id,
                                             CallEvent.dedup_key == key)).first()
    if row is None:
        db.add(CallEvent(call_id=call.id, at=datetime.now(UTC), kind="staff_outcome",
                         source="web", dedup_key=key, data=data))
    else:
        row.data = data
        row.at = datetime.now(UTC)
    db.commit()
    console.publish(CaseOutcome(call_id=call.id, tenant=call.tenant_id,
                                disposition=disposition, author_role=STAFF))
    audit_event("case.outcome", object_type="case", object_id=call.id)
    return answer(True, _("Saved: %(what)s.", what=disposition_labels()[disposition]),
                   target)
