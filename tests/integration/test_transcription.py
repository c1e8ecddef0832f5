"""Live transcription on a real call: SIPp caller and operator phone speak (espeak-ng
speech in pcap files), Asterisk 22 snoops both directions to the real transcriber over
ExternalMedia; segments reach Redis and the console's keys; nothing is left after the
hang-up; the stored transcript is masked. And: no transcriber or no model → the call
goes on and the console is told transcription is unavailable."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select

from common.bus import read_events
from common.commands import AgentLogin
from common.console_events import transcript_key
from common.db import make_engine, session_factory
from common.events import decode
from common.keys import Keys
from common.masking import mask_personal_data
from common.models.transcripts import TranscriptSegment
from common.settings import Settings
from common.transcription import segments_key, state_key
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import (
    SIPP_DIR,
    Phones,
    Proc,
    Processes,
    ari_app_heartbeat,
    hang_up,
    run_sipp,
    send,
    start_phones,
)
from tests.integration.test_queue import calls, members
from tests.transcription import conftest as tx_fixtures
from tests.transcription.conftest import transcription_settings
from tests.transcription.speech import CALLER_LINES, OPERATOR_LINES, conversation, write_pcap
from tests.transcription.test_transcriber import segments
from tests.transcription.test_transcriber import start as start_transcriber

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

test_model = tx_fixtures.test_model  # the fixture of tests/transcription (model copy)

DID = "0312345678"


def ari(settings: Settings, path: str) -> list:  # type: ignore[type-arg]
    ast = settings.asterisk
    resp = httpx.get(f"{ast.ari_url}{path}", auth=(ast.ari_user, ast.ari_password),
                     timeout=5)
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


def media_channels(settings: Settings) -> list[str]:
    return [c["name"] for c in ari(settings, "/channels")
            if c["name"].startswith(("Snoop/", "UnicastRTP/"))]


def assert_released(settings: Settings, client: redis.Redis, keys: Keys) -> None:
    """Nothing of any call's transcription is left: no snoop or ExternalMedia channel,
    no bridge, no stream registration."""
    wait_until(lambda: not media_channels(settings), 20,
               f"snoop/ExternalMedia channels left: {media_channels(settings)}")
    wait_until(lambda: not ari(settings, "/bridges"), 20,
               f"bridges left: {ari(settings, '/bridges')}")
    wait_until(lambda: not client.hlen(f"{keys.prefix}:transcription:streams"), 10,
               "stream registrations left")


@pytest.fixture
def tx_settings(call_settings: Settings, test_model: Path) -> Settings:
    return transcription_settings(call_settings, test_model)


def start_ari_app(processes: Processes, settings: Settings) -> Proc:
    proc = processes.start("ari_app", "ari_app.main", settings)

    def ready() -> bool:
        assert proc.alive(), f"ari_app exited:\n{proc.output()}"
        beat = ari_app_heartbeat(settings)
        return beat.get("ari") == "up" and beat.get("ami") == "up"

    wait_until(ready, 20, "ari_app did not connect to ARI and AMI")
    return proc


def scenarios(tmp_path: Path) -> tuple[str, str]:
    """A caller and an operator phone that speak (SIPp scenarios naming their pcaps)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    caller_pcap = write_pcap(conversation(CALLER_LINES * 3, 0.5, 1.5), tmp_path / "caller.pcap")
    operator_pcap = write_pcap(conversation(OPERATOR_LINES * 2, 1.0, 2.5),
                               tmp_path / "operator.pcap")
    uac = (SIPP_DIR / "uac_hangup_on_cue.xml").read_text()
    uac = uac.replace("m=audio [rtp_port]", "m=audio [media_port]").replace(
        '  <recv request="INFO"',
        f'  <nop><action><exec play_pcap_audio="{caller_pcap}"/></action></nop>\n'
        '  <recv request="INFO"')
    uas = (SIPP_DIR / "uas_phone.xml").read_text().replace(
        "/usr/share/sip-tester/g711a.pcap", str(operator_pcap))
    (tmp_path / "uac_speech.xml").write_text(uac)
    (tmp_path / "uas_speech.xml").write_text(uas)
    return str(tmp_path / "uac_speech.xml"), str(tmp_path / "uas_speech.xml")


@pytest.fixture
def speaking(tmp_path: Path) -> tuple[str, str]:
    return scenarios(tmp_path / "sipp")


@pytest.fixture
def operator(tx_settings: Settings, tmp_path: Path,
             speaking: tuple[str, str]) -> Iterator[Phones]:
    started = start_phones(tx_settings, ["op01"], tmp_path / "phones", scenario=speaking[1])
    yield started
    started.stop()


def login(settings: Settings) -> None:
    assert send(settings, AgentLogin(tenant="city", endpoint="op01",
                                     queues=["citizens"]))["ok"]
    wait_until(lambda: members(settings).get("op01", {}).get("status") == "not_in_use", 30,
               "op01 not ready")


def place_call(settings: Settings, scenario: str, tmp_path: Path,
               duration_ms: int) -> tuple[subprocess.Popen[str], str]:
    caller = run_sipp(settings, scenario, DID, tmp_path / "caller", duration_ms=duration_ms,
                      background=True, keys={"caller": "0901234567"})
    assert isinstance(caller, subprocess.Popen)
    call = wait_until(lambda: next((c for c in calls(settings) if c.agent == "op01"), None),
                      30, "the call did not reach the operator")
    return caller, call.id


def transcript_events(settings: Settings, call_id: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        out = []
        for _sid, body in read_events(client, Keys(settings.redis.prefix)):
            event = decode(body)
            if event.type == "transcript.updated" and \
                    event.call_id == call_id:  # type: ignore[attr-defined]
                out.append(event.payload())
        return out
    finally:
        client.close()


def test_answered_call_is_transcribed_both_ways_and_cleaned_up(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator: Phones, speaking: tuple[str, str], tmp_path: Path) -> None:
    start_transcriber(processes, tx_settings)
    app = start_ari_app(processes, tx_settings)
    login(tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 30000)
    try:
        # one snoop and one ExternalMedia channel per direction while the call lasts
        wait_until(lambda: len(media_channels(tx_settings)) == 4, 15,
                   f"snoop/ExternalMedia channels: {media_channels(tx_settings)}\n"
                   f"{app.output()[-3000:]}")

        def both_speakers() -> bool:
            got = segments(client, keys, call_id)
            return {s["speaker"] for s in got if s["kind"] == "final"} >= \
                {"caller", "operator"}

        wait_until(both_speakers, 40, f"no finals of both speakers: "
                   f"{segments(client, keys, call_id)}")
        got = segments(client, keys, call_id)
        for speaker in ("caller", "operator"):
            mine = [s for s in got if s["speaker"] == speaker]
            kinds = [s["kind"] for s in mine]
            assert "partial" in kinds and kinds.index("partial") < kinds.index("final")
            finals = [float(s["start"]) for s in mine if s["kind"] == "final"]
            assert finals == sorted(finals)
            assert all(0 <= float(s["start"]) <= float(s["end"]) < 60 for s in mine)
        # what the case card shows
        lines = [json.loads(x) for x in client.lrange(transcript_key(keys, call_id), 0, -1)]
        assert {ln["speaker"] for ln in lines} >= {"caller", "operator"}
        assert client.get(f"{keys.prefix}:call:{call_id}:transcription") == b"live"
        hang_up(caller)  # the checks are done: the citizen puts the phone down
        assert caller.wait(90) == 0
    finally:
        if caller.poll() is None:
            caller.kill()
    # the consoles were told (state live, then finals and partials), without text
    whats = [e["what"] for e in transcript_events(tx_settings, call_id)]
    assert whats[0] == "state" and "final" in whats and "partial" in whats
    # nothing left after the hang-up
    assert_released(tx_settings, client, keys)
    wait_until(lambda: not client.exists(transcript_key(keys, call_id)), 15,
               "live transcript kept after the hang-up")
    states = [e["state"] for e in transcript_events(tx_settings, call_id)
              if e["what"] == "state"]
    assert states == ["live", "ended"]
    # the stored transcript is masked
    engine = make_engine(tx_settings.database_url)
    try:
        with session_factory(engine)() as session:
            rows = list(session.scalars(select(TranscriptSegment).where(
                TranscriptSegment.call_id == call_id)))
        assert {r.speaker for r in rows} >= {"caller", "operator"}
        assert all(mask_personal_data(r.text) == r.text for r in rows)
    finally:
        engine.dispose()
        client.close()


@pytest.mark.parametrize("transcriber", ["not running", "no model"])
def test_call_goes_on_without_transcription(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator: Phones, speaking: tuple[str, str], tmp_path: Path, transcriber: str) -> None:
    if transcriber == "no model":
        start_transcriber(processes, transcription_settings(tx_settings, ""),
                          state="unavailable")
    start_ari_app(processes, tx_settings)
    login(tx_settings)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 6000)
    try:
        keys = Keys(tx_settings.redis.prefix)
        client = redis.Redis.from_url(tx_settings.redis.url)
        state = wait_until(lambda: client.get(f"{keys.prefix}:call:{call_id}:transcription"),
                           10, "no transcription state for the call")
        client.close()
        assert state.decode().startswith("unavailable: ")
        expected = "not running" if transcriber == "not running" else "no speech model"
        assert expected in state.decode()
        assert not media_channels(tx_settings)
        hang_up(caller)
        assert caller.wait(60) == 0  # the call itself went on normally
    finally:
        if caller.poll() is None:
            caller.kill()
    ended = wait_until(lambda: [c for c in calls(tx_settings) if c.id == call_id
                                and c.status == "ended"], 15, "call not ended")
    assert ended[0].agent == "op01"
    states = [e["state"] for e in transcript_events(tx_settings, call_id)]
    assert states[0] == "unavailable"


def test_call_answered_without_a_transcriber_is_transcribed_once_one_starts(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator: Phones, speaking: tuple[str, str], tmp_path: Path) -> None:
    app = start_ari_app(processes, tx_settings)
    login(tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 45000)
    try:
        state = wait_until(lambda: client.get(state_key(keys, call_id)), 10,
                           "no transcription state for the call")
        assert state.startswith(b"unavailable: "), state
        assert not media_channels(tx_settings)
        start_transcriber(processes, tx_settings)
        wait_until(lambda: client.get(state_key(keys, call_id)) == b"live", 20,
                   f"the call was not picked up:\n{app.output()[-3000:]}")
        assert len(media_channels(tx_settings)) == 4, media_channels(tx_settings)
        wait_until(lambda: {s["speaker"] for s in segments(client, keys, call_id)
                            if s["kind"] == "final"} >= {"caller", "operator"}, 40,
                   f"no finals of both speakers: {segments(client, keys, call_id)}")
        hang_up(caller)  # the checks are done: the citizen puts the phone down
        assert caller.wait(90) == 0
    finally:
        if caller.poll() is None:
            caller.kill()
    assert_released(tx_settings, client, keys)
    states = [e["state"] for e in transcript_events(tx_settings, call_id)
              if e["what"] == "state"]
    assert states == ["unavailable", "live", "ended"], states
    client.close()


def test_kiosk_session_is_transcribed_and_leaves_nothing_behind(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator: Phones, tmp_path: Path) -> None:
    """A kiosk session's leg as kiosk_bridge asks for it (ExternalMedia to the bridge's
    socket, here a plain UDP socket, and a Local channel into the kiosk queue) is an
    answered call like any other: both directions are snooped while it lasts, and its
    end releases every transcription channel, bridge and registration."""
    import socket
    import uuid

    from common.kiosk import KioskEnd, KioskStart

    start_transcriber(processes, tx_settings)
    app = start_ari_app(processes, tx_settings)
    assert send(tx_settings, AgentLogin(tenant="city", endpoint="op01",
                                        queues=["kiosk"]))["ok"]
    wait_until(lambda: members(tx_settings, "kiosk").get("op01", {}).get("status")
               == "not_in_use", 30, "op01 not ready for kiosk calls")
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    session_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bridge_socket:
        bridge_socket.bind(("127.0.0.1", 0))
        started = send(tx_settings, KioskStart(
            session_id=session_id, tenant="city", kiosk="k01", location="中央公民館",
            rtp_host="127.0.0.1", rtp_port=bridge_socket.getsockname()[1]))
        assert started["ok"], started
        wait_until(lambda: any(c.id == session_id and c.agent == "op01"
                               for c in calls(tx_settings)), 30,
                   f"the kiosk call did not reach the operator:\n{app.output()[-3000:]}")
        # the kiosk's own ExternalMedia leg plus a snoop and an ExternalMedia channel per
        # direction
        wait_until(lambda: len(media_channels(tx_settings)) == 5, 15,
                   f"media channels: {media_channels(tx_settings)}\n{app.output()[-3000:]}")
        wait_until(lambda: client.get(state_key(keys, session_id)) == b"live", 10,
                   "transcription of the kiosk call not live")
        # the operator's phone speaks: what the kiosk user hears is transcribed
        wait_until(lambda: any(s["speaker"] == "operator" and s["kind"] == "final"
                               for s in segments(client, keys, session_id)), 40,
                   f"no final of the operator: {segments(client, keys, session_id)}")
        ended = send(tx_settings, KioskEnd(session_id=session_id, tenant="city",
                                           reason="kiosk_hangup"))
        assert ended["ok"], ended
    assert_released(tx_settings, client, keys)
    wait_until(lambda: client.get(state_key(keys, session_id)) == b"ended", 10,
               "transcription state not ended")
    client.close()


def test_queued_callback_is_transcribed_on_the_original_call(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator: Phones, tmp_path: Path) -> None:
    """The caller books a callback while op01 is busy; when the callback reaches op01 and
    the citizen answers, the citizen's channel is snooped both ways and the transcript
    goes on the original call (the one the operator's case card shows)."""
    from tests.integration.test_callback import callbacks, start_citizen

    start_transcriber(processes, tx_settings)
    app = start_ari_app(processes, tx_settings)
    login(tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    citizen = start_citizen(tx_settings, tmp_path / "citizen", 20000)
    try:
        # op01 talks well past the asker's key press: the asker hears the greeting before
        # the answer (early media) and presses the key 8 s after it
        busy = run_sipp(tx_settings, "uac_hangup.xml", DID, tmp_path / "busy",
                        duration_ms=25000, background=True,
                        keys={"caller": "0901000001", "rtp_port": "4000"})
        assert isinstance(busy, subprocess.Popen)
        wait_until(lambda: members(tx_settings)["op01"]["in_call"], 15, "op01 not busy")
        asker = run_sipp(tx_settings, "uac_callback.xml", DID, tmp_path / "asker",
                         duration_ms=8000, keys={"caller": "0901000003", "rtp_port": "4002"},
                         timeout=60)
        assert asker.returncode == 0, asker.stdout  # type: ignore[union-attr]
        original = next(c for c in calls(tx_settings) if c.caller == "0901000003")
        wait_until(lambda: client.get(state_key(keys, original.id)) == b"live", 40,
                   f"the callback was not transcribed: {callbacks(tx_settings)}\n"
                   f"{app.output()[-3000:]}")
        streams = [json.loads(v) for v in client.hvals(f"{keys.prefix}:transcription:streams")]
        assert sorted(s["speaker"] for s in streams if s["call_id"] == original.id) == \
            ["caller", "operator"], streams
        # op01's phone speaks: what the citizen hears is on the original call's transcript
        wait_until(lambda: any(s["speaker"] == "operator" and s["kind"] == "final"
                               for s in segments(client, keys, original.id)), 40,
                   f"no final of the operator: {segments(client, keys, original.id)}")
        assert citizen.wait(60) == 0
        assert busy.wait(30) == 0
    finally:
        if citizen.poll() is None:
            citizen.kill()
            citizen.wait(5)
    assert callbacks(tx_settings)[0].status == "completed"
    assert_released(tx_settings, client, keys)
    wait_until(lambda: client.get(state_key(keys, original.id)) == b"ended", 10,
               "transcription state not ended")
    client.close()


def test_live_transcript_goes_at_hangup_even_with_the_transcriber_down(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator: Phones, speaking: tuple[str, str], tmp_path: Path) -> None:
    """The transcriber dies mid-call, so nobody hears ari_app's stop: the live
    transcript still goes right after the hang-up (ari_app sets it to expire)."""
    import signal

    transcriber = start_transcriber(processes, tx_settings)
    start_ari_app(processes, tx_settings)
    login(tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 16000)
    live = (segments_key(keys, call_id), transcript_key(keys, call_id))
    try:
        wait_until(lambda: client.exists(transcript_key(keys, call_id)), 40,
                   "no final segment before the transcriber was stopped")
        transcriber.stop(signal.SIGKILL)
        assert client.exists(*live) == 2
        assert client.ttl(transcript_key(keys, call_id)) > 3600  # kept while the call lasts
        hang_up(caller)  # the checks are done: the citizen puts the phone down
        assert caller.wait(90) == 0
    finally:
        if caller.poll() is None:
            caller.kill()
        wait_until(lambda: client.get(state_key(keys, call_id)) == b"ended", 20,
                   "transcription state not ended")
    # at most HANGUP_GRACE seconds after the hang-up
    assert 0 < client.ttl(transcript_key(keys, call_id)) <= 10
    wait_until(lambda: not client.exists(*live), 15, "live transcript kept after the hang-up")
    wait_until(lambda: not media_channels(tx_settings), 20,
               f"snoop channels left: {media_channels(tx_settings)}")
    client.close()


@pytest.fixture
def operator_and_staff(tx_settings: Settings, tmp_path: Path,
                       speaking: tuple[str, str]) -> Iterator[Phones]:
    started = start_phones(tx_settings, ["op01", "staff2001"], tmp_path / "phones",
                           scenario=speaking[1])
    yield started
    started.stop()


def test_staff_leg_after_a_blind_transfer_is_transcribed(
        asterisk: AsteriskInstance, processes: Processes, tx_settings: Settings,
        operator_and_staff: Phones, speaking: tuple[str, str], tmp_path: Path) -> None:
    """The snoops hang on the caller's channel: after a blind transfer the caller's
    side goes on as ``caller`` and what the caller hears is labelled ``staff``; nothing
    is left after the hang-up."""
    from common.commands import CallTransfer
    from tests.integration.test_transfer import transfer_results

    start_transcriber(processes, tx_settings)
    app = start_ari_app(processes, tx_settings)
    login(tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    caller, call_id = place_call(tx_settings, speaking[0], tmp_path, 36000)
    try:
        wait_until(lambda: len(media_channels(tx_settings)) == 4, 15,
                   f"snoop/ExternalMedia channels: {media_channels(tx_settings)}")
        wait_until(lambda: any(s["speaker"] == "operator" and s["kind"] == "final"
                               for s in segments(client, keys, call_id)), 40,
                   "no final of the operator before the transfer")
        result = send(tx_settings, CallTransfer(tenant="city", call_id=call_id, kind="blind",
                                                target="2001", note="戸籍の件"))
        assert result["ok"], result
        wait_until(lambda: "answered" in transfer_results(tx_settings, call_id), 20,
                   f"staff never connected: {transfer_results(tx_settings, call_id)}\n"
                   f"{app.output()[-3000:]}")
        answered_at = max(float(s["end"]) for s in segments(client, keys, call_id))
        # the same two snoops go on (no new ones), the staff member's words are labelled
        assert len(media_channels(tx_settings)) == 4, media_channels(tx_settings)
        staff = wait_until(lambda: [s for s in segments(client, keys, call_id)
                                    if s["speaker"] == "staff" and s["kind"] == "final"], 40,
                           f"no final of the staff member: {segments(client, keys, call_id)}")
        assert float(staff[0]["start"]) >= answered_at - 5.0, (staff[0], answered_at)
        later = [s for s in segments(client, keys, call_id)
                 if s["kind"] == "final" and float(s["start"]) > float(staff[0]["end"])]
        assert "operator" not in {s["speaker"] for s in later}, later
        hang_up(caller)  # the checks are done: the citizen puts the phone down
        assert caller.wait(90) == 0
    finally:
        if caller.poll() is None:
            caller.kill()
    assert_released(tx_settings, client, keys)
    wait_until(lambda: not client.exists(transcript_key(keys, call_id)), 15,
               "live transcript kept after the hang-up")
    client.close()
    # the stored transcript has the staff member's words under their label
    engine = make_engine(tx_settings.database_url)
    try:
        with session_factory(engine)() as session:
            speakers = set(session.scalars(select(TranscriptSegment.speaker).where(
                TranscriptSegment.call_id == call_id)))
        assert speakers >= {"caller", "operator", "staff"}, speakers
    finally:
        engine.dispose()
