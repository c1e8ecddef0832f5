"""The whole stack up for real: ari_app, kiosk_bridge, the transcriber, rq worker and rq
cron, and the web health page reporting each part as it really is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from common.db import make_engine, session_factory
from common.models import HealthSample
from common.settings import Settings, settings_override
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, Processes
from tests.transcription import conftest as tx_fixtures
from tests.transcription.conftest import transcription_settings
from web import create_app
from web.db import resources

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("postgresql")]

test_model = tx_fixtures.test_model  # the fixture of tests/transcription (model copy)


@pytest.fixture
def web_app(call_settings: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True}, settings=call_settings)
    yield app
    res = resources(app)
    res.redis.close()
    res.engine.dispose()


def health(app: Flask) -> tuple[int, dict]:  # type: ignore[type-arg]
    with app.test_client() as client:
        resp = client.get("/health.json")
        return resp.status_code, resp.get_json()


def test_health_page_reports_every_part_up_and_cron_runs_a_real_job(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        processes: Processes, web_app: Flask, test_model: Path) -> None:
    fast = settings_override(call_settings, worker={"health_rollup_interval": 2})
    worker = processes.start("worker", "reports.worker", fast)
    cron = processes.start("cron", "reports.worker", fast, "cron")
    bridge = processes.start("kiosk_bridge", "kiosk_bridge.main", fast)
    processes.start("transcriber", "transcriber.main", transcription_settings(fast, test_model))

    def all_up() -> dict | None:  # type: ignore[type-arg]
        status, body = health(web_app)
        return body if status == 200 else None

    body = wait_until(all_up, 60, "the health page never reported everything up",
                      interval=0.5)
    assert body["status"] == "ok"
    components = body["components"]
    assert set(components) >= {"asterisk", "ari", "ami", "ari_app", "redis", "database",
                               "worker", "cron", "kiosk_bridge", "transcriber"}
    assert all(c["ok"] for c in components.values()), components
    assert "Asterisk 22" in components["asterisk"]["detail"]

    # rq cron enqueued the health roll-up and the rq worker ran it: rows in the database.
    engine = make_engine(call_settings.database_url)

    def sampled() -> list[HealthSample]:
        with session_factory(engine)() as session:
            rows = list(session.scalars(select(HealthSample)))
        return rows if {r.component for r in rows if r.ok} >= {"asterisk", "worker"} else []

    rows = wait_until(sampled, 30, f"no health roll-up ran:\n{worker.output()}\n"
                      f"{cron.output()}", interval=0.5)
    assert any(r.component == "database" and r.ok for r in rows)
    engine.dispose()

    # Stop a part: the page says so at once, with the reason.
    bridge.stop()
    status, body = health(web_app)
    assert status == 503 and body["status"] == "degraded"
    assert body["components"]["kiosk_bridge"]["ok"] is False
    assert "no heartbeat" in body["components"]["kiosk_bridge"]["detail"]
    for proc in (worker, cron):
        assert proc.alive(), proc.output()
