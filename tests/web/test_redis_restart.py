"""A web session outlives a crash of the private Redis that ``make run`` starts
(stack/run.py: ``ensure_redis``, append-only file in the instance's data folder)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask

from common.settings import Settings
from stack.run import ensure_redis, redis_data_dir
from tests.conftest import free_port, wait_until
from tests.web.conftest import FAST_ARGON2, TEMPLATE_CACHE, login
from web import accounts, create_app
from web.db import resources


class PrivateRedis:
    """Settings whose Redis is a free loopback port nobody answers on yet, so that
    ``ensure_redis`` starts its own redis-server there, as ``make run`` does."""

    def __init__(self, settings: Settings, logdir: Path) -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        self.settings = dataclasses.replace(
            settings, redis=dataclasses.replace(settings.redis, url=url))
        self.logdir = logdir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = ensure_redis(self.settings, self.logdir)
        assert proc is not None, "ensure_redis found a Redis already answering"
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


@pytest.fixture
def private(web_settings: Settings, tmp_path: Path) -> Iterator[PrivateRedis]:
    logdir = tmp_path / "log"
    logdir.mkdir()
    server = PrivateRedis(web_settings, logdir)
    yield server
    server.stop()


def _app(settings: Settings) -> Flask:
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2}, settings=settings)
    app.jinja_env.bytecode_cache = TEMPLATE_CACHE
    with app.app_context():
        res = resources(app)
        with res.factory() as db:
            accounts.create_user(db, username="taro", tenant_id="city", roles={"operator"},
                                 password="correct-horse-battery-7",
                                 hasher=accounts.make_hasher(FAST_ARGON2),
                                 settings=res.settings, must_change_password=False,
                                 sip_endpoint="op01")
            db.commit()
    return app


def _aof_bytes(datadir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(datadir.rglob("*.aof")))


def test_a_web_session_survives_a_redis_crash(private: PrivateRedis) -> None:
    settings = private.settings
    proc = private.start()
    client = redis.Redis.from_url(settings.redis.url)
    config = client.config_get("*")
    datadir = redis_data_dir(settings)
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert Path(config["dir"]) == datadir and datadir.is_relative_to(settings.data_dir)
    client.close()

    app = _app(settings)
    try:
        browser = app.test_client()
        assert login(browser, "taro").headers["Location"] == "/"
        assert browser.get("/auth/account").status_code == 200
        # the session reached the append-only file (written before Redis answered)
        wait_until(lambda: b":session:" in _aof_bytes(datadir), 5, "no session in the AOF")

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        private.start()  # again, the way stack/run.py does, on the same data folder

        resp = browser.get("/auth/account")  # the same cookie
        assert resp.status_code == 200
        assert "taro" in resp.get_data(as_text=True)
    finally:
        res = resources(app)
        res.session.remove()
        res.engine.dispose()
        res.redis.close()
