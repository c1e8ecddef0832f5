"""Special days of a service: closed on a normal working day, or open on a day off."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, UTCDateTime


class SpecialDay(Base):
    __tablename__ = "special_days"
    __table_args__ = (UniqueConstraint("service_id", "day", name="uq_special_days_service_day"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(64), index=True)
    day: Mapped[date] = mapped_column(Date)
    open: Mapped[bool] = mapped_column(Boolean)
    open_time: Mapped[str | None] = mapped_column(String(5))  # HH:MM, open days only
    close_time: Mapped[str | None] = mapped_column(String(5))
    note: Mapped[str] = mapped_column(String(200), default="")
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
