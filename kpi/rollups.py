"""Roll-ups: ``aggregate``'s sums stored per local hour and grain in ``kpi_rollups``
(and transfers in ``kpi_transfer_rollups``), so a month is read instead of scanned.
``rollup_recent`` (the rq cron job ``reports.jobs.kpi_rollup``) keeps them up to the
current hour; ``summarize`` reads them back through the readers here (docs/kpi.md)."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Text, cast, delete, func, insert, select
from sqlalchemy.orm import Session

from common.models.calls import Call
from common.models.reports import KpiRollup, KpiRollupState, KpiTransferRollup
from common.settings import KpiSettings
from kpi.definitions import Counts
from kpi.query import GRAIN, Filters, aggregate, transfer_rows


def rolled_until(session: Session, tenant: str) -> datetime | None:
    """Up to which hour the tenant's roll-ups are complete (None: never rolled up)."""
    state = session.get(KpiRollupState, tenant)
    return state.complete_until if state is not None else None


def read_rollups(session: Session, tenant: str, start: datetime, end: datetime,
                 filters: Filters | None) -> list[tuple[tuple[str, ...], Counts]]:
    """The rolled-up grain rows of [start, end): (label, *GRAIN values) and their sums."""
    R = KpiRollup
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


def read_transfer_rollups(session: Session, tenant: str, start: datetime, end: datetime,
                          filters: Filters | None) -> list[tuple[Any, ...]]:
    """The rolled-up transfer rows of [start, end) as ``transfer_rows`` gives them, with
    an empty hour label."""
    T = KpiTransferRollup
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
    if rows:
        session.execute(insert(KpiRollup), rows)
    transfers = [{"tenant_id": tenant, "label": None,
                  "hour_start": datetime.strptime(h, "%Y-%m-%d %H").replace(tzinfo=zone),
                  "service": sv, "channel": ch, "operator": op, "department": dept,
                  "result": result, "calls": int(n)}
                 for h, sv, ch, op, dept, result, n in transfer_rows(
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
