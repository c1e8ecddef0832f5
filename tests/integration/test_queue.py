"""The 7-line queue for real: operators as registered SIPp phones driven over AMI by the
command API, callers from SIPp, app_queue doing the ACD, timelines from AMI events."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from common.commands import AgentLogin, AgentLogout, AgentPause, AgentUnpause
from common.db import make_engine, session_factory
from common.keys import Keys
from common.models import Call
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import SIPP_DIR, Phones, Proc, run_sipp, send, start_phones

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("postgresql")]

DID = "0312345678"
OPERATORS = [f"op0{n}" for n in range(1, 8)]


def members(settings: Settings, queue: str = "citizens") -> dict[str, dict]:  # type: ignore[type-arg]
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        raw = client.hgetall(Keys(settings.redis.prefix).queue_members(queue))
        return {k: json.loads(v) for k, v in raw.items()}  # type: ignore[union-attr]
    finally:
        client.close()


def waiting(asterisk: AsteriskInstance, queue: str = "citizens") -> int:
    """Callers waiting in the queue, as app_queue counts them ("citizens has 1 call")."""
    found = re.search(r" has (\d+) calls?", asterisk.cli(f"queue show {queue}"))
    assert found, asterisk.cli(f"queue show {queue}")
    return int(found.group(1))


def calls(settings: Settings) -> list[Call]:
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            rows = list(session.scalars(select(Call).order_by(Call.arrived_at)))
            for row in rows:
                _ = row.events
            return rows
    finally:
        engine.dispose()


@pytest.fixture
def phones(call_settings: Settings, tmp_path: Path) -> Iterator[Phones]:
    started = start_phones(call_settings, OPERATORS, tmp_path / "phones")
    yield started
    started.stop()


def login(settings: Settings, endpoints: list[str], asterisk: AsteriskInstance) -> None:
    for ep in endpoints:
        result = send(settings, AgentLogin(tenant="city", endpoint=ep, queues=["citizens"]))
        assert result["ok"], result
    wait_until(lambda: len([m for m in members(settings).values()
                            if m["status"] == "not_in_use"]) >= len(endpoints), 30,
               f"operators not ready: {asterisk.cli('queue show citizens')}")


def test_operator_states_through_the_command_api(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        phones: Phones) -> None:
    result = send(call_settings, AgentLogin(tenant="city", endpoint="op01"))
    assert result["ok"], result
    mirror = wait_until(lambda: members(call_settings).get("op01"), 10, "no member state")
    assert mirror["paused"] is False
    assert "op01" in asterisk.cli("queue show citizens")

    assert send(call_settings, AgentPause(tenant="city", endpoint="op01",
                                          reason="break"))["ok"]
    paused = wait_until(lambda: (m := members(call_settings).get("op01")) and m["paused"]
                        and m, 10, "pause not mirrored")
    assert paused["reason"] == "break"
    assert "paused:break" in asterisk.cli("queue show citizens").replace(" ", "").lower()

    assert send(call_settings, AgentUnpause(tenant="city", endpoint="op01"))["ok"]
    wait_until(lambda: members(call_settings)["op01"]["paused"] is False, 10, "still paused")

    # bad input: clear refusals, nothing changed
    bad = send(call_settings, AgentLogin(tenant="city", endpoint="nobody"))
    assert not bad["ok"] and bad["code"] == "unknown_endpoint"
    bad = send(call_settings, AgentPause(tenant="city", endpoint="op01", reason="nap"))
    assert not bad["ok"] and bad["code"] == "bad_reason"
    bad = send(call_settings, AgentLogin(tenant="other-city", endpoint="op02"))
    assert not bad["ok"] and bad["code"] == "unknown_tenant"
    assert list(members(call_settings)) == ["op01"]

    assert send(call_settings, AgentLogout(tenant="city", endpoint="op01"))["ok"]
    wait_until(lambda: not members(call_settings), 10, "logout not mirrored")
    assert "op01" not in asterisk.cli("queue show citizens")


def unregister(settings: Settings, endpoint: str, workdir: Path) -> None:
    """The softphone is closed: every registration of ``endpoint`` is removed."""
    from stack.render import phones as all_phones

    password = next(p.password for p in all_phones(settings) if p.id == endpoint)
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["sipp", f"127.0.0.1:{settings.asterisk.sip_port}", "-sf",
         str(SIPP_DIR / "unregister_auth.xml"), "-s", endpoint, "-au", endpoint,
         "-ap", password, "-i", "127.0.0.1", "-p", "0", "-m", "1", "-timeout", "10s",
         "-timeout_error", "-nostdin"],
        cwd=workdir, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{endpoint} not unregistered:\n{done.stdout}{done.stderr}"


def test_a_phone_that_cannot_ring_is_shown_and_cannot_be_made_ready(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    phone = start_phones(call_settings, ["op07"], tmp_path / "phone")
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op07",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: (members(call_settings).get("op07") or {}).get("status")
                   == "not_in_use", 10, "op07 not ready")
        assert send(call_settings, AgentPause(tenant="city", endpoint="op07",
                                              reason="break"))["ok"]
        unregister(call_settings, "op07", tmp_path / "unregister")
        # app_queue follows the phone's device state; the mirror says so at once
        wait_until(lambda: members(call_settings)["op07"]["status"] == "unavailable", 10,
                   f"not mirrored: {asterisk.cli('queue show citizens')}")
        refused = send(call_settings, AgentUnpause(tenant="city", endpoint="op07"))
        assert not refused["ok"] and refused["code"] == "phone_unavailable", refused
        assert "phone op07 is not registered" in refused["error"]
        assert members(call_settings)["op07"]["paused"] is True
        assert send(call_settings, AgentLogout(tenant="city", endpoint="op07"))["ok"]
        wait_until(lambda: "op07" not in members(call_settings), 10, "logout not mirrored")
        refused = send(call_settings, AgentLogin(tenant="city", endpoint="op07",
                                                 queues=["citizens"]))
        assert not refused["ok"] and refused["code"] == "phone_unavailable", refused
        assert "op07" not in members(call_settings)
    finally:
        phone.stop()
    # the softphone comes back: the operator can be made ready again
    phone = start_phones(call_settings, ["op07"], tmp_path / "phone-again")
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op07",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: (members(call_settings).get("op07") or {}).get("status")
                   == "not_in_use", 10, "op07 not back")
        assert send(call_settings, AgentLogout(tenant="city", endpoint="op07"))["ok"]
        wait_until(lambda: "op07" not in members(call_settings), 10, "logout not mirrored")
    finally:
        phone.stop()


def test_eighth_caller_waits_for_the_first_free_operator(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        phones: Phones, tmp_path: Path) -> None:
    login(call_settings, OPERATORS, asterisk)
    # an 8th operator phone cannot take a line: exactly 7 lines
    extra = send(call_settings, AgentLogin(tenant="city", endpoint="op07"))
    assert extra["ok"]  # already logged in: idempotent
    # 7 callers who hang up 15 s after the system answered (the Japanese greeting is 5 s),
    # then an 8th who stays 21 s
    talkers = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "seven", calls=7,
                       rate=20, duration_ms=15000, keys={"caller": "0901000001",
                                                        "rtp_port": "4000"}, background=True)
    assert isinstance(talkers, subprocess.Popen)
    seen: list[object] = []

    def all_busy() -> bool:
        now = members(call_settings)
        seen.append(now)
        return len(now) == 7 and all(m["in_call"] for m in now.values())

    try:
        wait_until(all_busy, 40, "the 7 operators did not all get a call")
    except AssertionError as exc:
        from tests.integration.test_first_call import events_of
        evs = [e.to_dict() for e in events_of(call_settings) if e.type == "queue.member"]
        raise AssertionError(f"{exc}: {evs[-20:]}") from None
    eighth = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "eighth",
                      duration_ms=21000, keys={"caller": "0902000008", "rtp_port": "4002"},
                      timeout=60)
    assert talkers.wait(60) == 0
    assert eighth.returncode == 0 and eighth.successful == 1, eighth.stdout

    def all_ended() -> list[Call]:
        # complete: ended (ARI) and, once connected, the talk time from AMI's AgentComplete
        rows = calls(call_settings)
        done = all(c.status == "ended" and (c.agent is None or c.talk_seconds is not None)
                   for c in rows)
        return rows if len(rows) == 8 and done else []

    try:
        rows = wait_until(all_ended, 30, "timelines did not complete")
    except AssertionError as exc:
        state = [(c.caller, c.status, c.agent, c.talk_seconds, [e.kind for e in c.events])
                 for c in calls(call_settings)]
        raise AssertionError(f"{exc}: {state}") from None
    last = next(c for c in rows if c.caller == "0902000008")
    assert last.queue_position == 1  # alone in the queue behind 7 busy lines
    assert last.outcome == "answered" and last.agent in OPERATORS
    # it really waited for a line to free (the first talker left ~6 s after it queued)
    assert last.wait_seconds is not None and last.wait_seconds >= 4, last.wait_seconds
    assert last.agent_connected_at is not None and last.talk_seconds is not None
    kinds = [e.kind for e in last.events]
    for kind in ("arrived", "hours", "to_queue", "queue_join", "ring", "agent_connect",
                 "agent_complete", "ended"):
        assert kind in kinds, (kind, kinds)
    agents = {c.agent for c in rows}
    assert len(agents) == 7  # rrmemory spread the first seven over all lines


def test_abandoned_caller_is_recorded_with_position(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        phones: Phones, tmp_path: Path) -> None:
    login(call_settings, ["op01"], asterisk)
    busy = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "busy",
                    duration_ms=30000, keys={"caller": "0901111111", "rtp_port": "4000"},
                    background=True)
    wait_until(lambda: members(call_settings)["op01"]["in_call"], 15, "op01 not busy")
    first = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "first",
                     duration_ms=25000, keys={"caller": "0902222222", "rtp_port": "4002"},
                     background=True)
    # the first waiting caller holds position 1 before the quitter arrives
    wait_until(lambda: waiting(asterisk) == 1, 15,
               f"first caller not waiting: {asterisk.cli('queue show citizens')}")
    quitter = run_sipp(call_settings, "uac_hangup.xml", DID, tmp_path / "quitter",
                       duration_ms=8000, keys={"caller": "0903333333", "rtp_port": "4004"})
    assert quitter.returncode == 0, quitter.stdout
    for proc in (busy, first):
        assert isinstance(proc, subprocess.Popen)
        assert proc.wait(60) == 0

    def quitter_call() -> Call | None:
        rows = [c for c in calls(call_settings) if c.caller == "0903333333"]
        return rows[0] if rows and rows[0].status == "ended" else None

    call = wait_until(quitter_call, 20, "abandoned call not recorded")
    assert call.outcome == "abandoned"
    assert call.abandoned_position == 2 and call.queue_position == 2
    abandon = next(e for e in call.events if e.kind == "abandon")
    assert abandon.data["position"] == 2 and abandon.data["wait_seconds"] >= 1
