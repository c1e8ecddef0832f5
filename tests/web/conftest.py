"""Fixtures for the web app: a real app on the test Redis and the test database.

``app`` is built by ``create_app`` exactly as in production, with ``TESTING`` on and a
second tenant configured; CSRF stays enforced, so tests post the token the way a browser
does. Password hashing uses cheaper argon2 parameters to keep the suite fast (one test
checks the production parameters). Every app of the session shares one in-memory cache of
compiled templates (checked against each template's source checksum on load, as Jinja's
own caches are), so each template is compiled once per worker, not once per test.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from jinja2.bccache import Bucket, BytecodeCache

from common.health import write_heartbeat
from common.keys import Keys
from common.models.accounts import User
from common.settings import Department, Settings, Tenant
from web import accounts, create_app
from web.db import resources

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"|name="csrf_token" value="([^"]+)"')
PASSWORD = "correct-horse-battery-7"
FAST_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


class MemoryBytecodeCache(BytecodeCache):
    """Compiled templates kept in this process (a bucket whose source changed is
    recompiled: Jinja checks the checksum on load)."""

    def __init__(self) -> None:
        self._store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        data = self._store.get(bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._store[bucket.key] = bucket.bytecode_to_string()


TEMPLATE_CACHE = MemoryBytecodeCache()

# common/health.py reads rq's deprecated ``Worker.state`` (reported to its owner).
RQ_STATE_DEPRECATION = "ignore:worker.state is deprecated:DeprecationWarning"


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    """The shared test settings plus a second tenant with its own department."""
    return dataclasses.replace(
        settings,
        tenants=(*settings.tenants, Tenant(id="town", name="サンプル町", name_en="Sample Town")),
        departments=(*settings.departments,
                     Department(id="town-desk", tenant="town", name="町民窓口",
                                name_en="Town desk", extensions=("3001",))),
    )


@pytest.fixture
def app(web_settings: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2},
                     settings=web_settings)
    app.jinja_env.bytecode_cache = TEMPLATE_CACHE
    yield app
    res = resources(app)
    res.session.remove()
    res.engine.dispose()
    res.redis.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def rds(web_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(web_settings.redis.url)
    yield client
    client.close()


def csrf(client: FlaskClient, path: str = "/") -> str:
    """The CSRF token of the client's session, read from a page as a browser would."""
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


MakeUser = Callable[..., User]


@pytest.fixture
def make_user(app: Flask) -> MakeUser:
    """Create a user directly in the database (returns a detached copy)."""

    def make(username: str, roles: set[str] | None = None, *, tenant_id: str = "city",
             password: str = PASSWORD, must_change_password: bool = False,
             **kwargs: Any) -> User:
        with app.app_context():
            res = resources(app)
            with res.factory() as db:
                user = accounts.create_user(
                    db, username=username, tenant_id=tenant_id,
                    roles=roles if roles is not None else {"operator"},
                    password=password, hasher=accounts.make_hasher(FAST_ARGON2),
                    settings=res.settings, must_change_password=must_change_password,
                    sip_endpoint=kwargs.pop("sip_endpoint", "op01"),
                    extension=kwargs.pop("extension", None))
                for key, value in kwargs.items():  # e.g. active=False
                    setattr(user, key, value)
                db.commit()
                db.refresh(user)
                db.expunge(user)
                return user

    return make


def login(client: FlaskClient, username: str, password: str = PASSWORD,
          follow: bool = False) -> Any:
    token = csrf(client, "/auth/login")
    return client.post("/auth/login", data={"username": username, "password": password,
                                            "csrf_token": token},
                       follow_redirects=follow)


@pytest.fixture
def admin_client(app: Flask, make_user: MakeUser) -> FlaskClient:
    make_user("admin", {"administrator"})
    c = app.test_client()
    resp = login(c, "admin")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return c


def audit_rows(app: Flask, **where: Any) -> list[Any]:
    from sqlalchemy import select

    from common.models.accounts import AuditEntry

    with resources(app).factory() as db:
        query = select(AuditEntry).order_by(AuditEntry.id)
        for key, value in where.items():
            query = query.where(getattr(AuditEntry, key) == value)
        return list(db.scalars(query))


def make_everything_healthy(settings: Settings) -> None:
    """Real heartbeats and real rq registrations, as the running processes write them."""
    from rq import Worker
    from rq.cron import CronScheduler
    from rq.cron_scheduler_registry import register

    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.prefix)
    write_heartbeat(client, keys, "ari_app", "test", {
        "asterisk": "up", "asterisk_detail": "Asterisk 22",
        "ari": "up", "ari_detail": "connected", "ami": "up", "ami_detail": "connected",
        "rtp_in_use": "4", "rtp_ports": "10000",
    }, ttl=60)
    write_heartbeat(client, keys, "kiosk_bridge", "test", {"peers": "0"}, ttl=60)
    write_heartbeat(client, keys, "transcriber", "test", {
        "state": "up", "detail": "ready", "streams": "0", "rtf": "0.000"}, ttl=60)
    Worker(["default"], connection=client).register_birth()
    register(CronScheduler(connection=client))
    client.close()
