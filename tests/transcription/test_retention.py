"""Retention of the stored (masked) transcripts: the hourly rq cron entry enqueues the
purge job, a real rq worker runs it on real Redis against SQLite and PostgreSQL; it
deletes exactly the expired segments and records what it deleted, never the text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue, SimpleWorker
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db import init_schema, make_engine, session_factory, transaction
from common.models import AuditEntry
from common.models.transcripts import TranscriptPurge, TranscriptSegment
from common.settings import Settings
from reports import jobs
from reports.retention import cutoff_for, purge_transcripts
from reports.worker import build_cron

NOW = datetime.now(UTC)
TEXTS = {"old-a": "住民票の写しを取りたいんですが", "old-b": "電話番号は＊＊＊です",
         "new-c": "印鑑登録証明書はどこで"}


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    init_schema(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The job loads its own settings: the test database and Redis."""
    monkeypatch.setenv("MADOGUCHI_DATABASE__URL", settings.database_url)
    monkeypatch.setenv("MADOGUCHI_REDIS__URL", settings.redis.url)
    monkeypatch.setenv("MADOGUCHI_SITE__DATA_DIR", str(settings.data_dir))
    return settings


def aware(at: datetime) -> datetime:
    """SQLite gives naive datetimes back (stored as UTC)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def add_segments(factory: sessionmaker[Session]) -> None:
    """Two calls past 30 days (3 segments), one recent call (2 segments)."""
    ages = {"old-a": (40, 2), "old-b": (31, 1), "new-c": (2, 2)}
    with transaction(factory) as s:
        for call_id, (days, count) in ages.items():
            for n in range(count):
                s.add(TranscriptSegment(call_id=call_id, tenant_id="city",
                                        speaker=("caller", "operator")[n % 2], start=n * 3.0,
                                        end=n * 3.0 + 2.5, confidence=0.8,
                                        text=TEXTS[call_id],
                                        created_at=NOW - timedelta(days=days, minutes=n)))


def left(factory: sessionmaker[Session]) -> list[str]:
    with factory() as s:
        return sorted(s.scalars(select(TranscriptSegment.call_id)))


def purges(factory: sessionmaker[Session]) -> list[TranscriptPurge]:
    with factory() as s:
        return list(s.scalars(select(TranscriptPurge).order_by(TranscriptPurge.id)))


def run_cron_entry(settings: Settings) -> None:
    """Enqueue the registered cron entry as the scheduler does; a worker runs it."""
    client = redis.Redis.from_url(settings.redis.url)
    try:
        cron = build_cron(settings, client)
        entry = next(j for j in cron.get_jobs() if j.name == "transcript_purge")
        assert entry.cron == "17 * * * *"  # hourly
        entry.enqueue(client)
        queue = Queue(entry.queue_name, connection=client)
        assert queue.count == 1
        SimpleWorker([queue], connection=client).work(burst=True)
        assert queue.count == 0
        assert not queue.failed_job_registry.get_job_ids(), "the purge job failed"
    finally:
        client.close()


def test_cron_job_purges_expired_transcripts_and_records_them(
        env: Settings, factory: sessionmaker[Session]) -> None:
    assert env.transcription.retention_days == 30
    add_segments(factory)
    before = datetime.now(UTC)
    run_cron_entry(env)
    after = datetime.now(UTC)
    assert left(factory) == ["new-c", "new-c"]
    [record] = purges(factory)
    assert (record.segments, record.calls, record.retention_days) == (3, 2, 30)
    assert sorted(record.call_ids) == ["old-a", "old-b"]
    # the cutoff is 30 days before the job ran (not before the test module was loaded)
    slack = timedelta(seconds=1)
    assert before - timedelta(days=30) - slack <= aware(record.cutoff) \
        <= after - timedelta(days=30) + slack
    assert before - slack <= aware(record.at) <= after + slack
    # what was deleted is recorded, never what was said
    row = json.dumps({c.name: str(getattr(record, c.name))
                      for c in TranscriptPurge.__table__.columns}, ensure_ascii=False)
    assert not any(text in row for text in TEXTS.values())
    with factory() as s:
        audit = list(s.scalars(select(AuditEntry).where(
            AuditEntry.action == "transcript.purge")))
    assert len(audit) == 1
    assert (audit[0].actor, audit[0].object_id, audit[0].reason) == (
        "system", str(record.id), "retention_30_days")
    # the next run finds nothing more: no empty record
    run_cron_entry(env)
    assert left(factory) == ["new-c", "new-c"]
    assert len(purges(factory)) == 1


def test_retention_zero_keeps_nothing(env: Settings, factory: sessionmaker[Session],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    add_segments(factory)
    monkeypatch.setenv("MADOGUCHI_TRANSCRIPTION__RETENTION_DAYS", "0")
    summary = jobs.transcript_purge()
    assert (summary["segments"], summary["calls"], summary["retention_days"]) == (5, 3, 0)
    assert left(factory) == []
    [record] = purges(factory)
    assert sorted(record.call_ids) == ["new-c", "old-a", "old-b"]
    assert summary["record"] == record.id


def test_purge_is_exact_at_the_cutoff(factory: sessionmaker[Session]) -> None:
    """A row one second inside the retention period stays; one second past it goes."""
    cutoff = cutoff_for(7, NOW)
    with transaction(factory) as s:
        for call_id, at in (("inside", cutoff + timedelta(seconds=1)),
                            ("past", cutoff - timedelta(seconds=1))):
            s.add(TranscriptSegment(call_id=call_id, tenant_id="city", speaker="caller",
                                    start=0.0, end=1.0, text="はい", created_at=at))
    result = purge_transcripts(factory, 7, NOW)
    assert (result.segments, result.call_ids) == (1, ("past",))
    assert left(factory) == ["inside"]


def test_negative_retention_is_a_clear_error(factory: sessionmaker[Session]) -> None:
    add_segments(factory)
    with pytest.raises(ValueError, match="retention_days must be 0"):
        purge_transcripts(factory, -1, NOW)
    assert len(left(factory)) == 5  # nothing was touched
