"""Log-in, log-out, second factor (TOTP), own password and account page.

Log-in: user name and password (argon2); then, when enrolled, a 6-digit TOTP code.
Failed attempts are throttled per client address and per user name with a growing
back-off (``accounts.LoginThrottle``): a computer that has not failed itself is never
refused because of others' failures, and one that keeps failing waits whatever names it
tries. An unknown name and a known one with a wrong password get the same answer (status,
page, hashing work, database and Redis round trips), and so do their throttled attempts.
A successful log-in gets a fresh session id.
"""

from __future__ import annotations

import time
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import update
from werkzeug.wrappers import Response as WerkzeugResponse

from common import audit
from common.models.accounts import User
from web import accounts
from web.access import actor, audit_event, current_user, login_required, remote_addr
from web.db import get_db, get_settings, resources
from web.forms import field, safe_next, secret_field
from web.sessions import RedisSession, interface
from web.views import tenant_name

bp = Blueprint("auth", __name__, url_prefix="/auth")

PENDING_SECONDS = 300

Page = str | tuple[str, int] | WerkzeugResponse


def policy() -> accounts.SecurityPolicy:
    return accounts.SecurityPolicy.from_settings(get_settings())


def hasher() -> accounts.PasswordHasher:
    found: accounts.PasswordHasher | None = current_app.extensions.get("madoguchi_hasher")
    if found is None:
        found = accounts.make_hasher(current_app.config.get("ARGON2_PARAMETERS"))
        current_app.extensions["madoguchi_hasher"] = found
    return found


def _session() -> RedisSession:
    if not isinstance(session, RedisSession):
        raise RuntimeError("web.sessions is not installed on this app")
    return session


def _signed_in() -> User:
    user = current_user()
    if user is None:
        raise RuntimeError("login_required did not run")
    return user


# -- throttling (accounts.LoginThrottle) ---------------------------------------------
def throttle() -> accounts.LoginThrottle:
    res = resources()
    return accounts.LoginThrottle(res.redis, res.keys.prefix, policy(),
                                  get_settings().web.secret_key)


def _lock_held(user: User | None) -> bool:
    """False once the account's lock has been cleared in the database (an administrator's
    unlock or password reset); a name without an account has only its Redis count."""
    return user is None or user.locked_until is not None


def _refused(username: str, user: User | None) -> accounts.Refusal | None:
    gate = throttle()
    return gate.refusal(gate.state(remote_addr(), username), account_lock_held=_lock_held(user))


def _refusal_reason(refusal: accounts.Refusal, user: User | None) -> str:
    return "locked" if refusal.scope == "account" and user is not None else "throttled"


def _fail(username: str, user: User | None, action: str, reason: str) -> None:
    """Count a failed attempt against the address and the name; keep the count and the
    lock on the account (the same statement whether or not it exists); audit it, never
    with the password, nor with the name when it has no account."""
    gate = throttle()
    addr = remote_addr()
    state = gate.state(addr, username)
    cleared = (user is not None and user.locked_until is None
               and state.name_failures >= gate.policy.lockout_attempts)
    failures, until = gate.failure(addr, username, forget_name=cleared)
    if until is not None and failures == gate.policy.lockout_attempts and user is not None:
        reason = "locked_now"
    values: dict[str, Any] = {"failed_logins": failures}
    if until is not None:
        values["locked_until"] = until
    db = get_db()
    try:
        db.execute(update(User).where(User.username == username.strip().lower())
                   .values(**values))
        audit.record(db, actor(user), action, outcome=audit.FAILED, reason=reason,
                     object_type="user" if user else "", object_id=user.id if user else "")
        db.commit()
    except Exception:  # noqa: BLE001 - a refusal must not become a 500
        db.rollback()
        current_app.logger.exception("could not record the failed attempt (%s)", action)


def _throttled_page(username: str, next_url: str | None,
                    refusal: accounts.Refusal) -> tuple[str, int, dict[str, str]]:
    page = render_template("auth/login.html", username=username, next=next_url,
                           errors={"form": _("Too many failed attempts from this "
                                             "computer. Please wait and try again.")})
    return page, 429, {"Retry-After": str(refusal.retry_after)}


def _complete_login(user: User, next_url: str | None) -> WerkzeugResponse:
    throttle().success(remote_addr(), user.username)
    accounts.register_success(user)
    get_db().commit()
    lang = session.get("lang")
    session.clear()
    _session().regenerate()
    session["uid"] = user.id
    session["ip"] = remote_addr()
    if lang:
        session["lang"] = lang
    g.user = user
    audit_event("auth.login", user=user)
    if user.must_change_password:
        flash(_("Please set a new password before you continue."), "warning")
        return redirect(url_for("auth.password"))
    return redirect(next_url or url_for("home.index"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page | tuple[str, int, dict[str, str]]:
    if getattr(session, "unavailable", False):
        return render_template("errors/error.html", code=503,
                               message=_("The service is temporarily unavailable. "
                                         "Please try again shortly.")), 503
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user() is not None:
            return redirect(next_url or url_for("home.index"))
        return render_template("auth/login.html", errors={}, username="", next=next_url)

    username = field("username", 64).lower()
    password = secret_field("password")
    errors: dict[str, str] = {}
    if not username:
        errors["username"] = _("Enter your user name.")
    elif len(username) > 64:
        errors["username"] = _("The user name is too long.")
    if not password:
        errors["password"] = _("Enter your password.")
    if errors:
        return render_template("auth/login.html", errors=errors, username=username[:64],
                               next=next_url), 400

    db = get_db()
    user = accounts.find_user(db, username)
    refusal = _refused(username, user)
    if refusal is not None:
        # no password check at all: cheap, and the same for every name
        audit_event("auth.login", outcome=audit.DENIED, reason=_refusal_reason(refusal, user),
                    user=user, object_type="user" if user else "",
                    object_id=user.id if user else "")
        return _throttled_page(username, next_url, refusal)
    ok = accounts.check_password(user, password, hasher())
    if user is None or not ok or not user.active:
        reason = ("unknown_user" if user is None else "bad_password" if not ok
                  else "disabled")
        _fail(username, user, "auth.login", reason)
        return render_template("auth/login.html", username=username, next=next_url,
                               errors={"form": _("The user name or password is not "
                                                 "correct.")}), 401
    db.commit()  # a rehashed password is kept
    if user.totp_enabled:
        lang = session.get("lang")
        session.clear()
        _session().regenerate()
        session["pending_uid"] = user.id
        session["pending_at"] = time.time()
        if next_url:
            session["next"] = next_url
        if lang:
            session["lang"] = lang
        return redirect(url_for("auth.totp"))
    return _complete_login(user, next_url)


def _pending_user() -> User | None:
    uid = session.get("pending_uid")
    started = session.get("pending_at")
    if not isinstance(uid, int) or not isinstance(started, int | float):
        return None
    if time.time() - started > PENDING_SECONDS:
        return None
    user = get_db().get(User, uid)
    if user is None or not user.active or not user.totp_enabled:
        return None
    return user


@bp.route("/totp", methods=["GET", "POST"])
def totp() -> Page:
    if getattr(session, "unavailable", False):
        return redirect(url_for("auth.login"))
    user = _pending_user()
    if user is None:
        session.pop("pending_uid", None)
        session.pop("pending_at", None)
        flash(_("Please log in again."), "warning")
        return redirect(url_for("auth.login"))
    if request.method == "GET":
        return render_template("auth/totp.html", errors={})
    code = field("code", 16)
    if not code:
        return render_template("auth/totp.html",
                               errors={"code": _("Enter the 6-digit code.")}), 400
    refusal = _refused(user.username, user)
    if refusal is not None:
        session.clear()
        audit_event("auth.totp", outcome=audit.DENIED, reason=_refusal_reason(refusal, user),
                    user=user, object_type="user", object_id=user.id)
        flash(_("Too many failed attempts from this computer. Please wait and try again."),
              "error")
        return redirect(url_for("auth.login"))
    secret = user.totp_secret or ""  # _pending_user: enrolled
    step = accounts.totp_step(secret, code, user.totp_last_step)
    if step is None:
        _fail(user.username, user, "auth.totp", "bad_code")
        if _refused(user.username, user) is not None:
            session.clear()
            flash(_("Too many failed attempts from this computer. Please wait and try "
                    "again."), "error")
            return redirect(url_for("auth.login"))
        return render_template("auth/totp.html",
                               errors={"code": _("The code is not correct. Enter the "
                                                 "current code from your app.")}), 401
    user.totp_last_step = step
    next_url = safe_next(session.get("next"))
    return _complete_login(user, next_url)


@bp.post("/logout")
def logout() -> WerkzeugResponse:
    user = current_user()
    if user is not None:
        audit_event("auth.logout", user=user)
    lang = session.get("lang")
    session.clear()
    if isinstance(session, RedisSession) and not session.unavailable:
        # The old session is deleted; the message and language ride on a new one.
        session.regenerate()
        if lang:
            session["lang"] = lang
        if user is not None:
            flash(_("You have logged out."), "success")
    return redirect(url_for("auth.login"))


@bp.get("/account")
@login_required
def account() -> str:
    user = _signed_in()
    return render_template("auth/account.html", user=user,
                           role_labels=accounts.ROLE_LABELS)


def _password_page(errors: dict[str, str], status: int = 200) -> tuple[str, int]:
    return render_template("auth/password.html", errors=errors,
                           min_length=policy().password_min_length), status


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password() -> Page:
    user = _signed_in()
    if request.method == "GET":
        return _password_page({})
    current = secret_field("current_password")
    new = secret_field("new_password")
    again = secret_field("new_password2")
    errors: dict[str, str] = {}
    if not current:
        errors["current_password"] = _("Enter your current password.")
    if not new:
        errors["new_password"] = _("Enter a new password.")
    else:
        problems = accounts.password_problems(new, user.username, policy())
        if problems:
            errors["new_password"] = " ".join(problems)
        elif new != again:
            errors["new_password2"] = _("The two new passwords are not the same.")
        elif new == current:
            errors["new_password"] = _("The new password must differ from the current one.")
    if errors:
        return _password_page(errors, 400)
    if _refused(user.username, user) is not None:
        audit_event("auth.password_change", outcome=audit.DENIED, reason="throttled",
                    object_type="user", object_id=user.id)
        return _password_page({"current_password": _("Too many attempts. Please wait and "
                                                     "try again.")}, 429)
    if not accounts.check_password(user, current, hasher()):
        _fail(user.username, user, "auth.password_change", "bad_password")
        return _password_page({"current_password": _("The current password is not correct.")},
                              400)
    accounts.set_password(user, new, hasher(), must_change=False)
    get_db().commit()
    own = _session()
    interface(current_app).end_user_sessions(user.id, keep={own.sid or ""})
    own.regenerate()
    audit_event("auth.password_change", object_type="user", object_id=user.id)
    flash(_("Your password has been changed."), "success")
    return redirect(url_for("auth.account"))


def _group(secret: str) -> str:
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


@bp.route("/totp/setup", methods=["GET", "POST"])
@login_required
def totp_setup() -> Page:
    user = _signed_in()
    if user.totp_enabled:
        flash(_("Two-step verification is already on."), "warning")
        return redirect(url_for("auth.account"))
    secret = session.get("totp_setup")
    if not isinstance(secret, str) or len(secret) != 32:
        secret = accounts.new_totp_secret()
        session["totp_setup"] = secret
    context: dict[str, Any] = {
        "secret": _group(secret),
        "uri": accounts.totp_uri(secret, user.username, tenant_name(user.tenant_id)),
    }
    if request.method == "GET":
        return render_template("auth/totp_setup.html", errors={}, **context)
    code = field("code", 16)
    step = accounts.totp_step(secret, code) if code else None
    if step is None:
        message = (_("Enter the 6-digit code.") if not code else
                   _("The code is not correct. Enter the current code from your app."))
        return render_template("auth/totp_setup.html", errors={"code": message},
                               **context), 400
    user.totp_secret = secret
    user.totp_last_step = step
    user.updated_at = accounts.now_utc()
    get_db().commit()
    session.pop("totp_setup", None)
    audit_event("auth.totp_enrol", object_type="user", object_id=user.id)
    flash(_("Two-step verification is now on."), "success")
    return redirect(url_for("auth.account"))


@bp.post("/totp/disable")
@login_required
def totp_disable() -> Page:
    user = _signed_in()
    password_given = secret_field("password")
    if not user.totp_enabled:
        return redirect(url_for("auth.account"))
    if password_given and _refused(user.username, user) is not None:
        audit_event("auth.totp_disable", outcome=audit.DENIED, reason="throttled",
                    object_type="user", object_id=user.id)
        flash(_("Too many attempts. Please wait and try again."), "error")
        return render_template("auth/account.html", user=user,
                               role_labels=accounts.ROLE_LABELS), 429
    if not password_given or not accounts.check_password(user, password_given, hasher()):
        if password_given:
            _fail(user.username, user, "auth.totp_disable", "bad_password")
        flash(_("The password is not correct. Two-step verification stays on."), "error")
        return render_template("auth/account.html", user=user,
                               role_labels=accounts.ROLE_LABELS), 400
    user.totp_secret = None
    user.totp_last_step = None
    user.updated_at = accounts.now_utc()
    get_db().commit()
    audit.write(resources().factory, actor(user), "auth.totp_disable", object_type="user",
                object_id=user.id)
    flash(_("Two-step verification is now off."), "success")
    return redirect(url_for("auth.account"))
