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
from tests.integration.conftest import Phones, Processes, send, start_phones
from tests.integration.test_resilience import start_controller
from tests.integration.test_transcription import login, media_channels, place_call
from tests.integration.test_transfer import ari, transfer_results
from tests.transcription import conftest as tx_fixtures
from tests.transcription.test_transcriber import start as start_transcriber

pytestmark = pytest.mark.asterisk

# fixtures of the transcription tests
test_model = tx_fixtures.test_model
tx_settings = tt.tx_settings
speaking = tt.speaking


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the timeline's SQL is tested on both databases elsewhere."""
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


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
