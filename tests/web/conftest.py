"""Fixtures for the web app: a real app on the test Redis and the test database.

``app`` is built by ``create_app`` exactly as in production, with ``TESTING`` on; CSRF
stays enforced, so tests post the token the way a browser does (``csrf`` helper).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from common.health import write_heartbeat
from common.keys import Keys
from common.settings import Settings
from web import create_app
from web.db import resources

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True}, settings=settings)
    yield app
    res = resources(app)
    res.session.remove()
    res.engine.dispose()
    res.redis.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf(client: FlaskClient, path: str = "/") -> str:
    """The CSRF token of the client's session, read from a page as a browser would."""
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


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
    }, ttl=60)
    write_heartbeat(client, keys, "kiosk_bridge", "test", {"peers": "0"}, ttl=60)
    Worker(["default"], connection=client).register_birth()
    register(CronScheduler(connection=client))
    client.close()
