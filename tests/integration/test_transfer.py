"""Transfers to staff on real SIP phones: blind, attended (complete and cancel), and a
staff phone that cannot answer (the caller returns to the operator, never dropped)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from common.commands import (
    AgentLogin,
    CallTransfer,
    CallTransferCancel,
    CallTransferComplete,
)
from common.console_events import presence_key
from common.keys import Keys
from common.settings import Settings, settings_override
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import (
    Phones,
    Proc,
    Processes,
    ari_app_heartbeat,
    run_sipp,
    send,
    start_phones,
)
from tests.integration.test_first_call import events_of
from tests.integration.test_queue import calls, members

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("postgresql")]

DID = "0312345678"


@pytest.fixture
def phones(call_settings: Settings, tmp_path: Path) -> Iterator[Phones]:
    # operator op01 and staff 2001 (戸籍係) answer; staff 2101 is not registered
    started = start_phones(call_settings, ["op01", "staff2001"], tmp_path / "phones")
    yield started
    started.stop()


def ari(settings: Settings, path: str) -> list:  # type: ignore[type-arg]
    ast = settings.asterisk
    resp = httpx.get(f"{ast.ari_url}{path}", auth=(ast.ari_user, ast.ari_password),
                     timeout=5)
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


def connected_call(settings: Settings, tmp_path: Path, duration_ms: int
                   ) -> tuple[subprocess.Popen[str], str]:
    caller = run_sipp(settings, "uac_hangup.xml", DID, tmp_path / "caller",
                      duration_ms=duration_ms, background=True,
                      keys={"caller": "0901234567", "rtp_port": "4000"})
    assert isinstance(caller, subprocess.Popen)
    call = wait_until(lambda: next((c for c in calls(settings) if c.agent == "op01"), None),
                      20, "the call did not reach the operator")
    return caller, call.id


def presence(settings: Settings) -> dict[str, str]:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        return client.hgetall(presence_key(Keys(settings.redis.prefix)))  # type: ignore[return-value]
    finally:
        client.close()


def transfer_results(settings: Settings, call_id: str) -> list[str]:
    return [e.result for e in events_of(settings)  # type: ignore[attr-defined]
            if e.type == "call.transfer" and e.call_id == call_id]  # type: ignore[attr-defined]


def assert_nothing_left(settings: Settings, asterisk: AsteriskInstance) -> None:
    wait_until(lambda: not [c for c in ari(settings, "/channels")
                            if not c["name"].startswith("Local/")], 30,
               f"channels left: {asterisk.cli('core show channels')}")
    wait_until(lambda: not ari(settings, "/bridges"), 30, "bridges left behind")


def login(settings: Settings) -> None:
    assert send(settings, AgentLogin(tenant="city", endpoint="op01",
                                     queues=["citizens"]))["ok"]
    wait_until(lambda: members(settings).get("op01", {}).get("status") == "not_in_use", 30,
               "op01 not ready")


def test_blind_transfer_to_a_staff_extension(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings, phones: Phones,
        tmp_path: Path) -> None:
    login(call_settings)
    caller, call_id = connected_call(call_settings, tmp_path, 12000)
    result = send(call_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                              target="2001", note="転入届の記入方法について"))
    assert result["ok"], result
    wait_until(lambda: "answered" in transfer_results(call_settings, call_id), 20,
               f"staff never connected: {transfer_results(call_settings, call_id)}\n"
               f"{ari_app.output()[-3000:]}")
    # the operator is free again while the caller talks to the staff member
    wait_until(lambda: not members(call_settings)["op01"]["in_call"], 10, "op01 still busy")
    # the staff directory's presence follows Asterisk's device state
    wait_until(lambda: presence(call_settings).get("2001") == "in_use", 10,
               f"presence of 2001 not in use: {presence(call_settings)}")
    states = [(e.extension, e.state) for e in events_of(call_settings)  # type: ignore[attr-defined]
              if e.type == "device.state"]
    assert ("2001", "in_use") in states
    assert caller.wait(60) == 0
    call = wait_until(lambda: (c := calls(call_settings)[0]).status == "ended" and c, 15,
                      "call not ended")
    steps = [e.data["result"] for e in call.events if e.kind == "transfer"]
    assert steps[0] == "started" and "answered" in steps
    transfer = next(e for e in call.events if e.kind == "transfer")
    assert transfer.data["target"] == "2001" and transfer.data["department"] == "koseki"
    assert transfer.data["note"] == "転入届の記入方法について"
    assert transfer.data["operator"] == "op01" and transfer.data["kind"] == "blind"
    assert_nothing_left(call_settings, asterisk)


def test_attended_transfer_complete_and_cancel(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings, phones: Phones,
        tmp_path: Path) -> None:
    login(call_settings)
    caller, call_id = connected_call(call_settings, tmp_path, 25000)
    # consult the department (its first extension, 2001), then change our mind
    assert send(call_settings, CallTransfer(tenant="city", call_id=call_id, kind="attended",
                                            target="koseki", note="相談"))["ok"]
    wait_until(lambda: "consulting" in transfer_results(call_settings, call_id), 20,
               "the consultation did not start")
    early = send(call_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                             target="2001"))
    assert not early["ok"] and early["code"] == "transfer_in_progress"
    assert send(call_settings, CallTransferCancel(tenant="city", call_id=call_id))["ok"]
    wait_until(lambda: "returned" in transfer_results(call_settings, call_id), 10,
               "caller not returned to the operator")
    # consult again and complete this time
    assert send(call_settings, CallTransfer(tenant="city", call_id=call_id, kind="attended",
                                            target="2001", note="再度"))["ok"]
    wait_until(lambda: transfer_results(call_settings, call_id).count("consulting") == 2, 20,
               "second consultation did not start")
    assert send(call_settings, CallTransferComplete(tenant="city", call_id=call_id))["ok"]
    wait_until(lambda: "answered" in transfer_results(call_settings, call_id), 10,
               "transfer not completed")
    assert caller.wait(60) == 0
    assert_nothing_left(call_settings, asterisk)


def test_unreachable_staff_returns_the_caller_to_the_operator(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings, phones: Phones,
        tmp_path: Path) -> None:
    login(call_settings)
    caller, call_id = connected_call(call_settings, tmp_path, 15000)
    bad = send(call_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                           target="9999"))
    assert not bad["ok"] and bad["code"] == "unknown_target"
    assert send(call_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                            target="2101"))["ok"]  # not registered
    wait_until(lambda: "returned" in transfer_results(call_settings, call_id), 30,
               f"caller not returned: {transfer_results(call_settings, call_id)}")
    assert caller.wait(60) == 0, "the caller was dropped"
    call = wait_until(lambda: (c := calls(call_settings)[0]).status == "ended" and c, 15,
                      "call not ended")
    failed = next(e for e in call.events if e.kind == "transfer"
                  and e.data["result"] == "failed")
    assert failed.data["reason"] in ("unavailable", "no_answer")
    returned = next(e for e in call.events if e.kind == "transfer"
                    and e.data["result"] == "returned")
    assert returned.data["reason"] == "operator"
    assert_nothing_left(call_settings, asterisk)


def test_transfer_button_on_the_operator_phone(
        asterisk: AsteriskInstance, call_settings: Settings, processes: Processes,
        tmp_path: Path) -> None:
    """SIP REFER from the operator's softphone lands on the same timeline."""
    operator = start_phones(call_settings, ["op01"], tmp_path / "operator",
                            scenario="uas_phone_refer.xml", keys={"target": "2001"})
    staff = start_phones(call_settings, ["staff2001"], tmp_path / "staff")
    debug = settings_override(call_settings, site={"log_level": "DEBUG"})
    ari_app = processes.start("ari_app", "ari_app.main", debug)
    wait_until(lambda: ari_app_heartbeat(call_settings).get("ami") == "up", 20, "no ari_app")
    try:
        login(call_settings)
        caller, call_id = connected_call(call_settings, tmp_path, 14000)
        wait_until(lambda: "answered" in transfer_results(call_settings, call_id), 25,
                   f"REFER not carried out: {transfer_results(call_settings, call_id)}\n"
                   f"{ari_app.output()[-3000:]}")
        assert caller.wait(60) == 0
        call = wait_until(lambda: (c := calls(call_settings)[0]).status == "ended" and c, 15,
                          "call not ended")
        started = next(e for e in call.events if e.kind == "transfer")
        assert started.data["target"] == "2001" and started.data["kind"] == "blind"
        assert started.data["operator"] == "op01"
        assert_nothing_left(call_settings, asterisk)
        out = operator.stop()
        assert "Successful call" in out
    finally:
        operator.stop()
        staff.stop()
