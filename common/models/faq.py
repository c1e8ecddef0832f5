"""FAQ items, manuals and their revisions, workflow log and usage counts.

An ``FaqItem`` is the stable identity of one FAQ entry or one manual. Its content lives
in ``FaqRevision`` rows, numbered 1, 2, ... per item; a revision's content never
changes after it is written (edits create a new revision). Only its workflow ``status``
moves (draft -> submitted -> approved | returned -> published -> superseded), and every
move is logged in ``FaqWorkflowEvent``. ``FaqItem.version`` is the optimistic-lock
counter: every change to an item bumps it, and a writer that read an older version is
refused (``version_id_col``, so two concurrent transactions cannot both win).

Operators and kiosks only ever read ``FaqItem.published_revision``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.db import Base, UTCDateTime


class FaqItem(Base):
    __tablename__ = "faq_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # "faq" | "manual"
    kind: Mapped[str] = mapped_column(String(16), default="faq", index=True)
    # None = shared by every tenant (wide-area use, M5)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    # Optimistic-lock counter, bumped by every change to the item or its revisions.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # Latest revision (whatever its status) and the one operators see (None = not shown).
    # (Plain columns, not foreign keys, to keep the two tables free of a creation cycle.)
    head_revision_id: Mapped[int | None] = mapped_column(Integer)
    published_revision_id: Mapped[int | None] = mapped_column(Integer, index=True)

    revisions: Mapped[list[FaqRevision]] = relationship(
        back_populates="item",
        foreign_keys="FaqRevision.item_id",
        order_by="FaqRevision.number",
    )
    head_revision: Mapped[FaqRevision | None] = relationship(
        primaryjoin="foreign(FaqItem.head_revision_id) == FaqRevision.id",
        viewonly=True,
    )
    published_revision: Mapped[FaqRevision | None] = relationship(
        primaryjoin="foreign(FaqItem.published_revision_id) == FaqRevision.id",
        viewonly=True,
    )

    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class FaqRevision(Base):
    __tablename__ = "faq_revisions"
    __table_args__ = (
        UniqueConstraint("item_id", "number", name="uq_faq_revisions_item_number"),
        Index("ix_faq_revisions_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("faq_items.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    # "edit" (new content) | "withdraw" (take the published content off the air)
    change: Mapped[str] = mapped_column(String(16), default="edit")
    # draft | submitted | returned | approved | published | superseded | withdrawn | discarded
    status: Mapped[str] = mapped_column(String(16), default="draft")
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    # False = a change the city did not ask for: listed in "changes to report" (spec 12(3))
    requested_by_city: Mapped[bool] = mapped_column(Boolean, default=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Content (immutable once written).
    title: Mapped[str] = mapped_column(Text, default="")  # FAQ: the question
    body: Mapped[str] = mapped_column(Text, default="")  # FAQ: the answer (rich text)
    category: Mapped[str] = mapped_column(String(128), default="")
    department: Mapped[str] = mapped_column(String(128), default="")
    procedures: Mapped[list[str]] = mapped_column(JSON, default=list)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    channels: Mapped[str] = mapped_column(String(8), default="both")  # phone | kiosk | both
    # Manuals: manual type and ordered sections [{"heading": ..., "body": ...}]
    manual_type: Mapped[str] = mapped_column(String(32), default="")
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Unified diff of the content against the item's published revision when written.
    diff: Mapped[str] = mapped_column(Text, default="")
    based_on_revision_id: Mapped[int | None] = mapped_column(Integer)

    item: Mapped[FaqItem] = relationship(back_populates="revisions", foreign_keys=[item_id])
    events: Mapped[list[FaqWorkflowEvent]] = relationship(
        back_populates="revision", order_by="FaqWorkflowEvent.id"
    )


class FaqWorkflowEvent(Base):
    """Who moved which revision to which status, when, and with what comment."""

    __tablename__ = "faq_workflow_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("faq_items.id", ondelete="CASCADE"),
                                         index=True)
    revision_id: Mapped[int] = mapped_column(
        ForeignKey("faq_revisions.id", ondelete="CASCADE"), index=True
    )
    # created | submitted | approved | returned | published | withdrawn | discarded |
    # acknowledged
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    comment: Mapped[str] = mapped_column(Text, default="")

    revision: Mapped[FaqRevision] = relationship(back_populates="events")


class FaqUsage(Base):
    """One use of an item: shown in suggestions, opened, used to answer, resolved the case."""

    __tablename__ = "faq_usage"
    __table_args__ = (Index("ix_faq_usage_item_kind", "item_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("faq_items.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # shown | opened | used | resolved
    call_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8), default="phone")
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
