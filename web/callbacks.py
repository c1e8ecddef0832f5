"""The callback list of the tenant's services, shared by the operator and supervisor pages.

A callback (``common.models.Callback``, booked by the controller, docs/callcenter.md) is
listed while it is open (pending, placed, connecting: first, oldest request first) and
on the day it was requested or closed (newest first). The citizen's number is masked,
except for supervisors and for the operator whose phone is handling the callback right
now; every unmasked view is audited (``callback.view``, at most once per user and
callback every ``SEEN_TTL`` seconds so that live refreshes do not flood the trail). The
number is never logged.

A supervisor may cancel a callback that is waiting (pending) or holding its place in the
queue (placed): the row becomes ``failed`` with ``last_result = cancelled``. The
controller keeps no copy of that state: when the placeholder holding the place reaches
an operator, ``ari_app.callbacks.CallbackService.operator_reached`` reads the row, sees
that it is closed and hangs the placeholder up instead of dialling the citizen. A
callback that is already dialling (connecting) cannot be cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import abort
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from common import audit
from common.models.accounts import OPERATOR, SUPERVISOR, User
from common.models.callbacks import Callback
from common.models.calls import Call, CallEvent
from web import console
from web.access import actor, ensure_tenant
from web.db import get_keys, get_redis, get_settings, resources

OPEN = ("pending", "placed", "connecting")
SITE_LOST = "site_lost"  # Callback.reason of a call cut by the loss of its site
CANCELLABLE = ("pending", "placed")
CANCELLED = "cancelled"
LIST_MAX = 200
ID_MAX = 2**31 - 1  # ids beyond a 32-bit integer cannot exist (and PostgreSQL refuses them)
SERVICE_ID_MAX = 64
SEEN_TTL = 600


def status_labels() -> dict[str, str]:
    return {"pending": _("Waiting its turn"), "placed": _("Holding its place"),
            "connecting": _("Dialling the citizen"), "completed": _("Called back"),
            "failed": _("Not reached")}


def result_labels() -> dict[str, str]:
    return {"answered": _("The citizen answered"), "busy": _("Line busy"),
            "no_answer": _("No answer"), "unavailable": _("Could not be dialled"),
            CANCELLED: _("Cancelled by a supervisor")}


def mask(number: str) -> str:
    """``090****5678``: the area prefix and the last four digits (as on the timeline);
    short numbers are masked entirely."""
    if len(number) < 10:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


@dataclass
class CallbackRow:
    id: int
    call_id: str
    service: str
    status: str
    position: int
    attempts: int
    max_attempts: int
    requested_at: datetime
    next_attempt_at: datetime | None
    completed_at: datetime | None
    last_result: str
    number: str
    unmasked: bool
    case_link: bool
    cancellable: bool
    cut: bool = False  # a call cut by the loss of its operator site

    @property
    def open(self) -> bool:
        return self.status in OPEN


def _service_names() -> dict[str, str]:
    english = str(get_locale()) == "en"
    return {s.id: s.name_en if english and s.name_en else s.name
            for s in get_settings().services}


def valid_service(tenant_id: str, service_id: str) -> bool:
    return any(s.id == service_id for s in console.tenant_services(tenant_id))


def load(db: Session, tenant_id: str, service_id: str = "",
         now: datetime | None = None) -> list[Callback]:
    """Open callbacks (calls cut by a lost site first, then oldest request first), then
    today's closed ones (newest first)."""
    since = console.day_start(get_settings(), now)
    where = [Callback.tenant_id == tenant_id]
    if service_id:
        where.append(Callback.service_id == service_id)
    open_rows = list(db.scalars(
        select(Callback).where(*where, Callback.status.in_(OPEN))
        # calls cut by the loss of a site first (docs/sites.md), then oldest first
        .order_by(Callback.reason.is_(None), Callback.requested_at, Callback.id)
        .limit(LIST_MAX)))
    closed = list(db.scalars(
        select(Callback).where(*where, Callback.status.not_in(OPEN),
                               or_(Callback.requested_at >= since,
                                   Callback.completed_at >= since))
        .order_by(Callback.requested_at.desc(), Callback.id.desc())
        .limit(max(0, LIST_MAX - len(open_rows)))))
    return open_rows + closed


def _handlers(db: Session, rows: list[Callback]) -> dict[int, str]:
    """callback id -> the operator phone handling it now (connecting callbacks only).

    ``callbacks.agent`` when the controller fills it, else the newest
    ``callback_agent_connect`` step of the original call's timeline."""
    connecting = [r for r in rows if r.status == "connecting"]
    out = {r.id: r.agent for r in connecting if r.agent}
    missing = {r.call_id: r.id for r in connecting if not r.agent}
    if missing:
        events = db.scalars(
            select(CallEvent).where(CallEvent.call_id.in_(list(missing)),
                                    CallEvent.kind == "callback_agent_connect")
            .order_by(CallEvent.at.desc(), CallEvent.id.desc()))
        for ev in events:
            cb_id = missing.pop(ev.call_id, None)
            agent = (ev.data or {}).get("agent") if cb_id is not None else None
            if cb_id is not None and isinstance(agent, str) and agent:
                out[cb_id] = agent
    return out


def rows_for(db: Session, user: User, service_id: str = "") -> list[CallbackRow]:
    """The list as ``user`` may see it; unmasked numbers are audited."""
    callbacks = load(db, user.tenant_id, service_id)
    supervisor = SUPERVISOR in user.roles
    endpoint = (user.sip_endpoint or "") if OPERATOR in user.roles else ""
    handlers = _handlers(db, callbacks) if endpoint and not supervisor else {}
    own_calls: set[str] = set()
    if endpoint and not supervisor and callbacks:
        own_calls = set(db.scalars(select(Call.id).where(
            Call.id.in_({c.call_id for c in callbacks}), Call.tenant_id == user.tenant_id,
            Call.agent == endpoint)))
    names = _service_names()
    out = []
    for cb in callbacks:
        unmasked = supervisor or (bool(endpoint) and handlers.get(cb.id) == endpoint)
        out.append(CallbackRow(
            id=cb.id, call_id=cb.call_id, service=names.get(cb.service_id, cb.service_id),
            status=cb.status, position=cb.position or 0, attempts=cb.attempts or 0,
            max_attempts=cb.max_attempts or 0, requested_at=cb.requested_at,
            next_attempt_at=cb.next_attempt_at if cb.status == "pending" else None,
            completed_at=cb.completed_at, last_result=cb.last_result or "",
            number=cb.number if unmasked else mask(cb.number or ""), unmasked=unmasked,
            case_link=supervisor or cb.call_id in own_calls,
            cancellable=supervisor and cb.status in CANCELLABLE,
            cut=cb.reason == SITE_LOST))
    audit_unmasked(user, [r.id for r in out if r.unmasked])
    return out


def _seen_key(user: User, callback_id: int) -> str:
    return f"{get_keys().prefix}:console:callback_seen:{user.id}:{callback_id}"


def audit_unmasked(user: User, ids: list[int]) -> None:
    """One ``callback.view`` entry per callback whose number ``user`` was shown (again
    after ``SEEN_TTL`` seconds); the number itself is not recorded."""
    if not ids:
        return
    pipe = get_redis().pipeline(transaction=False)
    for cb_id in ids:
        pipe.set(_seen_key(user, cb_id), "1", nx=True, ex=SEEN_TTL)
    fresh = [cb_id for cb_id, new in zip(ids, pipe.execute(), strict=True) if new]
    if not fresh:
        return
    who = actor(user)
    with resources().factory() as db, db.begin():
        for cb_id in fresh:
            audit.record(db, who, "callback.view", object_type="callback", object_id=cb_id)


def get_or_404(db: Session, callback_id: int) -> Callback:
    """The callback of the user's tenant (another tenant's answers 404, audited)."""
    if callback_id > ID_MAX:
        abort(404)
    callback = db.get(Callback, callback_id)
    if callback is None:
        abort(404)
    ensure_tenant(callback.tenant_id, object_type="callback", object_id=callback_id)
    return callback


def cancel(db: Session, callback: Callback) -> bool:
    """Close a waiting or placed callback (one UPDATE, so a callback that the controller
    moved on meanwhile is left alone). True when it was cancelled."""
    result = db.execute(
        update(Callback)
        .where(Callback.id == callback.id, Callback.tenant_id == callback.tenant_id,
               Callback.status.in_(CANCELLABLE))
        .values(status="failed", last_result=CANCELLED, completed_at=datetime.now(UTC),
                next_attempt_at=None)
        .execution_options(synchronize_session=False))
    db.commit()
    return bool(getattr(result, "rowcount", 0))
