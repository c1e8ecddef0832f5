"""Fixtures of the KPI and report tests: a real database (SQLite and PostgreSQL through
``db_url``) holding the synthetic October 2026 of ``synthetic.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.db import init_schema, make_engine, session_factory, transaction
from tests.reports import synthetic


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    init_schema(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def month(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The synthetic month, loaded."""
    with transaction(factory) as session:
        synthetic.load(session)
    return factory


# The web app fixtures (real app on the test Redis and database, users, log-in).
from tests.web.conftest import (  # noqa: E402, F401
    app,
    client,
    make_user,
    web_settings,
)
