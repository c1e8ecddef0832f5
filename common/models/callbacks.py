"""Queued callbacks: a waiting caller asked to be called back, keeping their place."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, UTCDateTime


class Callback(Base):
    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)  # the original call
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    service_id: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(32))
    # place in the queue when the caller asked (0: nobody was logged in)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # pending (waiting to be placed) | placed (holding the place in the queue) |
    # connecting (operator on the line, citizen ringing) | completed | failed
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    placeholder: Mapped[str | None] = mapped_column(String(96))  # ARI channel id
    agent: Mapped[str | None] = mapped_column(String(64))
    last_result: Mapped[str | None] = mapped_column(String(32))
    # Why: None when the caller asked for it; "site_lost" for a call cut by the loss of
    # its operator site (listed first, "切断された通話", docs/sites.md)
    reason: Mapped[str | None] = mapped_column(String(16))
    # The operator site that places it (None in the single-site form)
    site: Mapped[str | None] = mapped_column(String(16), index=True)
