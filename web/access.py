"""Who is asking, and may they: the signed-in user, role and tenant checks, auditing.

Every view that is not public is wrapped in ``login_required``: it checks on the server,
on every request, that a live session belongs to an active account, that the account
holds one of the view's roles, and -- with ``same_tenant`` -- that a ``tenant_id`` in the
URL is the user's own tenant. Views that load an object by id call ``ensure_tenant`` on
it. Refusals are written to the audit trail.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from flask import Flask, abort, flash, g, redirect, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from common import audit
from common.models.accounts import User
from web.db import get_db, resources
from web.errors import wants_json

F = TypeVar("F", bound=Callable[..., Any])

#: Endpoints a user who must change their password may still reach.
PASSWORD_CHANGE_ENDPOINTS = frozenset({"auth.password", "auth.logout", "static"})


def remote_addr() -> str:
    return (request.remote_addr or "")[:64]


def current_user() -> User | None:
    user: User | None = g.get("user")
    return user


def actor(user: User | None = None) -> audit.Actor:
    """The audit actor for this request (the signed-in user, or anonymous)."""
    user = user or current_user()
    if user is None:
        return audit.Actor(name="", remote_addr=remote_addr())
    return audit.Actor(name=user.username, tenant_id=user.tenant_id, user_id=user.id,
                       remote_addr=remote_addr())


def audit_event(action: str, *, object_type: str = "", object_id: str | int = "",
                outcome: str = audit.OK, reason: str = "", user: User | None = None,
                tenant_id: str | None = None) -> None:
    """Write an audit entry now, in its own transaction (kept even if the request fails)."""
    audit.write(resources().factory, actor(user), action, object_type=object_type,
                object_id=object_id, outcome=outcome, reason=reason, tenant_id=tenant_id)


def audit_view(object_type: str, object_id: str | int) -> None:
    """Record that the current user looked at an object holding personal data."""
    audit_event(f"{object_type}.view", object_type=object_type, object_id=object_id)


def deny(reason: str, *, object_type: str = "", object_id: str | int = "",
         status: int = 403) -> None:
    """Refuse the request (403, or 404 to hide an object of another tenant); audited."""
    audit_event("access.denied", object_type=object_type or "route",
                object_id=object_id or (request.endpoint or request.path),
                outcome=audit.DENIED, reason=reason)
    abort(status)


def ensure_tenant(tenant_id: str, *, object_type: str, object_id: str | int) -> None:
    """Refuse (as 404) an object that belongs to another tenant than the user's."""
    user = current_user()
    if user is None or user.tenant_id != tenant_id:
        deny("tenant", object_type=object_type, object_id=object_id, status=404)


def load_user() -> None:
    """Before every request: the user of a live session, or None."""
    g.user = None
    if getattr(session, "unavailable", False):
        return
    uid = session.get("uid")
    if not isinstance(uid, int):
        return
    user = get_db().get(User, uid)
    if user is None or not user.active:
        session.clear()
        return
    g.user = user


def _login_redirect() -> WerkzeugResponse:
    if getattr(session, "expired", False):
        flash(_("Your session has expired. Please log in again."), "warning")
    target = request.full_path if request.method == "GET" else request.path
    return redirect(url_for("auth.login", next=target.rstrip("?")))


def _guard(roles: frozenset[str] | None, same_tenant: bool,
           kwargs: dict[str, Any]) -> WerkzeugResponse | None:
    if getattr(session, "unavailable", False):
        abort(503)
    user = current_user()
    if user is None:
        if wants_json() or request.method != "GET":
            abort(401)
        return _login_redirect()
    if user.must_change_password and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS:
        if wants_json():
            abort(403)
        flash(_("Please set a new password before you continue."), "warning")
        return redirect(url_for("auth.password"))
    if roles is not None and not (user.roles & roles):
        deny("role")
    if same_tenant:
        tenant = kwargs.get("tenant_id")
        if tenant is not None and tenant != user.tenant_id:
            deny("tenant", object_type="tenant", object_id=str(tenant)[:64])
    return None


@overload
def login_required(view: F) -> F: ...


@overload
def login_required(*, roles: Iterable[str] | None = None,
                   same_tenant: bool = True) -> Callable[[F], F]: ...


def login_required(view: F | None = None, *, roles: Iterable[str] | None = None,
                   same_tenant: bool = True) -> F | Callable[[F], F]:
    """Require a signed-in user (holding any of ``roles``, in the URL's tenant)."""
    wanted = frozenset(roles) if roles is not None else None

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            refused = _guard(wanted, same_tenant, kwargs)
            if refused is not None:
                return refused
            return fn(*args, **kwargs)

        wrapped._roles = wanted  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    if view is not None:
        return decorator(view)
    return decorator


def init_app(app: Flask) -> None:
    app.before_request(load_user)
