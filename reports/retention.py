"""Retention of the masked call transcripts kept for quality work (docs/transcription.md).

``purge_transcripts`` deletes every ``transcript_segments`` row older than
``transcription.retention_days`` days (0 = keep nothing: every row goes) and, in the same
transaction, writes what it deleted: one ``transcript_purges`` row (when, the cutoff, the
rule, how many segments of how many calls, the call ids) and an audit entry. Never the
text. A run that finds nothing to delete writes nothing. The rq job
``reports.jobs.transcript_purge`` runs it every hour (``reports.worker.build_cron``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.models.transcripts import TranscriptPurge, TranscriptSegment

logger = logging.getLogger(__name__)

#: Rows deleted per statement (bounded IN lists on every database).
BATCH = 500


@dataclass(frozen=True)
class PurgeResult:
    at: datetime
    cutoff: datetime
    retention_days: int
    segments: int = 0
    call_ids: tuple[str, ...] = field(default_factory=tuple)
    record_id: int | None = None  # the transcript_purges row (None: nothing deleted)

    def summary(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "cutoff": self.cutoff.isoformat(),
                "retention_days": self.retention_days, "segments": self.segments,
                "calls": len(self.call_ids), "record": self.record_id}


def cutoff_for(retention_days: int, now: datetime) -> datetime:
    """Rows created before this are expired (``now`` itself when nothing is kept)."""
    if retention_days < 0:
        raise ValueError("transcription.retention_days must be 0 (keep nothing) or a "
                         f"number of days, not {retention_days}")
    return now - timedelta(days=retention_days)


def purge_transcripts(factory: sessionmaker[Session], retention_days: int,
                      now: datetime | None = None) -> PurgeResult:
    """Delete the expired transcript segments and record what was deleted."""
    at = now or datetime.now(UTC)
    cutoff = cutoff_for(retention_days, at)
    with factory() as session, session.begin():
        # exactly the rows counted are deleted, even while new ones are written
        rows = session.execute(select(TranscriptSegment.id, TranscriptSegment.call_id)
                               .where(TranscriptSegment.created_at < cutoff)
                               .order_by(TranscriptSegment.id)).all()
        if not rows:
            return PurgeResult(at, cutoff, retention_days)
        ids = [r.id for r in rows]
        for i in range(0, len(ids), BATCH):
            session.execute(delete(TranscriptSegment)
                            .where(TranscriptSegment.id.in_(ids[i:i + BATCH]))
                            .execution_options(synchronize_session=False))
        call_ids = tuple(sorted({r.call_id for r in rows}))
        record = TranscriptPurge(at=at, cutoff=cutoff, retention_days=retention_days,
                                 segments=len(ids), calls=len(call_ids),
                                 call_ids=list(call_ids))
        session.add(record)
        session.flush()
        audit.record(session, audit.SYSTEM, "transcript.purge", object_type="transcript_purge",
                     object_id=record.id, reason=f"retention_{retention_days}_days",
                     tenant_id="")
        record_id = record.id
    logger.info("transcript purge: %d segment(s) of %d call(s) older than %s deleted "
                "(retention %d days, record %d)", len(ids), len(call_ids),
                cutoff.isoformat(timespec="seconds"), retention_days, record_id)
    return PurgeResult(at, cutoff, retention_days, len(ids), call_ids, record_id)


__all__ = ["PurgeResult", "cutoff_for", "purge_transcripts"]
