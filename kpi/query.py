"""The SQL: ``aggregate`` is one query over the ``calls`` summary columns, joined to
per-call flags from ``call_events`` (callbacks, escalation) and to a window over the
same caller's next call (first-contact resolution), grouped by interval and dimensions;
the transfer breakdown per department is the one other query. Intervals are cut in the
site's time zone. The same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    DateTime,
    Integer,
    Interval,
    String,
    and_,
    case,
    cast,
    func,
    literal_column,
    not_,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from common.models.calls import Call, CallEvent
from common.settings import KpiSettings
from kpi.definitions import SURVEY_SCORES, Counts

INTERVALS = ("15min", "hour", "day", "month")
DIMENSIONS: dict[str, Any] = {
    "service": Call.service_id, "channel": Call.channel, "operator": Call.agent,
    "disposition": case((Call.agent_connected_at.is_not(None), Call.disposition), else_=""),
    "location": case((Call.channel == "kiosk", func.coalesce(Call.location, Call.caller)),
                     else_=""),
    "reason": case((Call.outcome == "out_of_hours", Call.hours_reason), else_=""),
}
#: The grain of the roll-ups and of ``summarize``: every breakdown is a sum over it.
GRAIN = ("service", "channel", "operator", "disposition", "location", "reason")


def _local(session: Session, tz: str, at: datetime) -> Any:
    if _dialect(session) == "postgresql":
        return func.timezone(tz, func.timezone("UTC", Call.arrived_at))
    offset = ZoneInfo(tz).utcoffset(at.replace(tzinfo=None)) or timedelta()
    minutes = int(offset.total_seconds() // 60)
    return func.datetime(Call.arrived_at, f"{minutes:+d} minutes")


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def bucket_expr(session: Session, interval: str, tz: str, at: datetime) -> Any:
    """Local-time interval label: 'YYYY-MM', 'YYYY-MM-DD', 'YYYY-MM-DD HH',
    'YYYY-MM-DD HH:MM' (15-minute start)."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}")
    local = _local(session, tz, at)
    if _dialect(session) == "postgresql":
        fmt = {"month": "YYYY-MM", "day": "YYYY-MM-DD", "hour": "YYYY-MM-DD HH24",
               "15min": "YYYY-MM-DD HH24:"}[interval]
        label: Any = func.to_char(local, fmt)
        if interval == "15min":
            quarter = cast(func.floor(func.extract("minute", local) / 15) * 15, Integer)
            label = label.concat(func.lpad(cast(quarter, String), 2, "0"))
        return label
    length = {"month": 7, "day": 10, "hour": 13, "15min": 14}[interval]
    label2: Any = func.substr(local, 1, length)
    if interval == "15min":
        minute = cast(func.substr(local, 15, 2), Integer)
        label2 = label2.concat(func.printf("%02d", (minute // 15) * 15))
    return label2


def _plus_days(session: Session, column: Any, days: int) -> Any:
    if _dialect(session) == "postgresql":
        return type_coerce(column, DateTime) + literal_column(f"interval '{int(days)} days'",
                                                              Interval)
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' text; keep the fraction for exact bounds.
    return func.strftime("%Y-%m-%d %H:%M:%S", column, f"+{int(days)} days").concat(
        func.substr(column, 20))


def _event_flags(tenant: str, start: datetime, end: datetime) -> Any:
    """Per call of the period: callback requested/completed, escalated (0/1)."""
    kinds = ("callback_requested", "callback_completed", "transfer")
    answered = and_(CallEvent.kind == "transfer",
                    CallEvent.data["result"].as_string() == "answered")
    return (select(CallEvent.call_id.label("call_id"),
                   func.max(case((CallEvent.kind == "callback_requested", 1), else_=0))
                   .label("cb_requested"),
                   func.max(case((CallEvent.kind == "callback_completed", 1), else_=0))
                   .label("cb_completed"),
                   func.max(case((answered, 1), else_=0)).label("escalated"))
            .join(Call, Call.id == CallEvent.call_id)
            .where(CallEvent.kind.in_(kinds), Call.tenant_id == tenant,
                   Call.arrived_at >= start, Call.arrived_at < end)
            .group_by(CallEvent.call_id)
            .subquery("flags"))


def _repeats(session: Session, tenant: str, start: datetime, end: datetime,
             days: int) -> Any:
    """Per phone call with a number: 1 when the same number called again within ``days``
    (the next call of that number, looked up with a window over the period + ``days``)."""
    next_at = func.lead(Call.arrived_at).over(partition_by=Call.caller,
                                              order_by=(Call.arrived_at, Call.id))
    horizon = end + timedelta(days=days)
    inner = (select(Call.id.label("id"), Call.channel.label("channel"),
                    Call.arrived_at.label("arrived_at"), next_at.label("next_at"))
             .where(Call.tenant_id == tenant, Call.arrived_at >= start,
                    Call.arrived_at < horizon, Call.caller != "")
             .subquery("seq"))
    repeated = case((and_(inner.c.channel == "phone", inner.c.next_at.is_not(None),
                          inner.c.next_at <= _plus_days(session, inner.c.arrived_at, days)), 1),
                    else_=0)
    return select(inner.c.id.label("id"), repeated.label("repeated")).subquery("repeats")


def _sum(cond: ColumnElement[bool], value: Any = 1) -> Any:
    return func.coalesce(func.sum(case((cond, value), else_=0)), 0)


@dataclass(frozen=True)
class Filters:
    service: str | None = None
    channel: str | None = None
    operator: str | None = None

    def apply(self, stmt: Any) -> Any:
        if self.service:
            stmt = stmt.where(Call.service_id == self.service)
        if self.channel:
            stmt = stmt.where(Call.channel == self.channel)
        if self.operator:
            stmt = stmt.where(Call.agent == self.operator)
        return stmt


def aggregate(session: Session, *, tenant: str, start: datetime, end: datetime,
              kpi: KpiSettings, tz: str, interval: str | None = None,
              by: Sequence[str] = (), filters: Filters | None = None
              ) -> dict[tuple[str, ...], Counts]:
    """Counts per (interval label, *dimension values) for calls arrived in [start, end).

    Without ``interval`` and ``by`` the result has one key, ``()``.
    """
    for dim in by:
        if dim not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dim!r}")
    sl = kpi.service_level_seconds
    short = kpi.short_abandon_seconds
    wait = func.coalesce(Call.wait_seconds, 0)
    queued = Call.queued_at.is_not(None)
    answered = Call.agent_connected_at.is_not(None)
    abandoned = and_(queued, Call.agent_connected_at.is_(None), Call.outcome == "abandoned")
    flags = _event_flags(tenant, start, end)
    repeats = _repeats(session, tenant, start, end, kpi.fcr_repeat_days)
    escalated = func.coalesce(flags.c.escalated, 0) == 1
    resolved = and_(answered, Call.disposition.in_(kpi.resolved_dispositions), not_(escalated),
                    func.coalesce(repeats.c.repeated, 0) == 0)
    score = Call.survey_score
    valid_score = score.in_(SURVEY_SCORES)
    columns: list[Any] = [
        func.count().label("contacts"),
        _sum(Call.outcome == "out_of_hours").label("out_of_hours"),
        _sum(Call.outcome == "rejected").label("rejected"),
        _sum(queued).label("offered"),
        _sum(answered).label("answered"),
        _sum(abandoned).label("abandoned"),
        _sum(and_(abandoned, wait < short)).label("short_abandoned"),
        _sum(and_(queued, Call.outcome == "callback")).label("callback_outcome"),
        _sum(and_(answered, wait <= sl)).label("answered_in_sl"),
        _sum(and_(abandoned, wait <= sl)).label("abandoned_in_sl"),
        _sum(answered, wait).label("wait_sum"),
        func.coalesce(func.max(case((answered, wait), else_=0)), 0).label("wait_max"),
        _sum(answered, func.coalesce(Call.talk_seconds, 0)).label("talk_sum"),
        _sum(answered, func.coalesce(Call.hold_seconds, 0)).label("hold_sum"),
        _sum(answered, func.coalesce(Call.wrapup_seconds, 0)).label("wrapup_sum"),
        _sum(func.coalesce(flags.c.cb_requested, 0) == 1).label("callbacks_requested"),
        _sum(func.coalesce(flags.c.cb_completed, 0) == 1).label("callbacks_completed"),
        _sum(and_(queued, escalated)).label("escalated"),
        _sum(and_(answered, Call.disposition == "resolved_faq")).label("resolved_faq"),
        _sum(resolved).label("fcr"),
        _sum(Call.channel == "kiosk").label("kiosk_sessions"),
        _sum(valid_score).label("surveys"),
        _sum(valid_score, score).label("survey_sum"),
        *[_sum(score == s).label(f"s{s}") for s in SURVEY_SCORES],
    ]
    keys: list[Any] = []
    if interval:
        keys.append(bucket_expr(session, interval, tz, start).label("bucket"))
    keys.extend(func.coalesce(DIMENSIONS[d], "").label(d) for d in by)
    stmt = (select(*keys, *columns)
            .select_from(Call)
            .outerjoin(flags, flags.c.call_id == Call.id)
            .outerjoin(repeats, repeats.c.id == Call.id)
            .where(Call.tenant_id == tenant, Call.arrived_at >= start, Call.arrived_at < end))
    stmt = (filters or Filters()).apply(stmt)
    if keys:
        # by position: PostgreSQL would see the bound parameters of an expression twice
        stmt = stmt.group_by(*(literal_column(str(i)) for i in range(1, len(keys) + 1)))
    out: dict[tuple[str, ...], Counts] = {}
    n = len(keys)
    for row in session.execute(stmt):
        values = tuple(row)
        key = tuple(str(v) for v in values[:n])
        out[key] = Counts(*(int(v or 0) for v in values[n:]))
    return out


# ------------------------------------------------------------------ other breakdowns
@dataclass
class TransferCounts:
    """Transfers to one department: calls with a started/answered/... step."""

    attempted: int = 0
    answered: int = 0
    failed: int = 0
    returned: int = 0
    abandoned: int = 0


TRANSFER_RESULTS = ("answered", "failed", "returned", "abandoned")


def transfer_rows(session: Session, *, tenant: str, start: datetime, end: datetime,
                  kpi_tz: str | None = None, filters: Filters | None = None
                  ) -> list[tuple[Any, ...]]:
    """(hour label or '', service, channel, operator, department, result, calls) with
    distinct calls per result and ``attempted`` for every call with a transfer."""
    dept = func.coalesce(CallEvent.data["department"].as_string(), "")
    result = func.coalesce(CallEvent.data["result"].as_string(), "")
    dims: list[Any] = [func.coalesce(DIMENSIONS[d], "") for d in ("service", "channel",
                                                                  "operator")]
    hour: Any = (bucket_expr(session, "hour", kpi_tz, start) if kpi_tz
                 else literal_column("''"))
    out: list[tuple[Any, ...]] = []
    whats: list[Any] = [result, literal_column("'attempted'")]
    for what in whats:
        stmt = (select(hour, *dims, dept, what, func.count(func.distinct(CallEvent.call_id)))
                .join(Call, Call.id == CallEvent.call_id)
                .where(Call.tenant_id == tenant, Call.arrived_at >= start,
                       Call.arrived_at < end, CallEvent.kind == "transfer"))
        stmt = (filters or Filters()).apply(stmt)
        stmt = stmt.group_by(*(literal_column(str(i)) for i in range(1, 7)))
        out.extend(tuple(row) for row in session.execute(stmt)
                   if row[5] in (*TRANSFER_RESULTS, "attempted"))
    return out


def transfer_counts(rows: Iterable[tuple[Any, ...]]) -> dict[str, TransferCounts]:
    out: dict[str, TransferCounts] = {}
    for *_dims, dept, result, n in rows:
        counts = out.setdefault(str(dept), TransferCounts())
        setattr(counts, str(result), getattr(counts, str(result)) + int(n))
    return dict(sorted(out.items()))


def transfers_by_department(session: Session, *, tenant: str, start: datetime,
                            end: datetime, filters: Filters | None = None
                            ) -> dict[str, TransferCounts]:
    """Per department: distinct calls whose transfer reached each result (docs/kpi.md)."""
    return transfer_counts(transfer_rows(session, tenant=tenant, start=start, end=end,
                                         filters=filters))

