"""Database engine, sessions and the declarative base (SQLAlchemy 2).

SQLite is the embedded default, PostgreSQL the production database; both are tested.
Timestamps are stored as UTC and always come back timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, naive UTC in the column."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened; the message says how to fix it."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def init_schema(engine: Engine) -> None:
    """Create missing tables (idempotent)."""
    from common import models  # noqa: F401  (registers the tables; they import this module)

    try:
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}. Check database.url (MADOGUCHI_DATABASE__URL) and that the server "
            "is running."
        ) from None


def _add_missing_columns(engine: Engine) -> None:
    """Additive schema changes: add nullable columns that a newer version introduced.

    Anything else (renames, type changes, new constraints) needs a real migration.
    """
    inspector = inspect(engine)
    # one catalogue query for every table (not one per table): this runs at every start
    found = inspector.get_multi_columns(
        filter_names=[t.name for t in Base.metadata.sorted_tables])
    columns = {name: {c["name"] for c in cols} for (_schema, name), cols in found.items()}
    for table in Base.metadata.sorted_tables:
        existing = columns.get(table.name, set())
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                raise DatabaseUnavailable(
                    f"table {table.name} lacks the required column {column.name}; this "
                    "database was made by an incompatible version: migrate or recreate it")
            ddl = column.type.compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}'))
                for index in table.indexes:
                    if column.name in index.columns:
                        index.create(conn, checkfirst=True)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
