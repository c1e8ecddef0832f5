"""Server-Sent Events for the consoles: one generator per browser, reading the event stream.

Each open console holds one request whose generator blocks on ``XREAD`` of the event
stream ``{prefix}:events`` (the same records as the pub/sub channel, but with ids): the
stream id is the SSE ``id:``, so a browser that reconnects sends ``Last-Event-ID`` and
continues exactly where it stopped (Redis keeps ``redis.event_stream_maxlen`` events).
A page passes the newest id it rendered (``?last_id=``) so nothing between the page and
the stream is lost. No polling: a blocked ``XREAD`` wakes when an event arrives.

Events are filtered per viewer (tenant, role, own phone/extension) and reduced to what
the page needs to decide what to refresh -- never a caller's number, name or note text:
personal data is fetched over the audited pages. The stream is passive (it does not keep
the session alive) and ends with an ``expired`` message when the session does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, request, session

from common.events import Event, EventError, decode
from common.keys import Keys
from common.models.accounts import OPERATOR, STAFF, SUPERVISOR, User
from web.access import current_user, login_required
from web.console import command_owner_key, queue_tenants
from web.db import resources
from web.sessions import RedisSession, mark_passive, session_key

logger = logging.getLogger(__name__)

bp = Blueprint("sse", __name__, url_prefix="/console")
STREAM_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")
CLIENT_KEY = "madoguchi.sse_redis"
BLOCK_MS = 15000
RETRY_MS = 2000


@dataclass(frozen=True)
class Viewer:
    user_id: int
    tenant: str
    roles: frozenset[str]
    endpoint: str
    extension: str

    @classmethod
    def of(cls, user: User) -> Viewer:
        return cls(user.id, user.tenant_id, user.roles, user.sip_endpoint or "",
                   user.extension or "")


def project(ev: Event, viewer: Viewer, queue_tenant: dict[str, str],
            owner: Callable[[str], str | None]) -> dict[str, Any] | None:
    """What ``viewer`` may see of ``ev`` (a small dict), or None to drop it."""
    d: dict[str, Any] = ev.payload()
    t = ev.type
    sup = SUPERVISOR in viewer.roles
    op = OPERATOR in viewer.roles
    staff = STAFF in viewer.roles
    if t == "command.result":
        if owner(str(d.get("command_id"))) != str(viewer.user_id):
            return None
        return {k: d.get(k) for k in ("command_id", "command", "ok", "code")}
    if t in ("queue.member", "queue.caller"):
        if queue_tenant.get(str(d.get("queue"))) != viewer.tenant or not (sup or op):
            return None
        if t == "queue.member":
            if not sup and d.get("endpoint") != viewer.endpoint:
                return None
            return {k: d.get(k) for k in ("queue", "endpoint", "logged_in", "paused",
                                           "reason", "status", "in_call")}
        return {k: d.get(k) for k in ("queue", "call_id", "state", "waiting",
                                       "wait_seconds", "agent")}
    if t == "site.state":  # the two-site form: no personal data, every console
        return {k: d.get(k) for k in ("site", "state", "serving")}
    if t == "site.takeover":
        return {k: d.get(k) for k in ("lost", "by")}
    tenant = d.get("tenant")
    if tenant != viewer.tenant:
        return None
    if t == "call.arrived":
        return {k: d.get(k) for k in ("call_id", "service", "channel")} if (sup or op) else None
    if t == "call.ended":
        return {"call_id": d.get("call_id")}
    if t == "call.transfer":
        mine = (op and d.get("operator") == viewer.endpoint) or \
            (staff and bool(viewer.extension) and d.get("target") == viewer.extension)
        if not (mine or sup):
            return None
        return {k: d.get(k) for k in ("call_id", "kind", "target", "department", "operator",
                                       "result", "reason")}
    if t in ("case.note", "case.outcome"):
        return {k: d.get(k) for k in ("call_id", "note_id", "author_role", "disposition")
                if k in d}
    if t == "transcript.updated":
        return {k: d.get(k) for k in ("call_id", "what", "state")} if (sup or op or staff) \
            else None
    if t == "kiosk.card":  # the card flow's step, never the data
        return {k: d.get(k) for k in ("call_id", "state", "error")} if (sup or op or staff) \
            else None
    if t == "device.state":
        return {k: d.get(k) for k in ("extension", "state")}
    return None


def stream_client(app: Flask) -> redis.Redis:
    """A Redis client whose reads may block longer than an XREAD (shared pool)."""
    client: redis.Redis | None = app.extensions.get(CLIENT_KEY)
    if client is None:
        res = resources(app)
        client = redis.Redis.from_url(res.settings.redis.url,
                                      socket_timeout=BLOCK_MS / 1000 + 10,
                                      socket_connect_timeout=2)
        app.extensions[CLIENT_KEY] = client
    return client


def latest_id(client: redis.Redis, keys: Keys) -> str:
    """The newest event id (pages hand it to their stream so nothing is missed)."""
    rows: Any = client.xrevrange(keys.events, count=1)
    if not rows:
        return "0-0"
    sid = rows[0][0]
    return sid.decode() if isinstance(sid, bytes) else str(sid)


def format_event(stream_id: str, body: dict[str, Any]) -> str:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return f"id: {stream_id}\ndata: {data}\n\n"


def events(client: redis.Redis, keys: Keys, viewer: Viewer, queue_tenant: dict[str, str],
           cursor: str, session_alive: Callable[[], bool],
           block_ms: int = BLOCK_MS) -> Iterator[str]:
    """The SSE text for one viewer, from ``cursor`` on, until the session ends."""
    owners: dict[str, str | None] = {}

    def owner(command_id: str) -> str | None:
        if command_id not in owners:
            raw = client.get(command_owner_key(keys, command_id))
            owners[command_id] = raw.decode() if isinstance(raw, bytes) else raw
        return owners[command_id]

    yield f"retry: {RETRY_MS}\n\n"
    while True:
        try:
            reply: Any = client.xread({keys.events: cursor}, count=200, block=block_ms)
        except redis.RedisError as exc:
            logger.warning("event stream read failed: %s", exc)
            yield "event: unavailable\ndata: {}\n\n"
            return
        if not reply:
            if not session_alive():
                yield "event: expired\ndata: {}\n\n"
                return
            yield ": keepalive\n\n"
            continue
        for stream_id, fields in reply[0][1]:
            sid = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
            cursor = sid
            body = fields.get(b"e") or fields.get("e")
            try:
                ev = decode(body)
            except EventError:
                continue
            shown = project(ev, viewer, queue_tenant, owner)
            if shown is not None:
                yield format_event(sid, {"type": ev.type, "at": ev.at.isoformat(),
                                         "data": shown})
        if len(owners) > 1000:
            owners.clear()


@bp.get("/events")
@login_required(roles={OPERATOR, STAFF, SUPERVISOR})
def stream() -> Response:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    res = resources(app)
    client = stream_client(app)
    given = request.headers.get("Last-Event-ID") or request.args.get("last_id", "")
    cursor = given if STREAM_ID_RE.match(given or "") else latest_id(client, res.keys)
    sid = session.sid if isinstance(session, RedisSession) else None
    key = session_key(res.keys, sid) if sid else ""

    def alive() -> bool:
        try:
            return bool(key) and bool(client.exists(key))
        except redis.RedisError:
            return False

    body = events(client, res.keys, Viewer.of(user), queue_tenants(res.settings), cursor,
                  alive, block_ms=int(app.config.get("SSE_BLOCK_MS", BLOCK_MS)))
    return Response(body, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


mark_passive("sse.stream")
