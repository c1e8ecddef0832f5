"""A queued callback keeps the caller's place: booked by keypad, held by a placeholder in
the queue, and completed by calling the operator first, then the citizen."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from common.commands import AgentLogin
from common.db import make_engine, session_factory
from common.models import Callback
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, Processes, run_sipp, send, start_phones
from tests.integration.test_queue import calls, members
from tests.integration.test_resilience import start_controller

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("postgresql")]

DID = "0312345678"


def callbacks(settings: Settings) -> list[Callback]:
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(Callback)))
    finally:
        engine.dispose()


def start_citizen(settings: Settings, workdir: Path, talk_ms: int,
                  scenario: str = "uas_answer_hangup.xml",
                  calls: int = 1) -> subprocess.Popen[str]:
    """The citizen's phone behind the trunk (the trunk's contact in the test settings)."""
    port = settings.trunk.contact.rsplit(":", 1)[1]
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "citizen.out").open("w") as out:
        return subprocess.Popen(
            ["sipp", "-sf", str(Path(__file__).parents[1] / "sipp" / scenario),
             "-i", "127.0.0.2", "-mi", "127.0.0.2", "-p", port, "-d", str(talk_ms),
             "-m", str(calls), "-nostdin"],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, text=True)


def test_callback_keeps_the_place_and_calls_operator_first(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    phones = start_phones(call_settings, ["op01"], tmp_path / "phones")
    citizen = start_citizen(call_settings, tmp_path / "citizen", 3000)
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("status") ==
                   "not_in_use", 30, "op01 not ready")

        def caller(name: str, number: str, scenario: str, ms: int) -> subprocess.Popen[str]:
            proc = run_sipp(call_settings, scenario, DID, tmp_path / name, duration_ms=ms,
                            background=True, keys={"caller": number, "rtp_port": "4000"})
            assert isinstance(proc, subprocess.Popen)
            return proc

        busy = caller("busy", "0901000001", "uac_hangup.xml", 22000)
        wait_until(lambda: members(call_settings)["op01"]["in_call"], 15, "op01 not busy")
        ahead = caller("ahead", "0901000002", "uac_hangup.xml", 30000)
        wait_until(lambda: any(c.caller == "0901000002" and c.queue_position == 1
                               for c in calls(call_settings)), 15, "2nd caller not queued")
        asker = caller("asker", "0901000003", "uac_callback.xml", 8000)
        assert asker.wait(60) == 0, "the caller asking for a callback was not served"

        booked = wait_until(lambda: callbacks(call_settings), 10, "no callback booked")
        (callback,) = booked
        assert callback.number == "0901000003" and callback.position == 2
        for proc in (busy, ahead):
            assert proc.wait(60) == 0
        assert citizen.wait(60) == 0, "the citizen was not called back"

        done = wait_until(lambda: (cbs := callbacks(call_settings)) and
                          cbs[0].status == "completed" and cbs[0], 30,
                          f"callback not completed:\n{ari_app.output()[-2000:]}")
        assert done.agent is None or done.agent == "op01"
        assert done.attempts == 1 and done.last_result == "answered"
        original = next(c for c in calls(call_settings) if c.caller == "0901000003")
        assert original.outcome == "callback"
        kinds = [e.kind for e in original.events]
        for kind in ("queue_join", "callback_offer", "callback_requested", "callback_placed",
                     "callback_queue_join", "callback_agent_connect", "callback_attempt",
                     "callback_completed"):
            assert kind in kinds, (kind, kinds)
        placed = next(e for e in original.events if e.kind == "callback_placed")
        assert placed.data["position"] == 2
        # it kept its place: served after the caller who was ahead, by the same operator
        ahead_call = next(c for c in calls(call_settings) if c.caller == "0901000002")
        connect = next(e for e in original.events if e.kind == "callback_agent_connect")
        assert ahead_call.agent_connected_at is not None
        assert connect.at >= ahead_call.agent_connected_at
        assert connect.data["agent"] == "op01"
    finally:
        if citizen.poll() is None:
            citizen.kill()
            citizen.wait(5)
        phones.stop()


def test_busy_citizen_is_retried_then_given_up(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    """The citizen's line is busy: every attempt is on the timeline, the operator is
    released each time, and after callback_max_attempts the callback is given up."""
    phones = start_phones(call_settings, ["op01"], tmp_path / "phones")
    citizen = start_citizen(call_settings, tmp_path / "citizen", 0, "uas_busy.xml", calls=3)
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("status") ==
                   "not_in_use", 30, "op01 not ready")
        busy = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "busy",
                        duration_ms=14000, background=True,
                        keys={"caller": "0901000001", "rtp_port": "4000"})
        assert isinstance(busy, subprocess.Popen)
        wait_until(lambda: members(call_settings)["op01"]["in_call"], 15, "op01 not busy")
        asker = run_sipp(call_settings, "uac_callback.xml", DID, tmp_path / "asker",
                         duration_ms=8000, keys={"caller": "0901000003", "rtp_port": "4002"},
                         timeout=60)
        assert asker.returncode == 0, asker.stdout  # type: ignore[union-attr]
        assert busy.wait(60) == 0
        failed = wait_until(lambda: (cbs := callbacks(call_settings)) and
                            cbs[0].status == "failed" and cbs[0], 60,
                            f"callback not given up:\n{ari_app.output()[-2000:]}")
        assert failed.attempts == 3
        assert failed.last_result == "busy"
        original = next(c for c in calls(call_settings) if c.caller == "0901000003")
        attempts = [e.data for e in original.events if e.kind == "callback_attempt"
                    and e.data["result"] != "dialling"]
        assert [a["attempt"] for a in attempts] == [1, 2, 3]
        wait_until(lambda: not members(call_settings)["op01"]["in_call"], 10,
                   "the operator was not released")
        assert citizen.wait(10) == 0  # three calls, each refused busy
    finally:
        if citizen.poll() is None:
            citizen.kill()
            citizen.wait(5)
        phones.stop()


def test_booked_callback_survives_a_controller_restart(
        asterisk: AsteriskInstance, call_settings: Settings, processes: Processes,
        tmp_path: Path) -> None:
    phones = start_phones(call_settings, ["op01"], tmp_path / "phones")
    citizen = start_citizen(call_settings, tmp_path / "citizen", 2000)
    try:
        first = start_controller(processes, call_settings)
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("status") ==
                   "not_in_use", 30, "op01 not ready")
        busy = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "busy",
                        duration_ms=45000, background=True,
                        keys={"caller": "0901000001", "rtp_port": "4000"})
        assert isinstance(busy, subprocess.Popen)
        wait_until(lambda: members(call_settings)["op01"]["in_call"], 15, "op01 not busy")
        asker = run_sipp(call_settings, "uac_callback.xml", DID, tmp_path / "asker",
                         duration_ms=8000, keys={"caller": "0901000003", "rtp_port": "4002"},
                         timeout=60)
        assert asker.returncode == 0  # type: ignore[union-attr]
        wait_until(lambda: (cbs := callbacks(call_settings)) and cbs[0].status == "placed",
                   15, "callback not placed")
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(5)
        start_controller(processes, call_settings)
        assert busy.wait(60) == 0
        assert citizen.wait(60) == 0, "the citizen was not called back after the restart"
        done = wait_until(lambda: (cbs := callbacks(call_settings)) and
                          cbs[0].status == "completed" and cbs[0], 30,
                          "callback not completed after the restart")
        assert done.attempts == 1
    finally:
        if citizen.poll() is None:
            citizen.kill()
            citizen.wait(5)
        phones.stop()
