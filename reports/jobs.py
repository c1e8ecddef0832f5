"""rq job functions. Module-level, taking ids/dates only, loading their own settings
(rq: "global variables are evil"; the worker imports this module by name)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis
from rq import Queue
from sqlalchemy.orm import Session

from common.db import init_schema, make_engine, session_factory, transaction
from common.health import collect
from common.keys import Keys
from common.models import HealthSample
from common.models.reports import KPI_EVENT_INDEX, REPORT_KINDS, Report
from common.settings import Settings, load_settings
from kpi.periods import previous_month
from kpi.rollups import rollup_recent
from reports import content, render
from reports.retention import purge_transcripts

logger = logging.getLogger(__name__)


def health_rollup() -> dict[str, Any]:
    """Sample every component's health into the database (the incident history)."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        init_schema(engine)
        results = collect(client, Keys(settings.redis.prefix), engine, settings)
        at = datetime.now(UTC)
        with transaction(session_factory(engine)) as session:
            for item in results:
                session.add(HealthSample(at=at, component=item.component, ok=item.ok,
                                         detail=item.detail[:2000]))
        down = [r.component for r in results if not r.ok]
        if down:
            logger.warning("health roll-up: down: %s", ", ".join(down))
        return {"at": at.isoformat(), "components": len(results), "down": down}
    finally:
        client.close()
        engine.dispose()


# --------------------------------------------------------------------------- reports
REPORT_QUEUE = "reports"


def report_folder(settings: Settings, report_id: int) -> Path:
    return settings.data_dir / "reports" / str(report_id)


def create_report(session: Session, *, tenant: str, kind: str, start: date, end: date,
                  requested_by: str = "system") -> Report:
    """A queued report row (the caller commits, then enqueues ``generate_report``)."""
    if kind not in REPORT_KINDS:
        raise ValueError(f"report kind must be one of {REPORT_KINDS}")
    if end <= start:
        raise ValueError("the period must end after it starts")
    report = Report(tenant_id=tenant, kind=kind, period_start=start, period_end=end,
                    status="queued", progress=0, requested_by=requested_by,
                    created_at=datetime.now(UTC), files={})
    session.add(report)
    session.flush()
    return report


def generate_report(report_id: int) -> dict[str, Any]:
    """Build the report's HTML, PDF and Excel files; progress is kept on the row."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    factory = session_factory(engine)
    try:
        init_schema(engine)

        def progress(pct: int, message: str, status: str = "running") -> None:
            with transaction(factory) as s:
                row = s.get(Report, report_id)
                if row is not None:
                    row.progress, row.message, row.status = pct, message, status

        with factory() as session:
            report = session.get(Report, report_id)
            if report is None:
                raise LookupError(f"no report {report_id}")
            tenant, kind = report.tenant_id, report.kind
            start, end = report.period_start, report.period_end
        progress(5, "kpi")
        try:
            with factory() as session:
                built = content.build(session, settings, tenant=tenant, kind=kind, start=start,
                                      end=end, now=datetime.now(UTC))
            progress(40, "content")
            folder = report_folder(settings, report_id)
            files = render.write_all(built, folder, progress)
        except Exception as exc:
            logger.exception("report %s failed", report_id)
            progress(100, f"{type(exc).__name__}: {exc}"[:500], status="failed")
            raise
        with transaction(factory) as s:
            row = s.get(Report, report_id)
            assert row is not None  # nosec B101 # type narrowing, not a check
            row.files, row.status, row.progress = files, "done", 100
            row.message = ""
            row.finished_at = datetime.now(UTC)
        logger.info("report %s (%s %s..%s) done", report_id, kind, start, end)
        return {"report": report_id, "files": files}
    finally:
        engine.dispose()


def monthly_reports(today: str | None = None) -> list[int]:
    """Cron (the 1st of each month): the previous month's report for every tenant."""
    settings = load_settings()
    day = date.fromisoformat(today) if today else datetime.now(
        ZoneInfo(settings.site.timezone)).date()
    start, end = previous_month(day)
    engine = make_engine(settings.database_url)
    client = redis.Redis.from_url(settings.redis.url)
    ids: list[int] = []
    try:
        init_schema(engine)
        with transaction(session_factory(engine)) as session:
            for tenant in settings.tenants:
                ids.append(create_report(session, tenant=tenant.id, kind="monthly",
                                         start=start, end=end).id)
        queue = Queue(REPORT_QUEUE, connection=client)
        for report_id in ids:
            job = queue.enqueue(generate_report, report_id, job_timeout=1800)
            with transaction(session_factory(engine)) as session:
                row = session.get(Report, report_id)
                if row is not None:
                    row.job_id = job.id
        return ids
    finally:
        client.close()
        engine.dispose()


def kpi_rollup() -> dict[str, Any]:
    """Cron (every few minutes): bring the KPI roll-ups of every tenant up to the current
    hour (``kpi.rollups.rollup_recent``)."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        init_schema(engine)
        KPI_EVENT_INDEX.create(engine, checkfirst=True)  # databases made before the index
        now = datetime.now(UTC)
        done: dict[str, str] = {}
        for tenant in settings.tenants:
            with transaction(session_factory(engine)) as session:
                _begin, end = rollup_recent(session, tenant=tenant.id, now=now,
                                            kpi=settings.kpi, tz=settings.site.timezone)
            done[tenant.id] = end.isoformat()
        return {"complete_until": done}
    finally:
        engine.dispose()


def transcript_purge(now: str | None = None) -> dict[str, Any]:
    """Cron (hourly): delete the masked transcripts older than
    ``transcription.retention_days`` (0 = keep nothing) and record what was deleted
    (``reports.retention``; counts and call ids, never text)."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        init_schema(engine)
        at = datetime.fromisoformat(now) if now else None
        result = purge_transcripts(session_factory(engine),
                                   settings.transcription.retention_days, at)
        return result.summary()
    finally:
        engine.dispose()
