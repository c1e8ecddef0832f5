"""Account services: password hashing and policy, log-in throttling, TOTP, creating users.

No Flask request objects here: the CLI and the views both call these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyotp
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload

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
    """Log-in and password rules, from ``[web]`` settings (``LoginThrottle`` below)."""

    #: failures against one user name (from anywhere) before its back-off starts
    lockout_attempts: int = 5
    #: the longest refusal, in minutes
    lockout_minutes: int = 15
    #: failures from one client address (whatever names it tries) before its back-off
    throttle_address_attempts: int = 20
    #: the first refusal, in seconds; it doubles with each further failure
    throttle_base_seconds: int = 5
    #: failures are forgotten this many minutes after the last one
    throttle_memory_minutes: int = 60
    password_min_length: int = 12

    @classmethod
    def from_settings(cls, settings: Settings) -> SecurityPolicy:
        web = settings.web
        lockout_minutes = max(1, web.lockout_minutes)
        return cls(
            lockout_attempts=max(1, web.lockout_attempts),
            lockout_minutes=lockout_minutes,
            throttle_address_attempts=max(1, web.throttle_address_attempts),
            throttle_base_seconds=max(1, web.throttle_base_seconds),
            throttle_memory_minutes=max(lockout_minutes, web.throttle_memory_minutes),
            password_min_length=max(8, web.password_min_length),
        )

    def backoff_seconds(self, failures: int, free: int) -> float:
        """How long after the last of ``failures`` the next attempt is refused: nothing
        below ``free`` failures, then the base delay, doubled with each further failure,
        at most ``lockout_minutes``."""
        if failures < free:
            return 0.0
        doublings = min(failures - free, 30)
        return float(min(self.lockout_minutes * 60, self.throttle_base_seconds * 2 ** doublings))


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


# -- log-in throttling --------------------------------------------------------------
#: the throttle's clock (seconds since the epoch); tests may freeze it
clock = time.time


@dataclass(frozen=True)
class ThrottleState:
    """What Redis remembers of the failures around one attempt (``LoginThrottle.state``)."""

    address_failures: int = 0
    address_last: float = 0.0
    name_failures: int = 0
    name_last: float = 0.0
    #: failures of this very address against this very name
    pair_failures: int = 0


@dataclass(frozen=True)
class Refusal:
    """A throttled attempt: ``scope`` is ``address`` or ``account``; ``retry_after`` in
    whole seconds (the ``Retry-After`` header)."""

    scope: str
    retry_after: int


class LoginThrottle:
    """Failed log-ins counted per client address, per user name and per (address, name),
    each with an exponential back-off (``SecurityPolicy.backoff_seconds``).

    - An address with ``throttle_address_attempts`` failures is refused whatever name it
      tries, until its back-off after its last failure has passed.
    - A name with ``lockout_attempts`` failures is in back-off; during it, only the
      addresses that have themselves failed against that name are refused. An address
      without failures of its own (the user's usual computer) always gets its password
      checked, so nobody can lock a user out by failing on purpose.
    - Names are counted whether or not an account has them, under a keyed digest (a
      password typed into the name field is never stored): an unknown name and a known
      one behave alike. A success forgets its address's failures against that name only.

    Keys: ``{prefix}:login_fail:ip:{addr}`` and ``{prefix}:login_fail:name:{digest}``
    (hashes ``n``, ``last``), ``{prefix}:login_fail:pair:{digest}:{addr}`` (a counter);
    each expires ``throttle_memory_minutes`` after its last failure.
    """

    def __init__(self, client: redis.Redis, prefix: str, policy: SecurityPolicy,
                 secret: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:login_fail"
        self.policy = policy
        self._secret = (secret or "madoguchi-login-throttle").encode("utf-8")

    def _digest(self, username: str) -> str:
        name = username.strip().lower().encode("utf-8")
        return hmac.new(self._secret, name, hashlib.sha256).hexdigest()[:32]

    def _keys(self, addr: str, username: str) -> tuple[str, str, str]:
        addr = addr or "unknown"
        digest = self._digest(username)
        return (f"{self.prefix}:ip:{addr}", f"{self.prefix}:name:{digest}",
                f"{self.prefix}:pair:{digest}:{addr}")

    def state(self, addr: str, username: str) -> ThrottleState:
        ip_key, name_key, pair_key = self._keys(addr, username)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(ip_key, ["n", "last"])
        pipe.hmget(name_key, ["n", "last"])
        pipe.get(pair_key)
        ip, name, pair = pipe.execute()
        return ThrottleState(address_failures=int(ip[0] or 0),
                             address_last=float(ip[1] or 0),
                             name_failures=int(name[0] or 0),
                             name_last=float(name[1] or 0),
                             pair_failures=int(pair or 0))

    def refusal(self, state: ThrottleState, *, account_lock_held: bool = True,
                now: float | None = None) -> Refusal | None:
        """Whether to refuse the attempt without checking the password.
        ``account_lock_held``: False when the account exists and its lock has been cleared
        in the database (an administrator's unlock or password reset)."""
        now = clock() if now is None else now
        policy = self.policy
        wait = state.address_last + policy.backoff_seconds(
            state.address_failures, policy.throttle_address_attempts) - now
        if wait > 0:
            return Refusal("address", max(1, math.ceil(wait)))
        if state.pair_failures and account_lock_held:
            wait = state.name_last + policy.backoff_seconds(
                state.name_failures, policy.lockout_attempts) - now
            if wait > 0:
                return Refusal("account", max(1, math.ceil(wait)))
        return None

    def failure(self, addr: str, username: str, *, forget_name: bool = False,
                now: float | None = None) -> tuple[int, datetime | None]:
        """Count a failed attempt. Returns the name's failures and, when the name is now
        in back-off, the end of it (kept on the account for administrators to see).
        ``forget_name``: start the name's count afresh (its lock was cleared)."""
        now = clock() if now is None else now
        memory = self.policy.throttle_memory_minutes * 60
        ip_key, name_key, pair_key = self._keys(addr, username)
        pipe = self.client.pipeline(transaction=True)
        if forget_name:
            pipe.delete(name_key)
        for key in (ip_key, name_key):
            pipe.hincrby(key, "n", 1)
            pipe.hset(key, "last", repr(now))
            pipe.expire(key, memory)
        pipe.incr(pair_key)
        pipe.expire(pair_key, memory)
        replies = pipe.execute()
        failures = int(replies[4 if forget_name else 3])
        delay = self.policy.backoff_seconds(failures, self.policy.lockout_attempts)
        until = datetime.fromtimestamp(now + delay, UTC) if delay else None
        return failures, until

    def success(self, addr: str, username: str) -> None:
        """The password was right: this address's own failures against the name go."""
        self.client.delete(self._keys(addr, username)[2])


def register_success(user: User, now: datetime | None = None) -> None:
    """A completed log-in. The account's failure count and lock stay: they hold off the
    addresses that failed against it, never this one (``LoginThrottle``)."""
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
    """The account of ``username``. Its roles load when first read, not with it: a log-in
    that fails runs the same statements whether or not the name has an account."""
    name = username.strip().lower()
    if not name or len(name) > 64 or any(ord(c) < 32 for c in name):
        return None
    return db.scalar(select(User).where(User.username == name)
                     .options(lazyload(User.role_rows)))


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
                failed_logins=0)
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
