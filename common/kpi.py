"""KPIs of the contact center: the one module that computes them all (docs/kpi.md).

Every figure is computed from the ``calls`` summary columns and a few ``call_events``
kinds by one aggregate SQL query per request (grouped by interval and dimensions), so
the dashboard, the exports and the reports always agree. Intervals are cut in the
site's time zone. The same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import (
    DateTime,
    Integer,
    Interval,
    String,
    Text,
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
SURVEY_SCORES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class KpiDef:
    """One KPI: its key, Japanese and English labels, unit and target (if any)."""

    key: str
    ja: str
    en: str
    unit: str = ""  # "" count, "%" percent, "s" seconds, "pt" score
    target: str | None = None  # KpiSettings attribute
    higher_is_better: bool = True


CATALOGUE: tuple[KpiDef, ...] = (
    KpiDef("contacts", "総着信・利用件数", "Contacts"),
    KpiDef("offered", "受付件数（待ち行列）", "Offered"),
    KpiDef("answered", "応答件数", "Answered"),
    KpiDef("abandoned", "放棄件数", "Abandoned"),
    KpiDef("short_abandoned", "短時間放棄件数", "Short abandons"),
    KpiDef("abandon_rate", "放棄率", "Abandon rate", "%", "abandon_target", False),
    KpiDef("service_level", "サービスレベル", "Service level", "%", "service_level_target"),
    KpiDef("service_level_asterisk", "サービスレベル（放棄含む）", "Service level (Asterisk)",
           "%"),
    KpiDef("asa", "平均応答速度", "Average speed of answer", "s", "asa_target", False),
    KpiDef("max_wait", "最長応答待ち時間", "Longest wait to answer", "s"),
    KpiDef("aht", "平均処理時間", "Average handle time", "s", "aht_target", False),
    KpiDef("callbacks_requested", "折り返し依頼", "Callbacks requested"),
    KpiDef("callbacks_completed", "折り返し完了", "Callbacks completed"),
    KpiDef("escalated", "職員への転送（エスカレーション）", "Escalations"),
    KpiDef("fcr", "一次解決率", "First-contact resolution", "%", "fcr_target"),
    KpiDef("faq_resolved_share", "FAQで解決した割合", "Resolved by FAQ", "%"),
    KpiDef("satisfaction", "満足度（平均）", "Satisfaction (average)", "pt",
           "satisfaction_target"),
    KpiDef("surveys", "満足度回答数", "Survey answers"),
    KpiDef("kiosk_sessions", "リモート窓口利用件数", "Kiosk sessions"),
    KpiDef("out_of_hours", "時間外着信", "Out-of-hours calls"),
)
BY_KEY = {d.key: d for d in CATALOGUE}


@dataclass
class Counts:
    """Additive sums for one group; the KPIs are derived from them (see docs/kpi.md)."""

    contacts: int = 0
    out_of_hours: int = 0
    rejected: int = 0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    callback_outcome: int = 0
    answered_in_sl: int = 0
    abandoned_in_sl: int = 0
    wait_sum: int = 0
    wait_max: int = 0
    talk_sum: int = 0
    hold_sum: int = 0
    wrapup_sum: int = 0
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    escalated: int = 0
    resolved_faq: int = 0
    fcr: int = 0
    kiosk_sessions: int = 0
    surveys: int = 0
    survey_sum: int = 0
    s1: int = 0
    s2: int = 0
    s3: int = 0
    s4: int = 0
    s5: int = 0

    def add(self, other: Counts) -> None:
        for f in fields(self):
            if f.name == "wait_max":
                self.wait_max = max(self.wait_max, other.wait_max)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    # ----- derived KPIs (None when the denominator is zero)
    @property
    def abandon_rate(self) -> float | None:
        return _pct(self.abandoned - self.short_abandoned, self.offered - self.short_abandoned)

    @property
    def service_level(self) -> float | None:
        return _pct(self.answered_in_sl, self.offered - self.short_abandoned)

    @property
    def service_level_asterisk(self) -> float | None:
        return _pct(self.answered_in_sl + self.abandoned_in_sl, self.answered + self.abandoned)

    @property
    def asa(self) -> float | None:
        return _div(self.wait_sum, self.answered)

    @property
    def max_wait(self) -> int | None:
        return self.wait_max if self.answered else None

    @property
    def aht(self) -> float | None:
        return _div(self.talk_sum + self.wrapup_sum, self.answered)

    @property
    def avg_talk(self) -> float | None:
        return _div(self.talk_sum, self.answered)

    @property
    def avg_hold(self) -> float | None:
        return _div(self.hold_sum, self.answered)

    @property
    def avg_wrapup(self) -> float | None:
        return _div(self.wrapup_sum, self.answered)

    @property
    def fcr_rate(self) -> float | None:
        return _pct(self.fcr, self.answered)

    @property
    def faq_resolved_share(self) -> float | None:
        return _pct(self.resolved_faq, self.answered)

    @property
    def satisfaction(self) -> float | None:
        return _div(self.survey_sum, self.surveys)

    @property
    def distribution(self) -> dict[int, int]:
        return {s: getattr(self, f"s{s}") for s in SURVEY_SCORES}

    def value(self, key: str) -> float | int | None:
        """The value of a catalogue KPI by key."""
        if key == "fcr":
            return self.fcr_rate
        value: float | int | None = getattr(self, key)
        return value

    def as_dict(self) -> dict[str, float | int | None]:
        return {d.key: self.value(d.key) for d in CATALOGUE}


_FIELDS = tuple(f.name for f in fields(Counts))
_WAIT_MAX = _FIELDS.index("wait_max")


def _div(a: int, b: int) -> float | None:
    return a / b if b else None


def _pct(a: int, b: int) -> float | None:
    return 100.0 * a / b if b > 0 else None


def target_of(kpi: KpiSettings, key: str) -> float | None:
    d = BY_KEY.get(key)
    if d is None or d.target is None:
        return None
    return float(getattr(kpi, d.target))


def meets(kpi: KpiSettings, key: str, value: float | int | None) -> bool | None:
    """Whether ``value`` meets the KPI's target (None: no target or no value)."""
    target = target_of(kpi, key)
    if target is None or value is None:
        return None
    return value >= target if BY_KEY[key].higher_is_better else value <= target


# --------------------------------------------------------------------------- periods
def local_range(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) local dates -> aware UTC datetimes."""
    zone = ZoneInfo(tz)
    return (datetime.combine(start, time(), zone), datetime.combine(end, time(), zone))


def month_range(year: int, month: int) -> tuple[date, date]:
    start = date(year, month, 1)
    end = date(year + (month == 12), month % 12 + 1, 1)
    return start, end


def previous_month(today: date) -> tuple[date, date]:
    first = today.replace(day=1)
    last = first - timedelta(days=1)
    return month_range(last.year, last.month)


def contract_year(today: date) -> int:
    """The fiscal (contract) year that ``today`` belongs to: April to March."""
    return today.year if today.month >= 4 else today.year - 1


def interim_range(fiscal_year: int) -> tuple[date, date]:
    """April to November of the fiscal year (interim report, due early December)."""
    return date(fiscal_year, 4, 1), date(fiscal_year, 12, 1)


def final_range(fiscal_year: int) -> tuple[date, date]:
    """The whole contract year, April to March (final report, due early March)."""
    return date(fiscal_year, 4, 1), date(fiscal_year + 1, 4, 1)


# --------------------------------------------------------------------------- SQL
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


def total(groups: Iterable[Counts]) -> Counts:
    acc = Counts()
    for c in groups:
        acc.add(c)
    return acc


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


def _transfer_rows(session: Session, *, tenant: str, start: datetime, end: datetime,
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


def _transfer_counts(rows: Iterable[tuple[Any, ...]]) -> dict[str, TransferCounts]:
    out: dict[str, TransferCounts] = {}
    for *_dims, dept, result, n in rows:
        counts = out.setdefault(str(dept), TransferCounts())
        setattr(counts, str(result), getattr(counts, str(result)) + int(n))
    return dict(sorted(out.items()))


def transfers_by_department(session: Session, *, tenant: str, start: datetime,
                            end: datetime, filters: Filters | None = None
                            ) -> dict[str, TransferCounts]:
    """Per department: distinct calls whose transfer reached each result (docs/kpi.md)."""
    return _transfer_counts(_transfer_rows(session, tenant=tenant, start=start, end=end,
                                           filters=filters))


# --------------------------------------------------------------------------- Erlang C
def erlang_c(traffic: float, agents: int) -> float:
    """Probability that a call waits (Erlang C) for ``traffic`` Erlangs on ``agents``."""
    if agents <= 0 or traffic <= 0:
        return 0.0 if traffic <= 0 else 1.0
    if traffic >= agents:
        return 1.0
    b = 1.0  # Erlang B by the stable recursion
    for n in range(1, agents + 1):
        b = traffic * b / (n + traffic * b)
    return b / (1 - (traffic / agents) * (1 - b))


def erlang_service_level(calls_per_hour: float, aht_s: float, agents: int,
                         threshold_s: float) -> float:
    """Share (0-1) of calls answered within ``threshold_s`` with ``agents`` operators."""
    if calls_per_hour <= 0:
        return 1.0
    traffic = calls_per_hour * aht_s / 3600.0
    if agents <= traffic:
        return 0.0
    pw = erlang_c(traffic, agents)
    return 1.0 - pw * math.exp(-(agents - traffic) * threshold_s / aht_s)


def agents_needed(calls_per_hour: float, aht_s: float, threshold_s: float,
                  target_pct: float, max_agents: int = 500) -> int:
    """Fewest operators whose Erlang C service level reaches ``target_pct``."""
    if calls_per_hour <= 0 or aht_s <= 0:
        return 0
    n = max(1, math.ceil(calls_per_hour * aht_s / 3600.0))
    while n < max_agents:
        if erlang_service_level(calls_per_hour, aht_s, n, threshold_s) * 100 >= target_pct:
            return n
        n += 1
    return max_agents


# --------------------------------------------------------------------------- summary
@dataclass
class Summary:
    """Everything the dashboard and the reports show for one period."""

    tenant: str
    start: date
    end: date
    total: Counts
    daily: dict[str, Counts]
    hourly: dict[str, Counts]
    operators: dict[str, Counts]
    services: dict[tuple[str, str], Counts]
    departments: dict[str, TransferCounts]
    procedures: dict[str, int]
    kiosk_locations: dict[str, int]
    out_of_hours: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def heatmap(self) -> dict[tuple[int, int], int]:
        """Offered calls per (weekday 0=Mon, local hour)."""
        out: dict[tuple[int, int], int] = {}
        for label, c in self.hourly.items():
            at = datetime.strptime(label, "%Y-%m-%d %H")
            key = (at.weekday(), at.hour)
            out[key] = out.get(key, 0) + c.offered
        return out

    def staffing(self, kpi: KpiSettings, open_days: set[str] | None = None
                 ) -> list[dict[str, Any]]:
        """Per hour of day: average offered per day with traffic, AHT, Erlang C operators."""
        per_hour: dict[int, Counts] = {}
        days: dict[int, set[str]] = {}
        for label, c in self.hourly.items():
            if not c.offered:
                continue
            hour = int(label[11:13])
            per_hour.setdefault(hour, Counts()).add(c)
            days.setdefault(hour, set()).add(label[:10])
        rows = []
        for hour in sorted(per_hour):
            c = per_hour[hour]
            calls = c.offered / len(days[hour])
            aht = c.aht or 0.0
            rows.append({"hour": hour, "days": len(days[hour]), "offered": c.offered,
                         "calls_per_hour": calls, "aht": aht,
                         "agents": agents_needed(calls, aht, kpi.service_level_seconds,
                                                 kpi.service_level_target)})
        return rows


def summarize(session: Session, *, tenant: str, start: date, end: date, kpi: KpiSettings,
              tz: str, filters: Filters | None = None) -> Summary:
    """The whole KPI picture of [start, end) (local dates) for one tenant.

    Hours already rolled up (``rollup``) are read from ``kpi_rollups``; the rest (today,
    or everything when no roll-up ran) is aggregated from the calls. Both come from
    ``aggregate``, so the figures are the same either way.
    """
    a, b = local_range(start, end, tz)
    kw: dict[str, Any] = {"tenant": tenant, "filters": filters}
    rolled = _rolled_until(session, tenant)
    split = min(max(rolled, a), b) if rolled is not None else a
    grains: list[tuple[tuple[str, ...], Counts]] = []
    if split > a:
        grains.extend(_read_rollups(session, tenant, a, split, filters))
    if b > split:
        grains.extend(aggregate(session, kpi=kpi, tz=tz, interval="hour", by=GRAIN, start=split,
                                end=b, **kw).items())
    transfer_rows: list[tuple[Any, ...]] = []
    if split > a:
        transfer_rows.extend(_read_transfer_rollups(session, tenant, a, split, filters))
    if b > split:
        transfer_rows.extend(_transfer_rows(session, start=split, end=b, **kw))
    departments = _transfer_counts(transfer_rows)
    keys = [k for k, _c in grains]
    matrix = np.array([[getattr(c, f) for f in _FIELDS] for _k, c in grains],
                      dtype=np.int64).reshape(len(grains), len(_FIELDS))

    def group(key_of: Any) -> dict[Any, Counts]:
        """Sum the grain rows per ``key_of(key)`` (None: left out)."""
        labels = [key_of(k) for k in keys]
        wanted = [i for i, label in enumerate(labels) if label is not None]
        if not wanted:
            return {}
        uniq = sorted({labels[i] for i in wanted})
        index = {u: j for j, u in enumerate(uniq)}
        rows = np.array([index[labels[i]] for i in wanted], dtype=np.int64)
        sub = matrix[wanted]
        sums = np.zeros((len(uniq), len(_FIELDS)), dtype=np.int64)
        np.add.at(sums, rows, sub)
        peak = np.zeros(len(uniq), dtype=np.int64)
        np.maximum.at(peak, rows, sub[:, _WAIT_MAX])
        sums[:, _WAIT_MAX] = peak
        return {u: Counts(*(int(v) for v in sums[j])) for u, j in index.items()}

    hourly: dict[str, Counts] = group(lambda k: k[0])
    daily: dict[str, Counts] = group(lambda k: k[0][:10])
    operators: dict[str, Counts] = group(lambda k: k[3] or None)
    services: dict[tuple[str, str], Counts] = group(lambda k: (k[1], k[2]))
    procedures = {d: c.answered for d, c in group(lambda k: k[4] or None).items() if c.answered}
    locations = {loc: c.contacts for loc, c in group(lambda k: k[5] or None).items()}
    reasons = {r: c.out_of_hours for r, c in group(lambda k: k[6]).items() if c.out_of_hours}

    def ranked(d: dict[str, int]) -> dict[str, int]:
        return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

    return Summary(
        tenant=tenant, start=start, end=end, total=total(daily.values()),
        daily=dict(sorted(daily.items())), hourly=dict(sorted(hourly.items())),
        operators=dict(sorted(operators.items())), services=dict(sorted(services.items())),
        departments=departments,
        procedures=ranked(procedures), kiosk_locations=ranked(locations),
        out_of_hours=ranked(reasons))


# --------------------------------------------------------------------------- roll-ups
def _rolled_until(session: Session, tenant: str) -> datetime | None:
    from common.models.reports import KpiRollupState

    state = session.get(KpiRollupState, tenant)
    return state.complete_until if state is not None else None


def _read_rollups(session: Session, tenant: str, start: datetime, end: datetime,
                  filters: Filters | None) -> list[tuple[tuple[str, ...], Counts]]:
    from common.models.reports import KpiRollup as R

    stmt = (select(R.label, R.service, R.channel, R.operator, R.disposition, R.location,
                   R.reason, cast(R.sums, Text))
            .where(R.tenant_id == tenant, R.hour_start >= start, R.hour_start < end))
    if filters is not None:
        if filters.service:
            stmt = stmt.where(R.service == filters.service)
        if filters.channel:
            stmt = stmt.where(R.channel == filters.channel)
        if filters.operator:
            stmt = stmt.where(R.operator == filters.operator)
    rows = session.execute(stmt).all()
    sums = json.loads("[" + ",".join(row[7] for row in rows) + "]")  # one parse, not one a row
    return [(tuple(row[:7]), Counts(*s)) for row, s in zip(rows, sums, strict=True)]


def _read_transfer_rollups(session: Session, tenant: str, start: datetime, end: datetime,
                           filters: Filters | None) -> list[tuple[Any, ...]]:
    from common.models.reports import KpiTransferRollup as T

    stmt = (select(T.service, T.channel, T.operator, T.department, T.result, T.calls)
            .where(T.tenant_id == tenant, T.hour_start >= start, T.hour_start < end))
    if filters is not None:
        if filters.service:
            stmt = stmt.where(T.service == filters.service)
        if filters.channel:
            stmt = stmt.where(T.channel == filters.channel)
        if filters.operator:
            stmt = stmt.where(T.operator == filters.operator)
    return [("", *row) for row in session.execute(stmt)]


def rollup(session: Session, *, tenant: str, start: datetime, end: datetime,
           kpi: KpiSettings, tz: str) -> int:
    """Recompute the roll-up rows of the local hours in [start, end) (hour-aligned);
    returns the number of rows written. The caller commits."""
    from sqlalchemy import delete

    from common.models.reports import KpiRollup, KpiTransferRollup

    zone = ZoneInfo(tz)
    for table in (KpiRollup, KpiTransferRollup):
        session.execute(delete(table).where(table.tenant_id == tenant,
                                            table.hour_start >= start, table.hour_start < end))
    groups = aggregate(session, tenant=tenant, start=start, end=end, kpi=kpi, tz=tz,
                       interval="hour", by=GRAIN)
    rows = []
    for key, c in groups.items():
        hour_start = datetime.strptime(key[0], "%Y-%m-%d %H").replace(tzinfo=zone)
        rows.append({"tenant_id": tenant, "hour_start": hour_start, "label": key[0],
                     "service": key[1], "channel": key[2], "operator": key[3],
                     "disposition": key[4], "location": key[5], "reason": key[6],
                     "sums": [getattr(c, f.name) for f in fields(Counts)]})
    from sqlalchemy import insert

    if rows:
        session.execute(insert(KpiRollup), rows)
    transfers = [{"tenant_id": tenant, "label": None,
                  "hour_start": datetime.strptime(h, "%Y-%m-%d %H").replace(tzinfo=zone),
                  "service": sv, "channel": ch, "operator": op, "department": dept,
                  "result": result, "calls": int(n)}
                 for h, sv, ch, op, dept, result, n in _transfer_rows(
                     session, tenant=tenant, start=start, end=end, kpi_tz=tz)]
    for t in transfers:
        del t["label"]
    if transfers:
        session.execute(insert(KpiTransferRollup), transfers)
    return len(rows) + len(transfers)


def rollup_recent(session: Session, *, tenant: str, now: datetime, kpi: KpiSettings,
                  tz: str) -> tuple[datetime, datetime]:
    """Roll up from (last completion − the FCR window − 1 day) to the start of the
    current local hour; the recent days are recomputed because dispositions, surveys and
    repeat calls arrive after the call. The first run starts at the first call."""
    from common.models.reports import KpiRollupState

    zone = ZoneInfo(tz)
    end = now.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    state = session.get(KpiRollupState, tenant)
    if state is None:
        first = session.scalar(select(func.min(Call.arrived_at))
                               .where(Call.tenant_id == tenant))
        begin = first if first is not None else end
    else:
        begin = state.complete_until - timedelta(days=kpi.fcr_repeat_days + 1)
    begin = begin.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    chunk = begin
    while chunk < end:  # a month at a time
        nxt = min(end, chunk + timedelta(days=31))
        rollup(session, tenant=tenant, start=chunk, end=nxt, kpi=kpi, tz=tz)
        chunk = nxt
    if state is None:
        session.add(KpiRollupState(tenant_id=tenant, complete_until=end, updated_at=now))
    else:
        state.complete_until, state.updated_at = end, now
    return begin, end
