"""Administration: accounts of the administrator's own tenant, their sessions, the audit log.

Every route requires the ``administrator`` role; users of other tenants are invisible
(404, audited as a refused access). Changes and views are written to the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response as WerkzeugResponse

from common import audit
from common.models.accounts import ADMINISTRATOR, OPERATOR, ROLES, STAFF, AuditEntry, User
from web import accounts
from web.access import actor, audit_event, current_user, ensure_tenant, login_required
from web.auth import hasher, policy
from web.db import get_db, get_settings
from web.forms import choices, field, has_control_chars, secret_field
from web.sessions import RedisSession, interface
from web.views import register_nav

bp = Blueprint("admin", __name__, url_prefix="/admin")
ADMIN = {ADMINISTRATOR}
PAGE_SIZE = 50

register_nav("admin.users", _l("Users"), ADMIN, order=80)
register_nav("admin.audit_log", _l("Audit log"), ADMIN, order=90)

Page = str | tuple[str, int] | WerkzeugResponse


def _me() -> User:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    return user


def _load(user_id: int) -> User:
    user = get_db().get(User, user_id)
    if user is None:
        abort(404)
    ensure_tenant(user.tenant_id, object_type="user", object_id=user_id)
    return user


def _phones(tenant_id: str) -> dict[str, Any]:
    settings = get_settings()
    return {
        "endpoints": accounts.operator_endpoints(settings),
        "extensions": accounts.staff_extensions(settings, tenant_id),
        "departments": {d.id: d for d in settings.departments if d.tenant == tenant_id},
    }


@bp.get("/")
@login_required(roles=ADMIN)
def index() -> WerkzeugResponse:
    return redirect(url_for("admin.users"))


@bp.get("/users")
@login_required(roles=ADMIN)
def users() -> str:
    me = _me()
    rows = get_db().scalars(select(User).where(User.tenant_id == me.tenant_id)
                            .order_by(User.username)).all()
    audit_event("user.list", object_type="user")
    return render_template("admin/users.html", users=rows, role_labels=accounts.ROLE_LABELS,
                           now=accounts.now_utc())


@dataclass
class UserForm:
    username: str = ""
    display_name: str = ""
    roles: frozenset[str] = frozenset()
    sip_endpoint: str = ""
    extension: str = ""

    @classmethod
    def from_user(cls, user: User) -> UserForm:
        return cls(user.username, user.display_name, user.roles, user.sip_endpoint or "",
                   user.extension or "")


def _read_user_form(tenant_id: str, *, new: bool,
                    editing: User | None = None) -> tuple[UserForm, dict[str, str]]:
    phones = _phones(tenant_id)
    form = UserForm(
        username=field("username", 64).lower() if new else (editing.username if editing
                                                             else ""),
        display_name=field("display_name", 128),
        roles=frozenset(choices("roles", ROLES)),
        sip_endpoint=field("sip_endpoint", 64),
        extension=field("extension", 32),
    )
    errors: dict[str, str] = {}
    if new:
        if not form.username:
            errors["username"] = _("Enter a user name.")
        elif not accounts.valid_username(form.username):
            errors["username"] = _("Use 3 to 64 lower-case letters, digits, '.', '_' or '-', "
                                   "starting with a letter or digit.")
        elif accounts.find_user(get_db(), form.username) is not None:
            errors["username"] = _("This user name is already taken.")
    if len(form.display_name) > 128:
        errors["display_name"] = _("The display name must be at most 128 characters.")
    elif has_control_chars(form.display_name):
        errors["display_name"] = _("The display name contains characters that cannot be "
                                   "used.")
    if not form.roles:
        errors["roles"] = _("Choose at least one role.")
    elif OPERATOR in form.roles and STAFF in form.roles:
        errors["roles"] = _("A user cannot be both operator and staff.")
    if OPERATOR in form.roles and form.sip_endpoint not in phones["endpoints"]:
        errors["sip_endpoint"] = _("Choose the operator's softphone.")
    if STAFF in form.roles and form.extension not in phones["extensions"]:
        errors["extension"] = _("Choose the staff member's extension.")
    return form, errors


def _form_page(template: str, form: UserForm, errors: dict[str, str], status: int = 200,
               **extra: Any) -> tuple[str, int]:
    return render_template(template, form=form, errors=errors, roles=ROLES,
                           role_labels=accounts.ROLE_LABELS, **_phones(_me().tenant_id),
                           min_length=policy().password_min_length, **extra), status


@bp.route("/users/new", methods=["GET", "POST"])
@login_required(roles=ADMIN)
def user_new() -> Page:
    me = _me()
    if request.method == "GET":
        return _form_page("admin/user_new.html", UserForm(), {})
    form, errors = _read_user_form(me.tenant_id, new=True)
    password = secret_field("password")
    if password:
        problems = accounts.password_problems(password, form.username, policy())
        if problems:
            errors["password"] = " ".join(problems)
    if errors:
        return _form_page("admin/user_new.html", form, errors, 400)
    generated = not password
    password = password or accounts.generate_password()
    db = get_db()
    user = accounts.create_user(db, username=form.username, tenant_id=me.tenant_id,
                                roles=set(form.roles), password=password, hasher=hasher(),
                                settings=get_settings(), display_name=form.display_name,
                                sip_endpoint=form.sip_endpoint, extension=form.extension,
                                must_change_password=True)
    try:
        db.flush()
    except IntegrityError:  # created at the same moment by someone else
        db.rollback()
        errors["username"] = _("This user name is already taken.")
        return _form_page("admin/user_new.html", form, errors, 400)
    audit.record(db, actor(), "user.create", object_type="user", object_id=user.id)
    db.commit()
    return render_template("admin/password_shown.html", user=user,
                           password=password if generated else None, created=True)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@login_required(roles=ADMIN)
def user_edit(user_id: int) -> Page:
    me = _me()
    user = _load(user_id)
    extra: dict[str, Any] = {"user": user, "now": accounts.now_utc(),
                             "sessions": interface(current_app).user_sessions(user.id)}
    if request.method == "GET":
        audit_event("user.view", object_type="user", object_id=user.id)
        return _form_page("admin/user_edit.html", UserForm.from_user(user), {}, **extra)
    form, errors = _read_user_form(me.tenant_id, new=False, editing=user)
    if user.id == me.id and ADMINISTRATOR not in form.roles:
        errors["roles"] = _("You cannot remove the administrator role from yourself.")
    if errors:
        return _form_page("admin/user_edit.html", form, errors, 400, **extra)
    user.display_name = form.display_name
    user.set_roles(set(form.roles))
    accounts.apply_phone(user, get_settings(), sip_endpoint=form.sip_endpoint,
                         extension=form.extension)
    user.updated_at = accounts.now_utc()
    db = get_db()
    audit.record(db, actor(), "user.update", object_type="user", object_id=user.id)
    db.commit()
    flash(_("The user has been saved."), "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


def _set_active(user_id: int, active: bool) -> WerkzeugResponse:
    me = _me()
    user = _load(user_id)
    if user.id == me.id and not active:
        flash(_("You cannot disable your own account."), "error")
        return redirect(url_for("admin.user_edit", user_id=user.id))
    user.active = active
    user.updated_at = accounts.now_utc()
    db = get_db()
    audit.record(db, actor(), "user.enable" if active else "user.disable",
                 object_type="user", object_id=user.id)
    db.commit()
    if not active:
        interface(current_app).end_user_sessions(user.id)
        flash(_("The account has been disabled and its sessions ended."), "success")
    else:
        flash(_("The account has been enabled."), "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


@bp.post("/users/<int:user_id>/disable")
@login_required(roles=ADMIN)
def user_disable(user_id: int) -> WerkzeugResponse:
    return _set_active(user_id, False)


@bp.post("/users/<int:user_id>/enable")
@login_required(roles=ADMIN)
def user_enable(user_id: int) -> WerkzeugResponse:
    return _set_active(user_id, True)


@bp.post("/users/<int:user_id>/password")
@login_required(roles=ADMIN)
def user_password_reset(user_id: int) -> Page:
    me = _me()
    user = _load(user_id)
    password = accounts.generate_password()
    accounts.set_password(user, password, hasher(), must_change=True)
    user.failed_logins = 0
    user.locked_until = None
    db = get_db()
    audit.record(db, actor(), "user.password_reset", object_type="user", object_id=user.id)
    db.commit()
    keep = {session.sid or ""} if user.id == me.id and isinstance(session, RedisSession) else ()
    interface(current_app).end_user_sessions(user.id, keep=keep)
    return render_template("admin/password_shown.html", user=user, password=password,
                           created=False)


@bp.post("/users/<int:user_id>/sessions/end")
@login_required(roles=ADMIN)
def user_sessions_end(user_id: int) -> WerkzeugResponse:
    user = _load(user_id)
    handle = field("session", 32)
    iface = interface(current_app)
    if handle:
        ended = 1 if iface.end_session(user.id, handle) else 0
    else:
        own = session.sid if isinstance(session, RedisSession) else None
        ended = iface.end_user_sessions(user.id, keep={own} if own else ())
    audit_event("user.sessions_end", object_type="user", object_id=user.id)
    flash(_("%(n)d session(s) ended.", n=ended), "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


@bp.post("/users/<int:user_id>/totp/reset")
@login_required(roles=ADMIN)
def user_totp_reset(user_id: int) -> WerkzeugResponse:
    user = _load(user_id)
    user.totp_secret = None
    user.totp_last_step = None
    user.updated_at = accounts.now_utc()
    db = get_db()
    audit.record(db, actor(), "user.totp_reset", object_type="user", object_id=user.id)
    db.commit()
    flash(_("Two-step verification has been turned off for this user."), "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


@bp.post("/users/<int:user_id>/unlock")
@login_required(roles=ADMIN)
def user_unlock(user_id: int) -> WerkzeugResponse:
    user = _load(user_id)
    user.failed_logins = 0
    user.locked_until = None
    db = get_db()
    audit.record(db, actor(), "user.unlock", object_type="user", object_id=user.id)
    db.commit()
    flash(_("The account has been unlocked."), "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


# -- audit log ---------------------------------------------------------------------
def _parse_day(value: str) -> datetime | None:
    """'YYYY-MM-DD' in the site's time zone -> aware datetime at 00:00, or None."""
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None
    tz = ZoneInfo(get_settings().site.timezone)
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC)


def action_label(action: str) -> str:
    """What an audit action is, in words (the id itself is shown beside it, as code)."""
    exact = {
        "access.denied": _("Access refused"), "audit.view": _("Audit log viewed"),
        "auth.login": _("Log-in"), "auth.logout": _("Log-out"),
        "auth.password_change": _("Password changed"), "auth.totp": _("Second factor"),
        "auth.totp_enrol": _("Second factor set up"), "case.view": _("Case card viewed"),
        "case.wrapup": _("Wrap-up saved"), "case.outcome": _("Staff outcome saved"),
        "case.citizen_phone": _("Citizen's phone number given"),
        "kiosk_card.view": _("Card details viewed"), "kiosk_card.read": _("Card read"),
        "kiosk_still.view": _("Document picture viewed"),
        "kiosk_video.view": _("Kiosk video viewed"), "report.download": _("Report downloaded"),
        "report.request": _("Report requested"), "kpi.export": _("KPIs exported"),
        "user.view": _("User viewed"), "user.list": _("User list viewed"),
        "site.failback": _("Site given new calls again"),
        "site.takeout": _("Site taken out of service"),
    }
    if action in exact:
        return exact[action]
    area = {"auth": _("Log-in and accounts"), "agent": _("Operator state"),
            "case": _("Case"), "call": _("Call"), "callback": _("Callback"),
            "faq": _("FAQ"), "kiosk": _("Remote window"), "kiosk_card": _("My Number card"),
            "kiosk_session": _("Remote window"), "kpi": _("KPIs"), "report": _("Reports"),
            "user": _("Users"), "tenant": _("Municipality"), "site": _("Sites")}
    return area.get(action.split(".", 1)[0], _("Other"))


def object_labels() -> dict[str, str]:
    return {"audit": _("Audit log"), "call": _("Call"), "callback": _("Callback"),
            "case": _("Case"), "endpoint": _("Phone"), "faq_export": _("FAQ export"),
            "faq_import": _("FAQ import"), "faq_item": _("FAQ item"),
            "faq_revision": _("FAQ revision"), "kiosk": _("Remote window"),
            "kiosk_session": _("Remote window session"), "kpi": _("KPIs"),
            "report": _("Report"), "tenant": _("Municipality"),
            "transcript_purge": _("Transcript erasure"), "user": _("User"),
            "route": _("Page")}


@bp.get("/audit")
@login_required(roles=ADMIN)
def audit_log() -> Page:
    me = _me()
    args = request.args
    filters = {k: (args.get(k) or "").strip()[:64] for k in
               ("actor", "action", "object_type", "object_id", "outcome", "since", "until")}
    errors: dict[str, str] = {}
    for key, value in filters.items():
        if has_control_chars(value):
            errors[key] = _("This field contains characters that cannot be used.")
            filters[key] = ""
    query = select(AuditEntry).where(or_(AuditEntry.tenant_id == me.tenant_id,
                                         AuditEntry.tenant_id == ""))
    if filters["actor"]:
        query = query.where(AuditEntry.actor == filters["actor"].lower())
    if filters["action"]:
        query = query.where(AuditEntry.action.startswith(filters["action"], autoescape=True))
    if filters["object_type"]:
        query = query.where(AuditEntry.object_type == filters["object_type"])
    if filters["object_id"]:
        query = query.where(AuditEntry.object_id == filters["object_id"])
    if filters["outcome"]:
        if filters["outcome"] in audit.OUTCOMES:
            query = query.where(AuditEntry.outcome == filters["outcome"])
        else:
            errors["outcome"] = _("Choose a valid outcome.")
    for key in ("since", "until"):
        if filters[key]:
            at = _parse_day(filters[key])
            if at is None:
                errors[key] = _("Enter the date as YYYY-MM-DD.")
            elif key == "since":
                query = query.where(AuditEntry.at >= at)
            else:
                query = query.where(AuditEntry.at < at + timedelta(days=1))
    try:
        page = max(1, min(10_000, int(args.get("page", "1"))))
    except ValueError:
        page = 1
    rows: list[AuditEntry] = []
    if not errors:
        rows = list(get_db().scalars(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                                     .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    audit_event("audit.view", object_type="audit")
    more = len(rows) > PAGE_SIZE
    return render_template("admin/audit.html", rows=rows[:PAGE_SIZE], filters=filters,
                           errors=errors, page=page, more=more, action_label=action_label,
                           object_labels=object_labels(),
                           outcomes=audit.OUTCOMES), 400 if errors else 200
