"""Account services: password hashing and policy, lock-out, TOTP, creating users.

No Flask request objects here: the CLI and the views both call these functions.
"""

from __future__ import annotations

import hmac
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.models.accounts import OPERATOR, ROLES, STAFF, SUPERVISOR, User
from common.settings import Settings

MAX_PASSWORD = 256
USERNAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "._-")
TOTP_INTERVAL = 30
TOTP_ISSUER = "Madoguchi"

ROLE_LABELS = {
    "operator": _l("Operator"),
    "staff": _l("Staff"),
    "supervisor": _l("Supervisor"),
    "administrator": _l("Administrator"),
    "approver": _l("Approver"),
}


@dataclass(frozen=True)
class SecurityPolicy:
    """Log-in and password rules, from ``[web]`` settings."""

    lockout_attempts: int = 5
    lockout_minutes: int = 15
    password_min_length: int = 12

    @classmethod
    def from_settings(cls, settings: Settings) -> SecurityPolicy:
        web = settings.web
        return cls(
            lockout_attempts=max(1, web.lockout_attempts),
            lockout_minutes=max(1, web.lockout_minutes),
            password_min_length=max(8, web.password_min_length),
        )


def make_hasher(params: dict[str, Any] | None = None) -> PasswordHasher:
    """argon2id with the library's defaults (RFC 9106 low-memory profile) unless given."""
    return PasswordHasher(**(params or {}))


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- passwords ---------------------------------------------------------------------
def password_problems(password: str, username: str, policy: SecurityPolicy) -> list[str]:
    """Why a new password is not acceptable (translated messages); empty when fine."""
    problems: list[str] = []
    if len(password) < policy.password_min_length:
        problems.append(str(_l("The password must be at least %(n)d characters long.",
                               n=policy.password_min_length)))
    if len(password) > MAX_PASSWORD:
        problems.append(str(_l("The password must be at most %(n)d characters long.",
                               n=MAX_PASSWORD)))
    if password and len(set(password)) < 4:
        problems.append(str(_l("The password is too simple.")))
    if username and username.lower() in password.lower():
        problems.append(str(_l("The password must not contain the user name.")))
    if any(ord(c) < 32 for c in password):
        problems.append(str(_l("The password contains characters that cannot be used.")))
    return problems


def generate_password(length: int = 16) -> str:
    """A random password of letters and digits (no look-alike characters)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if any(c.isdigit() for c in pw) and any(c.isupper() for c in pw):
            return pw


def set_password(user: User, password: str, hasher: PasswordHasher, *,
                 must_change: bool = False) -> None:
    user.password_hash = hasher.hash(password)
    user.must_change_password = must_change
    user.password_changed_at = now_utc()
    user.updated_at = now_utc()


_DUMMY: dict[int, str] = {}


def check_password(user: User | None, password: str, hasher: PasswordHasher) -> bool:
    """Verify; takes the same time whether or not the user exists. Rehashes when due."""
    if len(password) > MAX_PASSWORD:
        password = password[:MAX_PASSWORD]
    if user is None:
        key = id(hasher)
        if key not in _DUMMY:
            _DUMMY[key] = hasher.hash(secrets.token_urlsafe(16))
        try:
            hasher.verify(_DUMMY[key], password)
        except VerificationError:
            pass
        return False
    try:
        hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return True


# -- lock-out ----------------------------------------------------------------------
def register_failure(user: User, policy: SecurityPolicy, now: datetime | None = None) -> bool:
    """Count a failed log-in; returns True when this failure locked the account."""
    now = now or now_utc()
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= policy.lockout_attempts:
        user.locked_until = now + timedelta(minutes=policy.lockout_minutes)
        user.failed_logins = 0
        return True
    return False


def register_success(user: User, now: datetime | None = None) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now or now_utc()


# -- TOTP --------------------------------------------------------------------------
def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, tenant_name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=f"{username}@{tenant_name}",
                                               issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, last_step: int | None = None,
              at: float | None = None) -> int | None:
    """The time step that ``code`` belongs to (one step of clock drift either way),
    or None if it is wrong or was already used (``last_step``)."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    now = time.time() if at is None else at
    current = int(now // TOTP_INTERVAL)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * TOTP_INTERVAL), code):
            return step
    return None


# -- users -------------------------------------------------------------------------
def find_user(db: Session, username: str) -> User | None:
    name = username.strip().lower()
    if not name or len(name) > 64 or any(ord(c) < 32 for c in name):
        return None
    return db.scalar(select(User).where(User.username == name))


def user_count(db: Session) -> int:
    return int(db.scalar(select(func.count()).select_from(User)) or 0)


def operator_endpoints(settings: Settings) -> dict[str, str]:
    """Operator softphones: endpoint id -> extension."""
    return dict(settings.operators.endpoints())


def staff_extensions(settings: Settings, tenant_id: str) -> dict[str, str]:
    """Department extensions of a tenant: extension -> department id."""
    out: dict[str, str] = {}
    for dep in settings.departments:
        if dep.tenant == tenant_id:
            for ext in dep.extensions:
                out[ext] = dep.id
    return out


def valid_username(name: str) -> bool:
    return 3 <= len(name) <= 64 and set(name) <= USERNAME_CHARS and name[0].isalnum()


def create_user(db: Session, *, username: str, tenant_id: str, roles: set[str],
                password: str, hasher: PasswordHasher, settings: Settings,
                display_name: str = "", sip_endpoint: str | None = None,
                extension: str | None = None, must_change_password: bool = True) -> User:
    """Create a user (caller validates input and commits)."""
    if set(roles) - set(ROLES):
        raise ValueError("unknown role")
    now = now_utc()
    user = User(username=username.strip().lower(), display_name=display_name,
                tenant_id=tenant_id, created_at=now, updated_at=now, active=True,
                failed_logins=0, password_hash="")
    user.set_roles(set(roles))
    apply_phone(user, settings, sip_endpoint=sip_endpoint, extension=extension)
    set_password(user, password, hasher, must_change=must_change_password)
    db.add(user)
    return user


def apply_phone(user: User, settings: Settings, *, sip_endpoint: str | None,
                extension: str | None) -> None:
    """Tie operators to their softphone and staff to their department extension; a
    supervisor may have a softphone too (to listen to, whisper to or join calls)."""
    roles = user.roles
    endpoints = operator_endpoints(settings)
    extensions = staff_extensions(settings, user.tenant_id)
    if (OPERATOR in roles or SUPERVISOR in roles) and sip_endpoint in endpoints:
        user.sip_endpoint = sip_endpoint
        user.extension = endpoints[sip_endpoint]
        user.department_id = None
    elif STAFF in roles and extension in extensions:
        user.sip_endpoint = None
        user.extension = extension
        user.department_id = extensions[extension]
    else:
        user.sip_endpoint = None
        user.extension = None
        user.department_id = None
