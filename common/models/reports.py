"""Generated reports (monthly, interim, final, any period): one row per generation.

The files live under ``settings.data_dir / "reports" / <id>/``; the row lists them with
the generation's status and progress (0-100) for the web UI.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, UTCDateTime

REPORT_KINDS = ("monthly", "interim", "final", "custom")
REPORT_STATES = ("queued", "running", "done", "failed")


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # REPORT_KINDS
    # Local dates, start inclusive, end exclusive.
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    job_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {"html": "report.html", "pdf": "report.pdf", "xlsx": "report.xlsx"} (file names)
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
