"""Usage counts per item: shown in suggestions, opened, used to answer, resolved the case.

Every use is one ``FaqUsage`` row (item, kind, call, actor, time), so counts can be
cut by period and the gap finder can tell which conversations used no suggestion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.events import utcnow
from common.models.faq import FaqItem, FaqUsage
from faq.exceptions import FaqError, NoSuchItem

KINDS = ("shown", "opened", "used", "resolved")
"""shown: listed as a suggestion; opened: the operator/kiosk user opened it; used: the
operator answered with it; resolved: it settled the case without escalation."""


@dataclass(frozen=True)
class UsageCounts:
    item_id: int
    shown: int = 0
    opened: int = 0
    used: int = 0
    resolved: int = 0


def record(session: Session, item_id: int, kind: str, *, tenant: str, call_id: str | None = None,
           actor: str | None = None, channel: str = "phone", at: datetime | None = None) -> None:
    """Count one use of an item."""
    if kind not in KINDS:
        raise FaqError(f"利用の種類 {kind!r} は使えません（{'/'.join(KINDS)} のいずれか）。")
    if session.get(FaqItem, item_id) is None:
        raise NoSuchItem(item_id)
    session.add(FaqUsage(item_id=item_id, tenant_id=tenant, kind=kind, call_id=call_id,
                         actor=actor, channel=channel, at=at or utcnow()))


def record_shown(session: Session, item_ids: Iterable[int], *, tenant: str,
                 call_id: str | None = None, actor: str | None = None,
                 channel: str = "phone") -> None:
    """Count a list of suggestions shown at once (one row per item)."""
    now = utcnow()
    session.add_all([FaqUsage(item_id=i, tenant_id=tenant, kind="shown", call_id=call_id,
                              actor=actor, channel=channel, at=now) for i in item_ids])


def counts(session: Session, *, tenant: str, since: datetime | None = None,
           until: datetime | None = None) -> dict[int, UsageCounts]:
    """Counts per item for ``tenant`` in [since, until)."""
    stmt = (select(FaqUsage.item_id, FaqUsage.kind, func.count())
            .where(FaqUsage.tenant_id == tenant)
            .group_by(FaqUsage.item_id, FaqUsage.kind))
    if since is not None:
        stmt = stmt.where(FaqUsage.at >= since)
    if until is not None:
        stmt = stmt.where(FaqUsage.at < until)
    acc: dict[int, dict[str, int]] = {}
    for item_id, kind, n in session.execute(stmt):
        acc.setdefault(item_id, {})[kind] = int(n)
    return {item_id: UsageCounts(item_id=item_id, **{k: v for k, v in c.items() if k in KINDS})
            for item_id, c in acc.items()}


def calls_with_use(session: Session, call_ids: Iterable[str]) -> set[str]:
    """The calls among ``call_ids`` in which an item was used or resolved the case."""
    ids = list(call_ids)
    if not ids:
        return set()
    stmt = (select(FaqUsage.call_id).distinct()
            .where(FaqUsage.call_id.in_(ids), FaqUsage.kind.in_(("used", "resolved"))))
    return {c for c in session.scalars(stmt) if c is not None}
