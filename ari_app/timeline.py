"""Persist call timelines to SQL: idempotent, one transaction per write.

Every write is keyed (call id + ``dedup_key``) so replaying Asterisk events after a
reconnect never duplicates a row. Methods are synchronous (SQLAlchemy); the asyncio
controller calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.events import Event
from common.hours import SpecialDay as SpecialDayRule
from common.hours import parse_time
from common.models import Call, CallEvent, SpecialDay

logger = logging.getLogger(__name__)


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
    def __init__(self, factory: sessionmaker[Session], site: str = "") -> None:
        """``site``: this controller's operator site (``site.id``; empty in the
        single-site form). Its calls carry it, and it reconciles only its own."""
        self._factory = factory
        self.site = site or None

    def _own(self) -> Any:
        """The calls of this site (in the single-site form: those of no site)."""
        return Call.site == self.site if self.site else Call.site.is_(None)

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

    def insert_event(self, session: Session, call_id: str, kind: str, at: datetime,
                     data: dict[str, Any], dedup_key: str | None = None,
                     source: str = "ari") -> bool:
        """A timeline row inside the caller's own transaction (idempotent, as ``record``)."""
        return self._insert_event(session, call_id, kind, at, data, dedup_key or kind, source)

    def call_arrived(self, call: NewCall, data: dict[str, Any]) -> bool:
        """Create the call (if new) and its 'arrived' event. True when newly recorded."""
        with transaction(self._factory) as session:
            if session.get(Call, call.call_id) is None:
                session.add(Call(
                    id=call.call_id, tenant_id=call.tenant_id, service_id=call.service_id,
                    channel=call.channel, did=call.did, caller=call.caller,
                    caller_name=call.caller_name, arrived_at=call.arrived_at, status="active",
                    site=self.site))
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
                   outcome: str | None = None, source: str = "ari",
                   unqueued_outcome: str | None = None) -> bool:
        """End the call (the first end wins). ``unqueued_outcome``: the outcome of a call
        that ends without ever having been queued and with no outcome decided yet (a
        caller who hung up before the queue: ``cancelled_early``)."""
        with transaction(self._factory) as session:
            values: dict[str, Any] = {"ended_at": at, "status": "ended",
                                      "hangup_cause": cause, "hangup_cause_txt": cause_txt}
            if outcome:
                values["outcome"] = outcome
            ended: Any = session.execute(
                update(Call).where(Call.id == call_id, Call.ended_at.is_(None))
                .values(**values))
            if unqueued_outcome and ended.rowcount:
                session.execute(update(Call).where(Call.id == call_id,
                                                   Call.queued_at.is_(None),
                                                   Call.outcome.is_(None))
                                .values(outcome=unqueued_outcome))
            return self._insert_event(session, call_id, "ended", at,
                                      {"cause": cause, "cause_txt": cause_txt}, "ended", source)

    def ensure_call(self, call: NewCall) -> None:
        """Create the call row if it does not exist (e.g. queued by the dialplan fallback
        while ari_app was down, so only AMI saw it)."""
        with transaction(self._factory) as session:
            if session.get(Call, call.call_id) is None:
                session.add(Call(
                    id=call.call_id, tenant_id=call.tenant_id, service_id=call.service_id,
                    channel=call.channel, did=call.did, caller=call.caller,
                    caller_name=call.caller_name, arrived_at=call.arrived_at, status="active",
                    site=self.site))

    def update_call(self, call_id: str, only_if_null: tuple[str, ...] = (),
                    **values: Any) -> None:
        """Set columns of a call; those named in ``only_if_null`` only when still empty."""
        if not call_id:
            return
        with transaction(self._factory) as session:
            call = session.get(Call, call_id)
            if call is None:
                return
            for key, value in values.items():
                if key in only_if_null and getattr(call, key) is not None:
                    continue
                setattr(call, key, value)

    def last_event(self, call_id: str, kind: str) -> dict[str, Any] | None:
        """The data of the call's latest timeline row of ``kind`` (None: there is none)."""
        with self._factory() as session:
            return session.scalars(
                select(CallEvent.data).where(CallEvent.call_id == call_id,
                                             CallEvent.kind == kind)
                .order_by(CallEvent.at.desc(), CallEvent.id.desc()).limit(1)).first()

    def talking_call(self, queue: str, agent: str) -> str | None:
        """The call ``agent`` answered last in ``queue`` whose talk time is still open."""
        with self._factory() as session:
            return session.scalars(
                select(Call.id).where(Call.queue == queue, Call.agent == agent, self._own(),
                                      Call.agent_connected_at.is_not(None),
                                      Call.talk_seconds.is_(None))
                .order_by(Call.agent_connected_at.desc()).limit(1)).first()

    def set_outcome(self, call_id: str, outcome: str) -> None:
        with transaction(self._factory) as session:
            session.execute(update(Call).where(Call.id == call_id).values(outcome=outcome))

    def active_call_ids(self) -> list[str]:
        with self._factory() as session:
            return list(session.scalars(select(Call.id).where(Call.status == "active",
                                                              self._own())))


class CalendarStore:
    """Special open/closed days of each service (edited by administrators)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def special_days(self, service_id: str, around: date | None = None
                     ) -> dict[date, SpecialDayRule]:
        start = (around or date.today()) - timedelta(days=2)
        with self._factory() as session:
            rows = session.scalars(select(SpecialDay).where(
                SpecialDay.service_id == service_id, SpecialDay.day >= start,
                SpecialDay.day <= start + timedelta(days=45)))
            return {
                row.day: SpecialDayRule(
                    day=row.day, open=row.open,
                    open_time=parse_time(row.open_time) if row.open_time else None,
                    close_time=parse_time(row.close_time) if row.close_time else None,
                    note=row.note)
                for row in rows
            }


def _nothing() -> bool:
    return True


class Recorder:
    """Writes timeline records in submission order, off the call-handling path.

    Call handling (answer, greeting, queue) never waits for the database: handlers submit
    writes here and go on. One task carries them out in order (so a call's ``arrived``
    is always written before its queue events from AMI), publishing each write's event
    afterwards when asked to. A failed write is retried, then logged; it never stops the
    calls.
    """

    def __init__(self, notify: Callable[[Event], Awaitable[None]]) -> None:
        self._queue: asyncio.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any],
                                         Event | None, bool]] = asyncio.Queue()
        self._notify = notify
        self.failed = 0

    def write(self, fn: Callable[..., Any], *args: Any, publish: Event | None = None,
              only_if_new: bool = False, **kwargs: Any) -> None:
        self._queue.put_nowait((fn, args, kwargs, publish, only_if_new))

    def publish(self, event: Event) -> None:
        """Publish after every write submitted before it: a console that reacts to the
        event finds the call's rows already in the database."""
        self._queue.put_nowait((_nothing, (), {}, event, False))

    async def flush(self) -> None:
        await self._queue.join()

    async def run(self) -> None:
        while True:
            fn, args, kwargs, event, only_if_new = await self._queue.get()
            # Let the handler that submitted this write send its ARI request first: the
            # write runs in a thread that would compete with it for the GIL.
            await asyncio.sleep(0)
            try:
                result = None
                for attempt in range(3):
                    try:
                        result = await asyncio.to_thread(fn, *args, **kwargs)
                        break
                    except OperationalError as exc:
                        if attempt == 2:
                            raise
                        logger.warning("database write failed (%s); retrying", exc)
                        await asyncio.sleep(0.5 * (attempt + 1))
                if event is not None and (result or not only_if_new):
                    await self._notify(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed += 1
                logger.exception("timeline write %s failed", getattr(fn, "__name__", fn))
            finally:
                self._queue.task_done()


class CachedCalendar:
    """Special days per service, re-read at most every ``ttl`` seconds."""

    def __init__(self, store: CalendarStore, ttl: float = 30.0) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[date, SpecialDayRule]]] = {}

    def fresh(self, service_id: str) -> bool:
        """True when ``special_days`` would answer from memory (no database read)."""
        cached = self._cache.get(service_id)
        return cached is not None and time.monotonic() - cached[0] <= self.ttl

    def special_days(self, service_id: str) -> dict[date, SpecialDayRule]:
        now = time.monotonic()
        cached = self._cache.get(service_id)
        if cached is None or now - cached[0] > self.ttl:
            cached = (now, self.store.special_days(service_id))
            self._cache[service_id] = cached
        return cached[1]
