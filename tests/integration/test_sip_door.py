"""The SIP door (docs/security.md), on the real Asterisk and ari_app, with raw datagrams
from stack.sipattack: only the trunk's address is the carrier, and no response tells
which names exist; broken and non-UTF-8 requests never reach a queue nor leave a caller
ringing unseen, while a real call goes on talking; a channel ARI cannot encode neither
strands its caller nor breaks the resync; a flood of calls is refused unanswered above
trunk.max_calls."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.commands import AgentLogin
from common.db import make_engine, session_factory
from common.models import Call
from common.settings import Settings, settings_override, trunk_calls
from stack import sipattack
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import (
    Proc,
    Processes,
    ari_app_heartbeat,
    hang_up,
    run_sipp,
    send,
    start_phones,
)
from tests.integration.test_queue import members

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

DID = "0312345678"
STRANGER = "127.0.0.9"  # not the trunk's address


def target(settings: Settings) -> sipattack.Target:
    return sipattack.Target("127.0.0.1", settings.asterisk.sip_port, DID,
                            settings.trunk.match[0], settings.trunk.name)


def channels(asterisk: AsteriskInstance) -> list[str]:
    """``core show channels concise``: one line per channel."""
    return [line for line in asterisk.cli("core show channels concise").splitlines()
            if "!" in line]


def ari_channels(settings: Settings) -> httpx.Response:
    a = settings.asterisk
    return httpx.get(f"{a.ari_url}/channels", auth=(a.ari_user, a.ari_password), timeout=5)


def calls(settings: Settings) -> list[Call]:
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            return list(session.query(Call).all())
    finally:
        engine.dispose()


@pytest.fixture
def controller(processes: Processes, call_settings: Settings) -> Proc:
    """ari_app with a short orphan time, so the sweep is seen within the test."""
    settings = settings_override(call_settings, ari={"orphan_seconds": 2.0})
    proc = processes.start("ari_app", "ari_app.main", settings)
    wait_until(lambda: ari_app_heartbeat(call_settings).get("ami") == "up"
               and ari_app_heartbeat(call_settings).get("ari") == "up" and proc.alive(),
               20, f"ari_app did not connect:\n{proc.output()}")
    return proc


@pytest.fixture
def live_call(call_settings: Settings, controller: Proc,
              tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A citizen talking to an operator (op01) while the test attacks the door."""
    phones = start_phones(call_settings, ["op01"], tmp_path / "phones")
    caller: subprocess.Popen[str] | None = None
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: "op01" in members(call_settings), 10, "op01 not logged in")
        started = run_sipp(call_settings, "uac_hangup_on_cue.xml", DID, tmp_path / "caller",
                           duration_ms=120000, background=True, timeout=150,
                           keys={"caller": "0901111111", "rtp_port": "4000"})
        assert isinstance(started, subprocess.Popen)
        caller = started
        wait_until(lambda: any(c.status == "active" and c.agent_connected_at
                               for c in calls(call_settings)),
                   20, "the live call was not answered by the operator")
        yield caller
    finally:  # (also when the set-up failed: no phone or caller outlives the test)
        if caller is not None and caller.poll() is None:
            hang_up(caller)
            caller.wait(10)
        phones.stop()


def test_the_trunk_is_known_by_its_address_and_no_answer_names_an_account(
        call_settings: Settings, controller: Proc, asterisk: AsteriskInstance) -> None:
    t = target(call_settings)
    spoofed = sipattack.spoofed_trunk(t, STRANGER)
    assert spoofed.challenged and not spoofed.answered, spoofed.as_dict()
    assert not any(c.caller == "0901234567" for c in calls(call_settings))
    # the trunk's name, an operator's phone and a name that does not exist: one answer
    answers = {user: sipattack.register_as(t, user, STRANGER)
               for user in (call_settings.trunk.name, "op01", "nosuchname")}
    assert {user: r.status if r else None for user, r in answers.items()} == {
        call_settings.trunk.name: 401, "op01": 401, "nosuchname": 401}
    challenges = {r.header("WWW-Authenticate").split("nonce=")[0] for r in answers.values()
                  if r is not None}
    assert len(challenges) == 1, challenges  # the same realm and algorithm for all
    # from the trunk's own address the carrier still gets in (the live-call test below
    # calls from there); a phone still registers with its password
    phones = start_phones(call_settings, ["op02"], Path(asterisk.host_dir) / "door-phones")
    phones.stop()


def test_broken_sip_never_reaches_a_queue_while_a_real_call_talks(
        call_settings: Settings, asterisk: AsteriskInstance, controller: Proc,
        live_call: subprocess.Popen[str]) -> None:
    t = target(call_settings)
    offset = asterisk.full_log.stat().st_size
    outcomes = sipattack.run_all(t, spoof_source=STRANGER)
    by_case = {o.case: o for o in outcomes}
    # refused before a channel existed: the identifiers Asterisk could not encode
    for case in ("call_id_not_utf8", "call_id_latin1"):
        assert 400 in by_case[case].responses and not by_case[case].answered, \
            by_case[case].as_dict()
    assert by_case["spoofed_trunk"].challenged and not by_case["spoofed_trunk"].answered

    # nothing is left ringing or waiting: only the live call's two legs remain
    def settled() -> bool:
        return len(channels(asterisk)) == 2 and ari_channels(call_settings).status_code == 200

    wait_until(settled, 15, f"channels left after the attack: {channels(asterisk)}")
    assert asterisk.cli("queue show citizens").count("has 0 calls") == 1
    assert live_call.poll() is None, "the live call was cut"
    assert controller.alive(), controller.output()[-3000:]
    assert asterisk.responding()
    # every attack call the controller saw has ended; the live one is still active
    active = [c for c in calls(call_settings) if c.status == "active"]
    assert [c.caller for c in active] == ["0901111111"], [(c.caller, c.status) for c in active]
    with asterisk.full_log.open("rb") as fh:
        fh.seek(offset)
        log = fh.read().decode(errors="replace")
    assert "Failed to pack JSON" not in log
    assert "couldn't allocate a port for RTP" not in log


def _ami_originate_unencodable(settings: Settings) -> None:
    """A channel in our application whose account code is not UTF-8: Asterisk cannot encode
    its StasisStart (nor list it over ARI). The phone op02 answers it; sent as raw bytes
    over AMI, as no client library would send them."""
    a = settings.asterisk
    with socket.create_connection(("127.0.0.1", a.ami_port), timeout=10) as sock:
        sock.recv(200)
        sock.sendall(f"Action: Login\r\nUsername: {a.ami_user}\r\nSecret: {a.ami_secret}"
                     "\r\n\r\n".encode())
        assert b"Success" in sock.recv(2000)
        sock.sendall(b"Action: Originate\r\nChannel: PJSIP/op02"
                     b"\r\nApplication: Stasis\r\nData: " + a.ari_app.encode() +
                     b",inbound\r\nCallerID: <0907777777>\r\nAccount: \xff\xfe\x80\r\nAsync: true"
                     b"\r\n\r\n")
        sock.recv(2000)


def test_a_channel_ari_cannot_encode_is_hung_up_and_the_resync_survives(
        call_settings: Settings, asterisk: AsteriskInstance, controller: Proc,
        processes: Processes, tmp_path: Path) -> None:
    phones = start_phones(call_settings, ["op02"], tmp_path / "phones")
    try:
        _unencodable_is_hung_up(call_settings, asterisk, controller, processes)
    finally:
        phones.stop()


def _unencodable_is_hung_up(call_settings: Settings, asterisk: AsteriskInstance,
                            controller: Proc, processes: Processes) -> None:
    _ami_originate_unencodable(call_settings)
    wait_until(lambda: ari_channels(call_settings).status_code == 500, 10,
               f"ARI lists the unencodable channel: {channels(asterisk)}")
    # the controller's sweep: no handler owns it, it is hung up after orphan_seconds
    wait_until(lambda: ari_channels(call_settings).status_code == 200
               and not channels(asterisk), 15, f"left ringing: {channels(asterisk)}")
    assert "hanging it up so the caller is not left ringing" in controller.output()

    # again, with the controller killed while the channel is in its application: the
    # next one's resync lists the channels over AMI, hangs this one up at once, goes on
    controller.stop()
    slow = settings_override(call_settings, ari={"orphan_seconds": 60.0})
    first = processes.start("ari_app", "ari_app.main", slow)
    wait_until(lambda: "resync:" in first.output(), 20, f"no resync:\n{first.output()}")
    _ami_originate_unencodable(call_settings)
    wait_until(lambda: ari_channels(call_settings).status_code == 500, 10,
               f"ARI lists the unencodable channel: {channels(asterisk)}")
    first.stop(signal.SIGKILL)
    again = processes.start("ari_app", "ari_app.main", slow)
    wait_until(lambda: "resync:" in again.output(), 20, f"no resync:\n{again.output()}")
    assert "ARI cannot list the channels" in again.output()
    wait_until(lambda: not channels(asterisk), 10, f"left ringing: {channels(asterisk)}")
    assert again.alive()


def test_a_flood_is_refused_unanswered_above_max_calls_and_the_call_rate(
        call_settings: Settings, asterisk: AsteriskInstance, controller: Proc) -> None:
    """An attacker's INVITE+CANCEL pairs, never acknowledging an answer: past the call
    rate they are refused (503); of those let in, nobody is answered (the greeting is
    early media), and a CANCEL that reached Asterisk before its INVITE's transaction
    existed (481) leaves its caller holding on, as INVITEs alone do. Such callers fill
    the trunk, and one more than trunk.max_calls is refused (503)."""
    limit, per_second = trunk_calls(call_settings), call_settings.trunk.max_calls_per_second
    offset = asterisk.full_log.stat().st_size
    t = target(call_settings)
    # a burst: the rate's window is one second of the clock, so a burst meets as many
    # windows as clock seconds its requests were sent in
    pairs = 4 * per_second
    burst = sipattack.flood(t, pairs, seconds=5, acknowledge=False, wait=1.0)
    windows = int(burst.last_sent) - int(burst.first_sent) + 1
    counts = {s: burst.responses.count(s) for s in set(burst.responses)}
    assert windows <= 3 and 200 not in burst.responses, (windows, counts)
    assert burst.responses.count(503) >= pairs - windows * per_second, (windows, counts)
    # under the call rate, callers who hold on: the trunk fills up, then refuses
    holding = len(channels(asterisk))  # the burst's callers still ringing
    extra = 5
    paced = sipattack.flood(t, limit - holding + extra, seconds=20, acknowledge=False,
                            rate=per_second - 1, wait=1.0, cancel=False)
    counts = {s: paced.responses.count(s) for s in set(paced.responses)}
    assert paced.responses.count(503) >= extra - 1, (holding, counts)
    assert len(channels(asterisk)) <= limit
    with asterisk.full_log.open("rb") as fh:
        fh.seek(offset)
        log = fh.read().decode(errors="replace")
    assert "trunk calls already (trunk.max_calls)" in log
    assert "new trunk calls in a second (trunk.max_calls_per_second)" in log
    assert "couldn't allocate a port for RTP" not in log
