"""Server-side sessions in Redis, with idle and absolute timeouts.

The browser holds only a random session id (256 bits) in an HttpOnly cookie; the
session itself is a JSON document at ``{prefix}:session:{sid}`` that expires after
``web.session_idle_minutes`` without a request, and is refused in any case
``web.session_absolute_hours`` after it was created. Each signed-in user's session ids
are kept in ``{prefix}:user:{user_id}:sessions`` so that an administrator (or a password
reset, or disabling the account) can end all of them at once.

When Redis is unreachable the request gets an empty session marked ``unavailable``:
public pages (the health page) still work, pages that need a log-in answer 503.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, Request, Response, request
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from common.keys import Keys
from common.settings import Settings

logger = logging.getLogger(__name__)

SID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
META = "_meta"

#: Endpoints whose requests do not count as activity: a status page left open (it
#: refreshes itself) must not keep a session alive past its idle timeout.
PASSIVE_ENDPOINTS: set[str] = {"static", "health.health_page", "health.health_json"}


def mark_passive(endpoint: str) -> None:
    """Let requests to ``endpoint`` (e.g. an event stream) leave the idle clock alone."""
    PASSIVE_ENDPOINTS.add(endpoint)


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: int
    absolute_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        idle = settings.web.session_idle_minutes
        absolute = settings.web.session_absolute_hours
        return cls(idle_seconds=max(60, idle * 60), absolute_seconds=max(600, absolute * 3600))


def session_key(keys: Keys, sid: str) -> str:
    return f"{keys.prefix}:session:{sid}"


def user_sessions_key(keys: Keys, user_id: int) -> str:
    return f"{keys.prefix}:user:{user_id}:sessions"


def new_sid() -> str:
    return secrets.token_urlsafe(32)


def handle(sid: str) -> str:
    """A name for a session that can be shown to an administrator (not usable as a cookie)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:16]


class RedisSession(CallbackDict[str, Any], SessionMixin):
    """A dict that knows its id, its age, and whether it changed."""

    def __init__(self, initial: dict[str, Any] | None = None, sid: str | None = None,
                 created: float | None = None, expired: bool = False,
                 unavailable: bool = False) -> None:
        def on_update(_self: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.new = sid is None
        self.created = created if created is not None else time.time()
        self.expired = expired
        self.unavailable = unavailable
        self.modified = False
        self.rotate = False
        # The account the session belonged to when it was opened (for the user index).
        self.opened_uid: Any = (initial or {}).get("uid")

    def regenerate(self) -> None:
        """Give the session a fresh id (on log-in: no session fixation)."""
        self.rotate = True
        self.created = time.time()
        self.modified = True


class RedisSessionInterface(SessionInterface):
    def __init__(self, client: redis.Redis, keys: Keys, policy: SessionPolicy) -> None:
        self.client = client
        self.keys = keys
        self.policy = policy

    # -- reading -------------------------------------------------------------------
    def open_session(self, app: Flask, request: Request) -> RedisSession:
        sid = request.cookies.get(self.get_cookie_name(app), "")
        if not SID_RE.match(sid):
            return RedisSession(expired=bool(sid))
        try:
            raw = self.client.get(session_key(self.keys, sid))
        except redis.RedisError as exc:
            logger.warning("session store unavailable: %s", exc)
            return RedisSession(unavailable=True)
        if raw is None:
            return RedisSession(expired=True)
        try:
            data = json.loads(raw)
            meta = data.pop(META)
            created, last = float(meta["created"]), float(meta["last"])
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("discarding unreadable session")
            return RedisSession(expired=True)
        now = time.time()
        if (now - last > self.policy.idle_seconds
                or now - created > self.policy.absolute_seconds):
            self._delete(sid, data.get("uid"))
            return RedisSession(expired=True)
        return RedisSession(data, sid=sid, created=created)

    # -- writing -------------------------------------------------------------------
    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, RedisSession)  # nosec B101 # type narrowing, not a check
        if session.unavailable:
            return
        try:
            self._save(app, session, response)
        except redis.RedisError as exc:
            logger.warning("session not saved, session store unavailable: %s", exc)

    def _save(self, app: Flask, session: RedisSession, response: Response) -> None:
        if (session.sid is not None and not session.modified
                and request.endpoint in PASSIVE_ENDPOINTS):
            return
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        if not session:
            if session.sid is not None:
                self._delete(session.sid, session.opened_uid)
                response.delete_cookie(name, domain=domain, path=path,
                                       secure=self.get_cookie_secure(app),
                                       httponly=self.get_cookie_httponly(app),
                                       samesite=self.get_cookie_samesite(app))
            elif session.expired:
                response.delete_cookie(name, domain=domain, path=path)
            return
        if session.rotate and session.sid is not None:
            self._delete(session.sid, session.opened_uid)
            session.sid = None
        sid = session.sid or new_sid()
        now = time.time()
        ttl = int(min(self.policy.idle_seconds,
                      self.policy.absolute_seconds - (now - session.created))) + 1
        if ttl <= 1:
            self._delete(sid, session.get("uid"))
            response.delete_cookie(name, domain=domain, path=path)
            return
        data = dict(session)
        data[META] = {"created": session.created, "last": now}
        uid = session.get("uid")
        existing = session.sid is not None
        pipe = self.client.pipeline()
        # An existing session is only ever updated, never re-created: a slow request that
        # finishes after a log-out or an administrator's "end session" cannot revive it.
        pipe.set(session_key(self.keys, sid), json.dumps(data, separators=(",", ":")), ex=ttl,
                 xx=existing, nx=not existing)
        if isinstance(uid, int):
            index = user_sessions_key(self.keys, uid)
            pipe.sadd(index, sid)
            pipe.expire(index, self.policy.absolute_seconds + 60)
        stored = pipe.execute()[0]
        if not stored:
            if isinstance(uid, int):
                self.client.srem(user_sessions_key(self.keys, uid), sid)
            response.delete_cookie(name, domain=domain, path=path)
            return
        session.sid = sid
        response.set_cookie(name, sid, domain=domain, path=path,
                            secure=self.get_cookie_secure(app),
                            httponly=self.get_cookie_httponly(app),
                            samesite=self.get_cookie_samesite(app))
        response.vary.add("Cookie")

    def _delete(self, sid: str, uid: Any) -> None:
        pipe = self.client.pipeline()
        pipe.delete(session_key(self.keys, sid))
        if isinstance(uid, int):
            pipe.srem(user_sessions_key(self.keys, uid), sid)
        pipe.execute()

    # -- administration ------------------------------------------------------------
    def user_sessions(self, user_id: int) -> list[dict[str, Any]]:
        """The live sessions of a user: id prefix, created, last request, address."""
        out = []
        index = user_sessions_key(self.keys, user_id)
        for raw_sid in self.client.smembers(index):
            sid = raw_sid.decode() if isinstance(raw_sid, bytes) else str(raw_sid)
            raw = self.client.get(session_key(self.keys, sid))
            if raw is None:
                self.client.srem(index, sid)
                continue
            try:
                data = json.loads(raw)
                meta = data[META]
            except (ValueError, KeyError, TypeError):
                continue
            if data.get("uid") != user_id:
                continue
            out.append({"handle": handle(sid), "created": float(meta["created"]),
                        "last": float(meta["last"]), "remote_addr": data.get("ip", "")})
        return sorted(out, key=lambda s: s["last"], reverse=True)

    def end_user_sessions(self, user_id: int, keep: Iterable[str] = ()) -> int:
        """End every session of a user (except ``keep``); returns how many ended."""
        index = user_sessions_key(self.keys, user_id)
        keep = set(keep)
        ended = 0
        for raw_sid in self.client.smembers(index):
            sid = raw_sid.decode() if isinstance(raw_sid, bytes) else str(raw_sid)
            if sid in keep:
                continue
            ended += int(self.client.delete(session_key(self.keys, sid)))
            self.client.srem(index, sid)
        return ended

    def end_session(self, user_id: int, session_handle: str) -> bool:
        """End one session of a user, named by its ``handle``."""
        index = user_sessions_key(self.keys, user_id)
        for raw_sid in self.client.smembers(index):
            sid = raw_sid.decode() if isinstance(raw_sid, bytes) else str(raw_sid)
            if handle(sid) == session_handle:
                self._delete(sid, user_id)
                return True
        return False


def init_app(app: Flask, client: redis.Redis, keys: Keys, settings: Settings) -> None:
    app.session_interface = RedisSessionInterface(client, keys,
                                                  SessionPolicy.from_settings(settings))


def interface(app: Flask) -> RedisSessionInterface:
    iface = app.session_interface
    assert isinstance(iface, RedisSessionInterface)  # nosec B101 # type narrowing, not a check
    return iface
