"""Calls and their timelines.

A ``Call`` is one contact (phone call or kiosk session) from arrival to hang-up; its
``CallEvent`` rows are the timeline. Every timeline row carries a ``dedup_key`` unique
per call so that replaying the same Asterisk events (after a restart or resync) never
duplicates a row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.db import Base, UTCDateTime


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    service_id: Mapped[str | None] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(16), default="phone")  # phone | kiosk
    did: Mapped[str] = mapped_column(String(32), default="")
    caller: Mapped[str] = mapped_column(String(64), default="", index=True)
    caller_name: Mapped[str] = mapped_column(String(128), default="")
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # active | ended
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    # How the call ended for the KPIs: completed | abandoned | rejected | out_of_hours | ...
    outcome: Mapped[str | None] = mapped_column(String(32))
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_cause_txt: Mapped[str | None] = mapped_column(String(64))
    disposition: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    # Service hours decision at arrival: open | weekend | holiday | ...
    hours_reason: Mapped[str | None] = mapped_column(String(32))
    # Queue part, from AMI (app_queue) events
    queue: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_position: Mapped[int | None] = mapped_column(Integer)
    agent: Mapped[str | None] = mapped_column(String(64), index=True)  # endpoint, e.g. op03
    agent_connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    wait_seconds: Mapped[int | None] = mapped_column(Integer)
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    abandoned_position: Mapped[int | None] = mapped_column(Integer)
    # KPI summary columns (docs/kpi.md), nullable; written with their timeline rows.
    survey_score: Mapped[int | None] = mapped_column(Integer)  # 1-5, `survey` event
    hold_seconds: Mapped[int | None] = mapped_column(Integer)  # within talk_seconds
    wrapup_seconds: Mapped[int | None] = mapped_column(Integer)  # after-call work
    location: Mapped[str | None] = mapped_column(String(64))  # kiosk location id
    # Who the citizen of a kiosk call is, for their earlier contacts, without personal
    # data: ``card:<keyed hash of name and birth date>`` after a card read they agreed
    # to, or ``tel:<number>`` that they stated and agreed to (web.console.citizen_ref_*).
    # A kiosk call's ``caller`` is the kiosk, shared by every citizen who uses it.
    citizen_ref: Mapped[str | None] = mapped_column(String(80), index=True)
    # The operator site whose Asterisk carried the call (``site.id``; None in the
    # single-site form): a site's controller reconciles only its own calls, and the
    # calls a lost site cut are found by it (docs/sites.md).
    site: Mapped[str | None] = mapped_column(String(16), index=True)

    events: Mapped[list[CallEvent]] = relationship(
        back_populates="call", order_by="CallEvent.at, CallEvent.id", cascade="all, delete-orphan"
    )


class CallEvent(Base):
    __tablename__ = "call_events"
    __table_args__ = (
        UniqueConstraint("call_id", "dedup_key", name="uq_call_events_dedup"),
        Index("ix_call_events_call_at", "call_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(48))
    source: Mapped[str] = mapped_column(String(16), default="ari")  # ari | ami | web | system
    dedup_key: Mapped[str] = mapped_column(String(160))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    call: Mapped[Call] = relationship(back_populates="events")
