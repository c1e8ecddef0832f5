"""Generated reports (monthly, interim, final, any period): one row per generation.

The files live under ``settings.data_dir / "reports" / <id>/``; the row lists them with
the generation's status and progress (0-100) for the web UI.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, UTCDateTime
from common.models.calls import CallEvent

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


class KpiRollup(Base):
    """KPI sums per local hour and dimensions (``kpi.rollups.rollup``): the dashboard and
    the reports read closed hours from here instead of scanning every call."""

    __tablename__ = "kpi_rollups"
    __table_args__ = (Index("ix_kpi_rollups_tenant_hour", "tenant_id", "hour_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime)  # UTC start of the local hour
    label: Mapped[str] = mapped_column(String(16))  # local 'YYYY-MM-DD HH'
    service: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(16), default="")
    operator: Mapped[str] = mapped_column(String(64), default="")
    disposition: Mapped[str] = mapped_column(String(32), default="")
    location: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(32), default="")
    sums: Mapped[list[int]] = mapped_column(JSON, default=list)  # kpi.definitions.Counts fields


class KpiTransferRollup(Base):
    """Transfers per local hour, dimensions, department and result (distinct calls;
    ``result = 'attempted'`` counts every call with a transfer)."""

    __tablename__ = "kpi_transfer_rollups"
    __table_args__ = (Index("ix_kpi_transfer_rollups_tenant_hour", "tenant_id", "hour_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime)
    service: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(16), default="")
    operator: Mapped[str] = mapped_column(String(64), default="")
    department: Mapped[str] = mapped_column(String(64), default="")
    result: Mapped[str] = mapped_column(String(16))
    calls: Mapped[int] = mapped_column(Integer)


class KpiRollupState(Base):
    """Per tenant: hours before ``complete_until`` are in ``kpi_rollups``."""

    __tablename__ = "kpi_rollup_state"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    complete_until: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Timeline rows looked up by kind for the KPIs (transfers, callbacks, surveys).
KPI_EVENT_INDEX = Index("ix_call_events_kind_call", CallEvent.kind, CallEvent.call_id)
