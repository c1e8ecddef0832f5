"""The health page follows the processes themselves: one that is killed (no clean stop,
nothing deleted) reads as down within a few heartbeat intervals, with how many
instances report and since when the last one is silent."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from common.settings import Settings, settings_override
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, Processes
from web import create_app
from web.db import resources

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

#: The processes' heartbeat interval here (ari.heartbeat_interval; 2 s by default).
INTERVAL = 0.5
#: A killed process reads as down this soon: three beats of the slowest writer (the rq
#: worker and cron scheduler beat in whole seconds: 1 s here), and a margin.
WITHIN = 3 * 1.0 + 1.5
KILLED = ("ari_app", "worker", "cron", "kiosk_bridge")
SILENT = "the last one went silent at "


@pytest.fixture
def fast(call_settings: Settings) -> Settings:
    return settings_override(call_settings, ari={"heartbeat_interval": INTERVAL})


@pytest.fixture
def web_app(fast: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True}, settings=fast)
    yield app
    res = resources(app)
    res.redis.close()
    res.engine.dispose()


def components(app: Flask) -> dict[str, dict[str, Any]]:
    with app.test_client() as client:
        body: dict[str, Any] = client.get("/health.json").get_json()
    return body["components"]  # type: ignore[no-any-return]


def test_killed_processes_read_as_down_within_seconds(
        asterisk: AsteriskInstance, fast: Settings, processes: Processes,
        web_app: Flask) -> None:
    procs: dict[str, Proc] = {
        "ari_app": processes.start("ari_app", "ari_app.main", fast),
        "worker": processes.start("worker", "reports.worker", fast),
        "cron": processes.start("cron", "reports.worker", fast, "cron"),
        "kiosk_bridge": processes.start("kiosk_bridge", "kiosk_bridge.main", fast),
    }

    def all_up() -> dict[str, dict[str, Any]] | None:
        for proc in procs.values():
            assert proc.alive(), f"{proc.name} exited:\n{proc.output()}"
        now = components(web_app)
        up = all(now[name]["state"] == "ok" for name in (*KILLED, "asterisk", "ari", "ami"))
        return now if up else None

    before = wait_until(all_up, 20, "the processes never all read as up", interval=0.1)
    assert before["ari_app"]["detail"] == "1 instance(s) reporting"
    assert before["kiosk_bridge"]["detail"] == "1 instance(s) reporting"
    assert before["worker"]["detail"] == "1 worker(s)"
    assert before["cron"]["detail"] == "1 scheduler(s)"

    for proc in procs.values():
        proc.popen.send_signal(signal.SIGKILL)
    for proc in procs.values():
        proc.popen.wait(5)
    killed = time.monotonic()

    def all_down() -> dict[str, dict[str, Any]] | None:
        now = components(web_app)
        return now if all(now[name]["state"] == "down" for name in KILLED) else None

    after = wait_until(all_down, WITHIN, "a killed process still reads as up",
                       interval=0.1)
    took = time.monotonic() - killed
    assert took < WITHIN, took
    # what Asterisk, ARI and AMI are like is unknown without ari_app
    for name in ("asterisk", "ari", "ami"):
        assert after[name]["state"] == "down", after[name]
        assert after[name]["detail"].startswith("unknown: ari_app is not running"), after[name]
    assert after["ari_app"]["detail"].startswith(
        f"ari_app is not running: 0 instance(s) reporting: {SILENT}"), after["ari_app"]
    assert after["kiosk_bridge"]["detail"].startswith(
        f"not running: 0 instance(s) reporting: {SILENT}"), after["kiosk_bridge"]
    assert after["worker"]["detail"].startswith(f"no rq worker running: {SILENT}"), \
        after["worker"]
    assert after["cron"]["detail"].startswith(f"no rq cron scheduler running: {SILENT}"), \
        after["cron"]
    assert all(after[name]["detail"].endswith(" s ago)") for name in KILLED), after

    # a new ari_app reports at once; the killed one is still named as silent
    procs["ari_app"] = processes.start("ari_app", "ari_app.main", fast)
    again = wait_until(lambda: (c := components(web_app))["ari_app"]["state"] == "ok" and c,
                       20, "the new ari_app never read as up", interval=0.1)
    assert again["ari_app"]["detail"].startswith(
        "1 instance(s) reporting; 1 other silent, the last one since "), again["ari_app"]
