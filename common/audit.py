"""The audit trail: who viewed or changed which case or personal data, when, from where.

Every process writes through this module. An entry names the actor, the action, the
object (type and id) and the outcome -- never the data itself: no citizen names,
phone numbers, notes, card data or search terms go into an entry, and ``reason`` is a
short code, not free text. Both helpers truncate to the column sizes, so an odd value
never makes the audit write (and so the action) fail.

- ``record(session, ...)`` adds an entry to the caller's unit of work (committed with it).
- ``write(factory, ...)`` commits an entry on its own, e.g. for refused accesses and
  failed log-ins, which must be kept even when the request's own work is rolled back.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from common.models.accounts import AuditEntry

logger = logging.getLogger(__name__)

OK = "ok"
DENIED = "denied"
FAILED = "failed"
OUTCOMES = (OK, DENIED, FAILED)

_CODE = re.compile(r"[^a-z0-9_.:-]")


@dataclass(frozen=True)
class Actor:
    """Who acts: an account, or a process (``user_id`` None, ``name`` the process)."""

    name: str
    tenant_id: str = ""
    user_id: int | None = None
    remote_addr: str = ""
    source: str = "web"


SYSTEM = Actor(name="system", source="system")


def _code(value: str, size: int) -> str:
    return _CODE.sub("_", value.lower())[:size]


def entry(actor: Actor, action: str, *, object_type: str = "", object_id: str | int = "",
          outcome: str = OK, reason: str = "", tenant_id: str | None = None,
          at: datetime | None = None) -> AuditEntry:
    """Build (not save) one audit entry."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    return AuditEntry(
        at=at or datetime.now(UTC),
        actor_id=actor.user_id,
        actor=actor.name[:64],
        tenant_id=(actor.tenant_id if tenant_id is None else tenant_id)[:64],
        action=_code(action, 64),
        object_type=_code(object_type, 32),
        object_id=str(object_id)[:64],
        remote_addr=actor.remote_addr[:64],
        source=_code(actor.source, 16),
        outcome=outcome,
        reason=_code(reason, 64),
    )


def record(session: Session, actor: Actor, action: str, *, object_type: str = "",
           object_id: str | int = "", outcome: str = OK, reason: str = "",
           tenant_id: str | None = None) -> AuditEntry:
    """Add an entry to ``session``; it is saved when the caller commits."""
    item = entry(actor, action, object_type=object_type, object_id=object_id,
                 outcome=outcome, reason=reason, tenant_id=tenant_id)
    session.add(item)
    return item


def write(factory: sessionmaker[Session], actor: Actor, action: str, *, object_type: str = "",
          object_id: str | int = "", outcome: str = OK, reason: str = "",
          tenant_id: str | None = None) -> None:
    """Save an entry in its own transaction. Failures are logged, never raised."""
    try:
        with factory() as session, session.begin():
            record(session, actor, action, object_type=object_type, object_id=object_id,
                   outcome=outcome, reason=reason, tenant_id=tenant_id)
    except Exception:  # noqa: BLE001 - auditing must not turn a refusal into a 500
        logger.exception("could not write audit entry %s", _code(action, 64))
