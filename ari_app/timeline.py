"""Persist call timelines to SQL: idempotent, one transaction per write.

Every write is keyed (call id + ``dedup_key``) so replaying Asterisk events after a
reconnect never duplicates a row. Methods are synchronous (SQLAlchemy); the asyncio
controller calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models import Call, CallEvent


@dataclass(frozen=True)
class NewCall:
    call_id: str
    tenant_id: str
    service_id: str | None
    channel: str
    did: str
    caller: str
    caller_name: str
    arrived_at: datetime


class TimelineStore:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def _insert_event(self, session: Session, call_id: str, kind: str, at: datetime,
                      data: dict[str, Any], dedup_key: str, source: str) -> bool:
        dialect = session.get_bind().dialect.name
        values = {"call_id": call_id, "kind": kind, "at": at, "data": data,
                  "dedup_key": dedup_key[:160], "source": source}
        stmt: Any
        if dialect == "postgresql":
            stmt = pg_insert(CallEvent).values(**values).on_conflict_do_nothing(
                constraint="uq_call_events_dedup")
        else:
            stmt = sqlite_insert(CallEvent).values(**values).on_conflict_do_nothing(
                index_elements=["call_id", "dedup_key"])
        result = session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    def call_arrived(self, call: NewCall, data: dict[str, Any]) -> bool:
        """Create the call (if new) and its 'arrived' event. True when newly recorded."""
        with transaction(self._factory) as session:
            if session.get(Call, call.call_id) is None:
                session.add(Call(
                    id=call.call_id, tenant_id=call.tenant_id, service_id=call.service_id,
                    channel=call.channel, did=call.did, caller=call.caller,
                    caller_name=call.caller_name, arrived_at=call.arrived_at, status="active"))
                session.flush()
            return self._insert_event(session, call.call_id, "arrived", call.arrived_at,
                                      data, "arrived", "ari")

    def record(self, call_id: str, kind: str, at: datetime, data: dict[str, Any] | None = None,
               dedup_key: str | None = None, source: str = "ari") -> bool:
        with transaction(self._factory) as session:
            return self._insert_event(session, call_id, kind, at, data or {},
                                      dedup_key or kind, source)

    def call_answered(self, call_id: str, at: datetime) -> bool:
        with transaction(self._factory) as session:
            session.execute(update(Call).where(Call.id == call_id, Call.answered_at.is_(None))
                            .values(answered_at=at))
            return self._insert_event(session, call_id, "answered", at, {}, "answered", "ari")

    def call_ended(self, call_id: str, at: datetime, cause: int | None, cause_txt: str,
                   outcome: str | None = None, source: str = "ari") -> bool:
        with transaction(self._factory) as session:
            values: dict[str, Any] = {"ended_at": at, "status": "ended",
                                      "hangup_cause": cause, "hangup_cause_txt": cause_txt}
            if outcome:
                values["outcome"] = outcome
            session.execute(update(Call).where(Call.id == call_id, Call.ended_at.is_(None))
                            .values(**values))
            return self._insert_event(session, call_id, "ended", at,
                                      {"cause": cause, "cause_txt": cause_txt}, "ended", source)

    def set_outcome(self, call_id: str, outcome: str) -> None:
        with transaction(self._factory) as session:
            session.execute(update(Call).where(Call.id == call_id).values(outcome=outcome))

    def active_call_ids(self) -> list[str]:
        with self._factory() as session:
            return list(session.scalars(select(Call.id).where(Call.status == "active")))
