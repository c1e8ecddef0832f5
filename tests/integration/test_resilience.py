"""Restarts and lost connections: no call is lost, timelines complete, state rebuilt."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from common.commands import AgentLogin, AgentPause
from common.keys import Keys
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import (
    Proc,
    Processes,
    run_sipp,
    send,
    start_phones,
)
from tests.integration.test_queue import calls, members

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

DID = "0312345678"


def heartbeat_of(settings: Settings, pid: int) -> dict[str, str]:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        for key in client.scan_iter(Keys(settings.redis.prefix).health_pattern("ari_app")):
            beat = client.hgetall(key)
            if beat.get("pid") == str(pid):  # type: ignore[union-attr]
                return beat  # type: ignore[return-value]
        return {}
    finally:
        client.close()


def start_controller(processes: Processes, settings: Settings) -> Proc:
    proc = processes.start("ari_app", "ari_app.main", settings)
    wait_until(lambda: (b := heartbeat_of(settings, proc.popen.pid)) and b["ari"] == "up"
               and b["ami"] == "up", 20, f"ari_app did not connect:\n{proc.output()}")
    return proc


def test_killed_controller_loses_no_call_and_timelines_complete(
        asterisk: AsteriskInstance, call_settings: Settings, processes: Processes,
        tmp_path: Path) -> None:
    phones = start_phones(call_settings, ["op01", "op02"], tmp_path / "phones")
    try:
        first = start_controller(processes, call_settings)
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("status") ==
                   "not_in_use", 30, "op01 not ready")
        callers: list[subprocess.Popen[str]] = []

        def caller(name: str, number: str, duration: int) -> None:
            proc = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / name,
                            duration_ms=duration, background=True,
                            keys={"caller": number, "rtp_port": "4000"})
            assert isinstance(proc, subprocess.Popen)
            callers.append(proc)

        def call_of(number: str):  # type: ignore[no-untyped-def]
            return next((c for c in calls(call_settings) if c.caller == number), None)

        # Every call outlasts the controller's absence, and the waiting ones stay long
        # enough to be answered after it: a call that ends while no controller is
        # connected is closed on the timeline without its talk time (AgentComplete went
        # to nobody), which is not what this test is about.
        caller("busy", "0901000001", 20000)
        wait_until(lambda: members(call_settings)["op01"]["in_call"], 15, "op01 not busy")
        caller("waiting", "0901000002", 30000)
        wait_until(lambda: (c := call_of("0901000002")) and "queue_join" in
                   [e.kind for e in c.events], 15, "second caller not queued")
        # The controller freezes, then dies: a caller who arrives meanwhile is left inside
        # Stasis, where nobody sends it on (callers in the greeting or the queue are in
        # the dialplan and need no controller).
        first.popen.send_signal(signal.SIGSTOP)
        caller("stranded", "0901000003", 25000)
        wait_until(lambda: any(line.split("!")[5] == "Stasis" and "0901000003" in line
                               for line in asterisk.cli("core show channels concise")
                               .splitlines() if line.count("!") > 6),
                   15, "third caller not waiting in Stasis:\n"
                   f"{asterisk.cli('core show channels concise')}\n"
                   f"{(tmp_path / 'stranded' / 'uac_hangup.xml.out').read_text()[-2000:]}")
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(5)

        second = start_controller(processes, call_settings)
        # the third caller, left inside Stasis by the dead controller, is sent on
        wait_until(lambda: (c := call_of("0901000003")) and "queue_join" in
                   [e.kind for e in c.events], 20,
                   f"third caller not resumed into the queue:\n{second.output()}")
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op02",
                                              queues=["citizens"]))["ok"]
        for proc in callers:
            assert proc.wait(60) == 0, "a caller's call failed"

        def complete() -> list:  # type: ignore[type-arg]
            rows = calls(call_settings)
            ok = len(rows) == 3 and all(
                c.status == "ended" and c.agent is not None and c.talk_seconds is not None
                for c in rows)
            return rows if ok else []

        def summary() -> str:
            return "\n".join(f"{c.caller}: {c.status} agent={c.agent} talk={c.talk_seconds} "
                             f"{[e.kind for e in c.events]}" for c in calls(call_settings))

        try:
            rows = wait_until(complete, 60, "timelines did not complete after the restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{summary()}\n{second.output()[-4000:]}") from None
        third = next(c for c in rows if c.caller == "0901000003")
        kinds = [e.kind for e in third.events]
        assert kinds.count("arrived") == 1 and kinds.count("ended") == 1
        assert "to_queue" in kinds and "agent_connect" in kinds
        assert "resumed after restart" in second.output()
    finally:
        phones.stop()


def test_lost_ami_connection_rebuilds_queue_state(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    phones = start_phones(call_settings, ["op01", "op02"], tmp_path / "phones")
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        assert send(call_settings, AgentPause(tenant="city", endpoint="op01",
                                              reason="break"))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("reason") == "break",
                   10, "pause not mirrored")
        port = call_settings.asterisk.ami_port
        # cut the controller's AMI connection, then change the queue behind its back
        cut = subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(port)],
                             capture_output=True, text=True)
        assert cut.returncode == 0, cut.stderr
        asterisk.cli("queue pause member PJSIP/op01 queue citizens reason training")
        asterisk.cli("queue add member PJSIP/op02 to citizens penalty 0 as op02 "
                     "state_interface PJSIP/op02")

        def rebuilt() -> dict | None:  # type: ignore[type-arg]
            state = members(call_settings)
            return state if state.get("op01", {}).get("reason") == "training" and \
                "op02" in state else None

        state = wait_until(rebuilt, 30, f"queue state not rebuilt:\n{ari_app.output()}")
        assert state["op01"]["paused"] is True
        wait_until(lambda: ari_app.output().count("queue state rebuilt from QueueStatus") >= 2,
                   10, "no second rebuild logged")
        assert "AMI connection lost" in ari_app.output()
        client = redis.Redis.from_url(call_settings.redis.url, decode_responses=True)
        raw = client.hget(Keys(call_settings.redis.prefix).queue_members("citizens"), "op02")
        client.close()
        assert raw is not None and json.loads(raw)["endpoint"] == "op02"  # type: ignore[arg-type]
    finally:
        phones.stop()
