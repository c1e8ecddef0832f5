"""init_schema on a database an older version made: nullable columns are added, a missing
required column is a clear error (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, MetaData, Table, inspect, text

from common.db import Base, DatabaseUnavailable, init_schema, make_engine
from common.models import Callback


def old_table(name: str, without: str) -> Table:
    """The table ``name`` as a version without the column ``without`` created it."""
    current = Base.metadata.tables[name]
    columns: list[Column[object]] = [c._copy() for c in current.columns if c.name != without]
    return Table(name, MetaData(), *columns)


def test_a_nullable_column_of_a_newer_version_is_added(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        old_table("callbacks", "last_result").create(engine)
        init_schema(engine)
        names = {c["name"] for c in inspect(engine).get_columns("callbacks")}
        assert names == {c.name for c in Callback.__table__.columns}
        init_schema(engine)  # idempotent: nothing more to add
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO callbacks (call_id, tenant_id, service_id, queue, number, "
                "position, status, attempts, max_attempts, requested_at, last_result) "
                "VALUES ('c1', 'city', 'citizens', 'citizens', '0901234567', 0, 'pending', "
                "0, 3, '2026-12-01 09:00:00', 'busy')"))
            assert conn.execute(text("SELECT last_result FROM callbacks")).scalar() == "busy"
    finally:
        engine.dispose()


def test_a_missing_required_column_says_how_to_fix_it(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        old_table("callbacks", "queue").create(engine)
        with pytest.raises(DatabaseUnavailable,
                           match="table callbacks lacks the required column queue.*migrate "
                                 "or recreate it"):
            init_schema(engine)
    finally:
        engine.dispose()
