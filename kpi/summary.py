"""``summarize``: the whole KPI picture of a period (totals, per day, per hour, per
operator, per service and channel, transfers, procedures, kiosk locations, out-of-hours
reasons), read from the roll-ups for closed hours and aggregated from the calls for the
rest; ``Summary`` also derives the weekday heat map and the Erlang C staffing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from common.settings import KpiSettings
from kpi.definitions import COUNT_FIELDS, Counts, total
from kpi.erlang import agents_needed
from kpi.periods import local_range
from kpi.query import GRAIN, Filters, TransferCounts, aggregate, transfer_counts, transfer_rows
from kpi.rollups import read_rollups, read_transfer_rollups, rolled_until

_WAIT_MAX = COUNT_FIELDS.index("wait_max")


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
    rolled = rolled_until(session, tenant)
    split = min(max(rolled, a), b) if rolled is not None else a
    grains: list[tuple[tuple[str, ...], Counts]] = []
    if split > a:
        grains.extend(read_rollups(session, tenant, a, split, filters))
    if b > split:
        grains.extend(aggregate(session, kpi=kpi, tz=tz, interval="hour", by=GRAIN, start=split,
                                end=b, **kw).items())
    transfers: list[tuple[Any, ...]] = []
    if split > a:
        transfers.extend(read_transfer_rollups(session, tenant, a, split, filters))
    if b > split:
        transfers.extend(transfer_rows(session, start=split, end=b, **kw))
    departments = transfer_counts(transfers)
    keys = [k for k, _c in grains]
    matrix = np.array([[getattr(c, f) for f in COUNT_FIELDS] for _k, c in grains],
                      dtype=np.int64).reshape(len(grains), len(COUNT_FIELDS))

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
        sums = np.zeros((len(uniq), len(COUNT_FIELDS)), dtype=np.int64)
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
