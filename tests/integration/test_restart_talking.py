"""A call that is talking to an operator while the controller is killed and restarted:
the new controller rebuilds what it needs from Asterisk (the operator's leg, the call's
transcription), so the call can still be transferred to staff, and its hang-up leaves no
snoop, ExternalMedia channel, bridge or registration behind."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.commands import CallTransfer
from common.keys import Keys
from common.settings import Settings
from common.transcription import streams_key
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration import test_transcription as tt
from tests.integration.conftest import (
    SIPP_DIR,
    Phones,
    Processes,
    hang_up,
    send,
    start_phones,
)
from tests.integration.test_resilience import start_controller
from tests.integration.test_transcription import login, media_channels, place_call
from tests.integration.test_transfer import ari, transfer_results
from tests.transcription import conftest as tx_fixtures
from tests.transcription.test_transcriber import start as start_transcriber

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

# fixtures of the transcription tests
test_model = tx_fixtures.test_model
tx_settings = tt.tx_settings
speaking = tt.speaking


@pytest.fixture
def phones(tx_settings: Settings, tmp_path: Path,
           speaking: tuple[str, str]) -> Iterator[Phones]:
    operator = start_phones(tx_settings, ["op01"], tmp_path / "op01", scenario=speaking[1])
    staff = start_phones(tx_settings, ["staff2001"], tmp_path / "staff", scenario=speaking[1])
    yield operator
    operator.stop()
    staff.stop()


def test_a_talking_call_is_transferred_after_a_controller_restart(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        phones: Phones, speaking: tuple[str, str], tmp_path: Path) -> None:
    start_transcriber(processes, tx_settings)
    first = start_controller(processes, tx_settings)
    login(tx_settings)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 30000)
    assert isinstance(caller, subprocess.Popen)
    wait_until(lambda: len(media_channels(tx_settings)) == 4, 15,
               f"transcription did not start: {media_channels(tx_settings)}")
    before = sorted(media_channels(tx_settings))

    # the controller dies mid-call; the call goes on in Asterisk
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(5)
    second = start_controller(processes, tx_settings)
    wait_until(lambda: "watched again after a restart (talking to op01)" in second.output(),
               15, f"the talking call was not taken over:\n{second.output()[-3000:]}")
    assert "transcription taken over (4 channel(s), 2 bridge(s))" in second.output()
    assert sorted(media_channels(tx_settings)) == before  # the same snoops, no new ones

    # ... and can be handed to the staff member
    result = send(tx_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                            target="2001", note="再起動後の転送"))
    assert result["ok"], result
    wait_until(lambda: "answered" in transfer_results(tx_settings, call_id), 20,
               f"staff never connected: {transfer_results(tx_settings, call_id)}\n"
               f"{second.output()[-3000:]}")
    hang_up(caller)
    assert caller.wait(60) == 0

    # the hang-up releases what the first controller had made
    wait_until(lambda: not media_channels(tx_settings), 20,
               f"snoop/ExternalMedia channels left: {media_channels(tx_settings)}")
    wait_until(lambda: not ari(tx_settings, "/bridges"), 20,
               f"bridges left: {ari(tx_settings, '/bridges')}")
    client = redis.Redis.from_url(tx_settings.redis.url)
    try:
        wait_until(lambda: not client.hlen(streams_key(Keys(tx_settings.redis.prefix))), 10,
                   "stream registrations left")
    finally:
        client.close()


def test_a_transfer_under_way_is_taken_over_after_a_controller_restart(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        phones: Phones, speaking: tuple[str, str], tmp_path: Path) -> None:
    """Caller and staff member keep talking through the restart; when the staff member
    hangs up first the new controller goes on as it would have (the caller is asked for
    the survey: this site surveys every call), and nothing is left afterwards, not the
    transfer's bridge either."""
    import httpx

    from tests.integration.test_queue import calls

    first = start_controller(processes, tx_settings)
    login(tx_settings)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 40000)
    assert isinstance(caller, subprocess.Popen)
    result = send(tx_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                            target="2001", note="再起動前の転送"))
    assert result["ok"], result
    wait_until(lambda: "answered" in transfer_results(tx_settings, call_id), 20,
               f"staff never connected: {transfer_results(tx_settings, call_id)}")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(5)
    second = start_controller(processes, tx_settings)
    wait_until(lambda: "watched again after a restart (transferred, 1 leg(s))" in
               second.output(), 15, f"the transfer was not taken over:\n{second.output()}")
    ast = tx_settings.asterisk
    auth = (ast.ari_user, ast.ari_password)
    staff = next(c for c in ari(tx_settings, "/channels") if "staff2001" in c["name"])
    # the staff member hangs up: the caller is asked for the survey
    httpx.delete(f"{ast.ari_url}/channels/{staff['id']}", auth=auth, timeout=5
                 ).raise_for_status()
    wait_until(lambda: "survey_asked" in [e.kind for c in calls(tx_settings)
                                          if c.id == call_id for e in c.events], 10,
               f"the caller was left alone:\n{second.output()[-2000:]}")
    # ... and hangs up
    httpx.delete(f"{ast.ari_url}/channels/{call_id}", auth=auth, timeout=5).raise_for_status()
    wait_until(lambda: not ari(tx_settings, "/channels"), 10,
               f"channels left: {ari(tx_settings, '/channels')}")
    wait_until(lambda: not ari(tx_settings, "/bridges"), 10,
               f"bridges left: {ari(tx_settings, '/bridges')}")
    caller.wait(10)


STAFF_RINGS_S = 8  # the staff phone rings this long: the controller restarts meanwhile


def slow_staff_scenario(behaviour: str, tmp_path: Path) -> str:
    """The test phone (tests/sipp/uas_phone.xml) ringing ``STAFF_RINGS_S`` seconds before
    it answers (``answers``) or declines with 486 Busy Here (``busy``)."""
    phone = (SIPP_DIR / "uas_phone.xml").read_text()
    head, answer = phone.split('  <send retrans="500">', 1)
    pause = f'  <pause milliseconds="{STAFF_RINGS_S * 1000}"/>\n'
    if behaviour == "answers":
        text = head + pause + '  <send retrans="500">' + answer
    else:
        busy = ("  <send>\n    <![CDATA[\n      SIP/2.0 486 Busy Here\n      [last_Via:]\n"
                "      [last_From:]\n      [last_To:];tag=[pid]SIPpTag04[call_number]\n"
                "      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n\n"
                "    ]]>\n  </send>\n  <recv request=\"ACK\"/>\n  <nop next=\"end\"/>\n")
        text = head + pause + busy + answer[answer.index('  <label id="options"/>'):]
    path = tmp_path / f"uas_staff_{behaviour}.xml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("staff_phone", ["answers", "busy"])
def test_a_ringing_transfer_goes_on_after_a_controller_restart(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        speaking: tuple[str, str], tmp_path: Path, staff_phone: str) -> None:
    """The controller dies while the staff phone rings (blind transfer): the new one
    rebuilds the transfer from Asterisk and the timeline, so the staff member answering
    is connected with the caller, and a staff phone that declines sends the caller back
    to the operator, whose phone rings again; nothing is left afterwards."""
    operator = start_phones(tx_settings, ["op01"], tmp_path / "op01", scenario=speaking[1])
    staff = start_phones(tx_settings, ["staff2001"], tmp_path / "staff",
                         scenario=slow_staff_scenario(staff_phone, tmp_path))
    try:
        first = start_controller(processes, tx_settings)
        login(tx_settings)
        caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 30000)
        result = send(tx_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                                target="2001", note="呼び出し中に再起動"))
        assert result["ok"], result
        wait_until(lambda: "ringing" in transfer_results(tx_settings, call_id), 10,
                   f"the staff phone does not ring: {transfer_results(tx_settings, call_id)}")
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(5)
        second = start_controller(processes, tx_settings)
        wait_until(lambda: "watched again after a restart (transfer ringing, staff " in
                   second.output(), 15,
                   f"the ringing transfer was not taken over:\n{second.output()[-3000:]}")
        if staff_phone == "answers":
            wait_until(lambda: "answered" in transfer_results(tx_settings, call_id),
                       STAFF_RINGS_S + 10,
                       f"staff never connected: {transfer_results(tx_settings, call_id)}\n"
                       f"{second.output()[-3000:]}")
            bridged = [b for b in ari(tx_settings, "/bridges") if call_id in b["channels"]]
            assert len(bridged) == 1 and len(bridged[0]["channels"]) == 2, bridged
            assert any("staff2001" in c["name"] for c in ari(tx_settings, "/channels")
                       if c["id"] in bridged[0]["channels"])
        else:
            wait_until(lambda: "returned" in transfer_results(tx_settings, call_id),
                       STAFF_RINGS_S + 15,
                       f"the caller did not return: {transfer_results(tx_settings, call_id)}"
                       f"\n{second.output()[-3000:]}")
            assert transfer_results(tx_settings, call_id)[-2:] == ["failed", "returned"]
            bridged = [b for b in ari(tx_settings, "/bridges") if call_id in b["channels"]]
            assert len(bridged) == 1 and any(
                "op01" in c["name"] for c in ari(tx_settings, "/channels")
                if c["id"] in bridged[0]["channels"]), bridged
        hang_up(caller)
        assert caller.wait(60) == 0
        wait_until(lambda: not ari(tx_settings, "/channels"), 20,
                   f"channels left: {ari(tx_settings, '/channels')}")
        wait_until(lambda: not ari(tx_settings, "/bridges"), 20,
                   f"bridges left: {ari(tx_settings, '/bridges')}")
    finally:
        operator.stop()
        staff.stop()
