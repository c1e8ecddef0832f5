"""common/audit.py on the real databases: entries, truncation, never failing the caller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.db import init_schema, make_engine, session_factory
from common.models.accounts import AuditEntry
from common.settings import Settings


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    init_schema(engine)
    yield session_factory(engine)
    engine.dispose()


def _all(factory: sessionmaker[Session]) -> list[AuditEntry]:
    with factory() as db:
        return list(db.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_write_and_record(factory: sessionmaker[Session]) -> None:
    bot = audit.Actor(name="ari_app", tenant_id="city", source="ari_app",
                      remote_addr="ari_app@host1")
    audit.write(factory, bot, "call.transfer", object_type="call", object_id="1700000000.12")
    with factory() as db, db.begin():
        assert isinstance(db, Session)
        audit.record(db, audit.Actor(name="hanako", tenant_id="city", user_id=3,
                                     remote_addr="192.0.2.1"),
                     "case.view", object_type="case", object_id=42)
    first, second = _all(factory)
    assert (first.actor, first.source, first.action, first.object_id) == (
        "ari_app", "ari_app", "call.transfer", "1700000000.12")
    assert first.at.tzinfo is not None and first.outcome == "ok"
    assert (second.actor_id, second.object_type, second.object_id, second.remote_addr) == (
        3, "case", "42", "192.0.2.1")


def test_codes_are_normalised_and_truncated(factory: sessionmaker[Session]) -> None:
    actor = audit.Actor(name="x" * 100, remote_addr="y" * 100)
    audit.write(factory, actor, "Case View!" + "z" * 100, object_type="C a s e" * 10,
                object_id="9" * 100, reason="Bad Thing\x00" * 20, outcome=audit.DENIED)
    [row] = _all(factory)
    assert row.action.startswith("case_view_") and len(row.action) == 64
    assert len(row.actor) == 64 and len(row.remote_addr) == 64 and len(row.object_id) == 64
    assert len(row.object_type) == 32 and "\x00" not in row.reason and len(row.reason) == 64


def test_bad_outcome_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        audit.entry(audit.SYSTEM, "x", outcome="maybe")


def test_write_never_raises(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(settings.database_url)  # no schema: the insert fails
    try:
        audit.write(session_factory(engine), audit.SYSTEM, "purge.run")
    finally:
        engine.dispose()
    assert "could not write audit entry purge.run" in caplog.text
