"""Masked call transcripts kept for quality work, and the record of their purges.

Rows are written by the transcriber, one per final segment, with the text already
masked (``common.masking``): no raw transcript ever reaches the database. They are
kept ``transcription.retention_days`` days; the purge job deletes older rows and writes
one ``TranscriptPurge`` row saying what it deleted (counts and call ids, no text).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, UTCDateTime


class TranscriptSegment(Base):
    __tablename__ = "transcript_segments"
    __table_args__ = (Index("ix_transcript_segments_call", "call_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64), default="")
    speaker: Mapped[str] = mapped_column(String(16))  # caller | operator | staff
    # seconds from the start of the call's transcription (the operator's answer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    text: Mapped[str] = mapped_column(Text)  # masked
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class TranscriptPurge(Base):
    __tablename__ = "transcript_purges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    retention_days: Mapped[int] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(Integer)
    calls: Mapped[int] = mapped_column(Integer)
    call_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
