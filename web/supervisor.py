"""The supervisor's wallboard: per service, callers waiting, longest wait, today's answered
and abandoned calls, service level, and each operator's state with time in state.

Live figures come from the controller's Redis mirror of the queues, today's counts from
SQL; the page refreshes its board when a queue or call event arrives on the event
stream. Listen / whisper / barge are commands to the controller
(``cmd.supervisor.listen``, ``common.console_events``).
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from common.console_events import LISTEN_MODES, SupervisorListen
from common.models.accounts import SUPERVISOR
from web import callbacks, console
from web.access import audit_event, login_required
from web.cases import Reply, answer, load_case, me
from web.db import get_db, get_keys, get_redis
from web.forms import field
from web.operator import callback_context, pause_labels, state_labels
from web.sse import latest_id
from web.views import register_nav

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor")
ROLES = {SUPERVISOR}

register_nav("supervisor.wallboard", _l("Wallboard"), ROLES, order=30)
register_nav("supervisor.callbacks", _l("Callbacks"), ROLES, order=35)


def mode_labels() -> dict[str, str]:
    return {"listen": _("Listen"), "whisper": _("Whisper"), "barge": _("Barge in")}


@bp.get("/wallboard")
@login_required(roles=ROLES)
def wallboard() -> Reply:
    user = me()
    boards = console.wallboard(user.tenant_id)
    ctx = {"boards": boards, "state_labels": state_labels(), "pause_labels": pause_labels(),
           "modes": mode_labels(), "has_phone": bool(user.sip_endpoint or user.extension)}
    if request.args.get("partial") == "1":
        return render_template("supervisor/_boards.html", **ctx)
    return render_template("supervisor/wallboard.html",
                           last_id=latest_id(get_redis(), get_keys()), **ctx)


@bp.get("/wallboard.json")
@login_required(roles=ROLES)
def wallboard_json() -> Reply:
    return jsonify({"services": console.wallboard(me().tenant_id)})


@bp.post("/calls/<call_id>/listen")
@login_required(roles=ROLES)
def listen(call_id: str) -> Reply:
    call, _role = load_case(call_id)
    user = me()
    target = url_for("supervisor.wallboard")
    mode = field("mode", 16)
    phone = user.sip_endpoint or user.extension or ""
    if mode not in LISTEN_MODES:
        return answer(False, _("Choose listen, whisper or barge in."), target, status=400)
    if not phone:
        return answer(False, _("No phone is set for your account. Ask an administrator."),
                      target, status=400)
    if call.status != "active":
        return answer(False, _("This call has ended."), target, status=409)
    command_id = console.send(SupervisorListen(tenant=call.tenant_id, call_id=call.id,
                                               mode=mode, endpoint=phone,
                                               supervisor=str(user.id)), user)
    audit_event(f"case.{mode}", object_type="case", object_id=call.id)
    return answer(True, _("Sent. Your phone rings when the phone system connects you."),
                  target, command_id=command_id)


# -------------------------------------------------------------------- callbacks


@bp.get("/callbacks", endpoint="callbacks")
@login_required(roles=ROLES)
def callbacks_page() -> Reply:
    """The tenant's callbacks (``?service=`` one service; ``?partial=1`` the table)."""
    user = me()
    service = (request.args.get("service") or "")[:callbacks.SERVICE_ID_MAX + 1]
    if service and not callbacks.valid_service(user.tenant_id, service):
        abort(400)
    ctx = callback_context(user, service)
    if request.args.get("partial") == "1":
        return render_template("console/_callbacks.html", **ctx)
    return render_template(
        "console/callbacks.html", list_url=url_for("supervisor.callbacks", partial=1,
                                                   service=service or None),
        last_id=latest_id(get_redis(), get_keys()), service=service,
        services=console.tenant_services(user.tenant_id), **ctx)


@bp.post("/callbacks/<int:callback_id>/cancel")
@login_required(roles=ROLES)
def cancel_callback(callback_id: int) -> Reply:
    db = get_db()
    callback = callbacks.get_or_404(db, callback_id)
    target = url_for("supervisor.callbacks")
    if not callbacks.cancel(db, callback):
        db.refresh(callback)  # the controller may have moved it on meanwhile
        if callback.status == "connecting":
            return answer(False, _("The citizen is being dialled now; this callback can no "
                                   "longer be cancelled."), target, status=409)
        return answer(False, _("This callback is already closed."), target, status=409)
    audit_event("callback.cancel", object_type="callback", object_id=callback_id)
    return answer(True, _("The callback was cancelled."), target)
