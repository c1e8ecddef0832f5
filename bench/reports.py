"""Benchmark of the KPI queries and the monthly report on a realistic month.

Usage::

    python bench/reports.py [--calls 200000] [--skip-postgres]

Generates ``--calls`` calls over October 2026 with a realistic shape (weekdays with a
Monday peak, a morning and an early-afternoon peak inside 08:30-17:15, some calls out
of hours and on the Sports Day holiday, 6 % kiosk sessions), each with a short timeline
(arrived, queue join, connect/abandon, end) plus transfers, callbacks, surveys and
wrap-up, into a fresh SQLite file and a fresh PostgreSQL database. Then it times

- the hourly KPI roll-up of the month (what the ``kpi_rollup`` cron job does), and one
  month query before it (everything aggregated from the calls) for comparison;
- the dashboard's month query: ``kpi.summarize`` for the month (what ``/kpi/``
  runs for a month, reading the roll-ups), median of 5 runs after one warm-up;
- the monthly report: ``reports.jobs.generate_report`` (KPIs, HTML, PDF, Excel), one run.

Prints the results and writes bench/results/reports.json. Targets: report < 10 s,
dashboard month query < 500 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("sqlalchemy", "weasyprint")

from sqlalchemy import insert  # noqa: E402

import kpi  # noqa: E402
from common.db import init_schema, make_engine, session_factory, transaction  # noqa: E402
from common.models.calls import Call, CallEvent  # noqa: E402
from common.settings import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reports.json"
TARGETS = {"report_s": 10.0, "dashboard_ms": 500.0}
PG_ADMIN_URL = os.environ.get("MADOGUCHI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
JST = ZoneInfo("Asia/Tokyo")
MONTH = (date(2026, 10, 1), date(2026, 11, 1))
HOLIDAYS = {date(2026, 10, 12)}
# Relative call volume per open hour (08:30-17:15): morning peak, lunch dip, 13-14 peak.
HOUR_WEIGHTS = {8: 0.6, 9: 1.6, 10: 1.5, 11: 1.2, 12: 0.7, 13: 1.3, 14: 1.1, 15: 0.9,
                16: 0.7, 17: 0.2}
DAY_WEIGHTS = {0: 1.35, 1: 1.0, 2: 0.95, 3: 0.95, 4: 1.1}
DEPARTMENTS = ("koseki", "juminhyo", "mynumber")
DISPOSITIONS = (("resolved_faq", 0.45), ("e_application_help", 0.2), ("complaint", 0.05),
                ("escalated", 0.1), ("other", 0.2))
KIOSKS = ("中央公民館", "北部出張所", "南部出張所", "西部市民センター", "東部市民センター",
          "駅前サービスコーナー", "図書館", "保健センター")


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for name, weight in table:
        x -= weight
        if x <= 0:
            return name
    return table[-1][0]


def arrival_times(rng: random.Random, n: int) -> list[datetime]:
    """``n`` arrival times over the month: 95 % in open hours with the day/hour shape."""
    days = [MONTH[0] + timedelta(days=i) for i in range((MONTH[1] - MONTH[0]).days)]
    open_days = [d for d in days if d.weekday() < 5 and d not in HOLIDAYS]
    slots: list[tuple[date, int]] = [(d, h) for d in open_days for h in HOUR_WEIGHTS]
    weights = [DAY_WEIGHTS[d.weekday()] * HOUR_WEIGHTS[h] for d, h in slots]
    out: list[datetime] = []
    n_open = int(n * 0.95)
    for d, h in rng.choices(slots, weights, k=n_open):
        low = 30 * 60 if h == 8 else 0
        high = 15 * 60 if h == 17 else 3600
        second = rng.randrange(low, high)
        out.append(datetime(d.year, d.month, d.day, h, tzinfo=JST) + timedelta(seconds=second))
    for _ in range(n - n_open):  # out of hours: evenings, weekends, the holiday
        d = rng.choice(days)
        hour = rng.choice([6, 7, 18, 19, 20, 21]) if d in open_days else rng.randrange(8, 18)
        out.append(datetime(d.year, d.month, d.day, hour, tzinfo=JST)
                   + timedelta(seconds=rng.randrange(3600)))
    out.sort()
    return out


def generate(n: int, seed: int = 20261001) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    calls: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    callers = [f"09{rng.randrange(10**8):08d}" for _ in range(int(n * 0.7))]

    def ev(call_id: str, at: datetime, kind: str, data: dict[str, Any]) -> None:
        events.append({"call_id": call_id, "at": at, "kind": kind, "source": "ari",
                       "dedup_key": f"{kind}:{len(events)}", "data": data})

    for i, at in enumerate(arrival_times(rng, n)):
        cid = f"b{i:07d}"
        local = at.astimezone(JST)
        open_ = (local.weekday() < 5 and local.date() not in HOLIDAYS
                 and (8, 30) <= (local.hour, local.minute) < (17, 15))
        kiosk = open_ and rng.random() < 0.06
        row: dict[str, Any] = {
            "id": cid, "tenant_id": "city", "service_id": "remote-window" if kiosk else "citizens",
            "channel": "kiosk" if kiosk else "phone", "did": "0312345678",
            "caller": f"kiosk{rng.randrange(1, 9):02d}" if kiosk else rng.choice(callers),
            "caller_name": "", "arrived_at": at, "status": "ended",
            "hours_reason": "open" if open_ else ("holiday" if local.date() in HOLIDAYS else
                                                 "weekend" if local.weekday() >= 5 else
                                                 "after_closing"),
            "answered_at": None, "ended_at": at + timedelta(seconds=5), "outcome": "out_of_hours",
            "queue": None, "queued_at": None, "queue_position": None, "agent": None,
            "agent_connected_at": None, "wait_seconds": None, "talk_seconds": None,
            "abandoned_position": None, "disposition": None, "survey_score": None,
            "hold_seconds": None, "wrapup_seconds": None,
            "location": KIOSKS[rng.randrange(len(KIOSKS))] if kiosk else None,
        }
        calls.append(row)
        ev(cid, at, "arrived", {"did": "0312345678"})
        if not open_:
            ev(cid, at, "ended", {"cause": 16})
            continue
        wait = int(rng.expovariate(1 / 25))
        row.update(answered_at=at, queue="kiosk" if kiosk else "citizens", queued_at=at,
                   queue_position=rng.randrange(1, 6), wait_seconds=wait)
        ev(cid, at, "queue_join", {"queue": row["queue"], "position": row["queue_position"]})
        x = rng.random()
        if x < 0.12:  # abandoned
            row.update(outcome="abandoned", abandoned_position=1,
                       ended_at=at + timedelta(seconds=wait))
            ev(cid, row["ended_at"], "abandon", {"wait_seconds": wait})
        elif x < 0.15:  # callback requested (completed in most cases, maybe next day)
            row.update(outcome="callback", ended_at=at + timedelta(seconds=wait))
            ev(cid, row["ended_at"], "callback_requested", {"callback": i, "position": 2})
            if rng.random() < 0.85:
                ev(cid, at + timedelta(minutes=rng.randrange(5, 1500)), "callback_completed",
                   {"callback": i, "result": "answered"})
        else:
            talk = int(rng.lognormvariate(5.3, 0.5))
            wrapup = int(rng.expovariate(1 / 45))
            connect = at + timedelta(seconds=wait)
            disposition = _pick(rng, DISPOSITIONS)
            row.update(outcome="answered", agent=f"op{rng.randrange(1, 8):02d}",
                       agent_connected_at=connect, talk_seconds=talk, wrapup_seconds=wrapup,
                       hold_seconds=rng.choice([None, None, None, rng.randrange(10, 90)]),
                       disposition=disposition, ended_at=connect + timedelta(seconds=talk))
            if rng.random() < 0.35:
                row["survey_score"] = rng.choices([1, 2, 3, 4, 5], [2, 4, 14, 40, 40])[0]
                ev(cid, row["ended_at"], "survey", {"score": row["survey_score"]})
            ev(cid, connect, "agent_connect", {"agent": row["agent"], "wait_seconds": wait})
            if disposition == "escalated":
                dept = rng.choice(DEPARTMENTS)
                ev(cid, connect + timedelta(seconds=60), "transfer",
                   {"department": dept, "result": "started", "kind": "blind"})
                result = rng.choices(["answered", "returned", "abandoned"], [8, 1, 1])[0]
                ev(cid, connect + timedelta(seconds=75), "transfer",
                   {"department": dept, "result": result, "kind": "blind"})
            ev(cid, row["ended_at"], "agent_complete", {"talk_seconds": talk})
            ev(cid, row["ended_at"] + timedelta(seconds=wrapup), "wrapup_end",
               {"seconds": wrapup, "disposition": disposition})
        ev(cid, row["ended_at"], "ended", {"cause": 16})
    return calls, events


def load(url: str, calls: list[dict[str, Any]], events: list[dict[str, Any]]) -> float:
    engine = make_engine(url)
    init_schema(engine)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for i in range(0, len(calls), 20000):
            conn.execute(insert(Call), calls[i:i + 20000])
        for i in range(0, len(events), 50000):
            conn.execute(insert(CallEvent), events[i:i + 50000])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - t0


def time_rollup(url: str) -> tuple[float, float]:
    """The cron roll-up of the month (``reports.jobs.kpi_rollup``'s work), and one live
    month query without roll-ups for comparison (ms)."""
    settings = load_settings()
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory() as session:
        t0 = time.perf_counter()
        kpi.summarize(session, tenant="city", start=MONTH[0], end=MONTH[1], kpi=settings.kpi,
                      tz="Asia/Tokyo")
        live_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    with transaction(factory) as session:
        kpi.rollup_recent(session, tenant="city", now=datetime(2026, 11, 1, 1, tzinfo=JST),
                          kpi=settings.kpi, tz="Asia/Tokyo")
    rollup_s = time.perf_counter() - t0
    engine.dispose()
    return rollup_s, live_ms


def time_dashboard(url: str) -> tuple[float, dict[str, Any]]:
    settings = load_settings()
    engine = make_engine(url)
    factory = session_factory(engine)
    runs = []
    summary = None
    for _ in range(6):
        with factory() as session:
            t0 = time.perf_counter()
            summary = kpi.summarize(session, tenant="city", start=MONTH[0], end=MONTH[1],
                                    kpi=settings.kpi, tz="Asia/Tokyo")
            runs.append((time.perf_counter() - t0) * 1000)
    engine.dispose()
    assert summary is not None
    return statistics.median(runs[1:]), {k: (round(v, 3) if isinstance(v, float) else v)
                                         for k, v in summary.total.as_dict().items()}


def time_report(url: str, data_dir: Path) -> float:
    os.environ["MADOGUCHI_DATABASE__URL"] = url
    os.environ["MADOGUCHI_SITE__DATA_DIR"] = str(data_dir)
    from reports import jobs

    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        report_id = jobs.create_report(session, tenant="city", kind="monthly",
                                       start=MONTH[0], end=MONTH[1], requested_by="bench").id
    engine.dispose()
    t0 = time.perf_counter()
    jobs.generate_report(report_id)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="mado-bench-reports-"))
    t0 = time.perf_counter()
    calls, events = generate(args.calls)
    print(f"generated {len(calls)} calls, {len(events)} timeline rows in "
          f"{time.perf_counter() - t0:.1f} s")
    result: dict[str, Any] = {"calls": len(calls)}
    urls = {"sqlite": f"sqlite:///{work / 'bench.sqlite3'}"}
    pg_name = None
    if not args.skip_postgres:
        import psycopg

        pg_name = f"mado_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        urls["postgres"] = f"{base}/{pg_name}"
    try:
        for name, url in urls.items():
            loaded = load(url, calls, events)
            print(f"{name}: loaded in {loaded:.1f} s")
            rollup_s, live_ms = time_rollup(url)
            ms, totals = time_dashboard(url)
            report_s = time_report(url, work / f"data-{name}")
            result[f"report_s_{name}"] = round(report_s, 2)
            result[f"dashboard_ms_{name}"] = round(ms, 1)
            result[f"rollup_s_{name}"] = round(rollup_s, 2)
            result[f"dashboard_ms_without_rollups_{name}"] = round(live_ms, 1)
            result.setdefault("month_kpis", totals)
            print(f"{name}: dashboard month query {ms:.0f} ms, monthly report {report_s:.2f} s")
    finally:
        if pg_name is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    targets: dict[str, Any] = {}
    for name in urls:
        for key, limit in TARGETS.items():
            metric = f"{key}_{name}"
            targets[metric] = {"target": f"< {limit:g}", "value": result[metric],
                               "met": result[metric] < limit}
    result["targets"] = targets
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"] = {"cpus": os.cpu_count(),
                         "load_average": [round(x, 1) for x in os.getloadavg()]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n",
                       encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
