"""The supervisor's wallboard: per service, callers waiting, longest wait, today's answered
and abandoned calls, service level, and each operator's state with time in state.

Live figures come from the controller's Redis mirror of the queues, today's counts from
SQL; the page refreshes its board when a queue or call event arrives on the event
stream. Listen / whisper / barge are commands to the controller
(``cmd.supervisor.listen``, ``common.console_events``).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from common.console_events import LISTEN_MODES, SupervisorListen
from common.models.accounts import SUPERVISOR
from web import console
from web.access import audit_event, login_required
from web.cases import Reply, answer, load_case, me
from web.db import get_keys, get_redis
from web.forms import field
from web.operator import pause_labels, state_labels
from web.sse import latest_id
from web.views import register_nav

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor")
ROLES = {SUPERVISOR}

register_nav("supervisor.wallboard", _l("Wallboard"), ROLES, order=30)


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
