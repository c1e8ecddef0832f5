"""The transcriber as a real process: RTP in (as Asterisk's ExternalMedia sends it),
segments out on Redis and in SQL; restart mid-call; a missing model."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy import select

from common.bus import read_events
from common.console_events import transcript_key
from common.db import make_engine, session_factory
from common.events import decode
from common.health import collect, read_heartbeats
from common.keys import Keys
from common.masking import mask_personal_data
from common.models.transcripts import TranscriptSegment
from common.settings import Settings
from common.transcription import (
    COMPONENT,
    StreamInfo,
    control_key,
    segments_key,
    streams_key,
)
from tests.conftest import wait_until
from tests.integration.conftest import Proc, Processes
from tests.transcription.conftest import transcription_settings
from tests.transcription.speech import CALLER_LINES, OPERATOR_LINES, conversation
from transcriber import rtp

# The transcriber process as a whole (RTP in, segments out, the masked rows stored): one
# engine; the stored segments' SQL runs on both in test_retention.py, and the same flow
# on a real call runs on SQLite in tests/integration/test_transcription.py.
pytestmark = pytest.mark.engine("postgresql")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def heartbeat(settings: Settings) -> dict[str, str]:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        beats = read_heartbeats(client, Keys(settings.redis.prefix), COMPONENT,
                                settings.ari.heartbeat_interval)
        return beats.latest() if beats.live else {}
    finally:
        client.close()


def start(procs: Processes, settings: Settings, state: str = "up") -> Proc:
    proc = procs.start("transcriber", "transcriber.main", settings)

    def ready() -> bool:
        assert proc.alive(), f"transcriber exited:\n{proc.output()}"
        return heartbeat(settings).get("state") == state

    wait_until(ready, 60, f"transcriber did not report {state}")
    return proc


class Sender:
    """One direction of a call, sent like a snoop's ExternalMedia channel does."""

    def __init__(self, settings: Settings, speaker: str, samples: np.ndarray,
                 call_id: str, started_at: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.source = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.dest = ("127.0.0.1", settings.transcription.rtp_port)
        self.payload = samples.astype(">i2").tobytes()
        self.pos = 0
        self.seq = 0
        self.info = StreamInfo(call_id=call_id, tenant="city-a", speaker=speaker,
                               started_at=started_at)

    def register(self, client: redis.Redis, keys: Keys) -> None:
        client.hset(streams_key(keys), self.source, self.info.encode())

    def send_frame(self) -> bool:
        if self.pos >= len(self.payload):
            return False
        chunk = self.payload[self.pos:self.pos + 640]
        self.sock.sendto(rtp.build(chunk, self.seq, self.seq * 320, 0x1000), self.dest)
        self.pos += 640
        self.seq += 1
        return True

    def close(self) -> None:
        self.sock.close()


def play(senders: list[Sender], seconds: float | None = None, speed: float = 2.0) -> None:
    """Send 20 ms frames from every sender, ``speed`` times faster than real time."""
    frames = int(seconds / 0.02) if seconds is not None else 10**9
    t0 = time.monotonic()
    for n in range(frames):
        alive = [s.send_frame() for s in senders]
        if not any(alive):
            return
        delay = t0 + (n + 1) * 0.02 / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def segments(client: redis.Redis, keys: Keys, call_id: str) -> list[dict[str, str]]:
    rows = client.xrange(segments_key(keys, call_id))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in rows]


def test_partials_and_finals_for_both_speakers_in_order_stored_masked(
        procs: Processes, tx_settings: Settings) -> None:
    proc = start(procs, tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    call_id = "call-tx-1"
    now = time.time()
    caller = Sender(tx_settings, "caller", conversation(CALLER_LINES, 1.0, 2.0), call_id, now)
    operator = Sender(tx_settings, "operator", conversation(OPERATOR_LINES, 4.0, 2.0),
                      call_id, now)
    for s in (caller, operator):
        s.register(client, keys)
    play([caller, operator])

    def finals_of_both() -> bool:
        got = segments(client, keys, call_id)
        return {s["speaker"] for s in got if s["kind"] == "final"} == {"caller", "operator"}

    wait_until(finals_of_both, 60, "no final segments for both speakers")
    for s in (caller, operator):
        client.hdel(streams_key(keys), s.source)
        client.publish(control_key(keys), json.dumps({"op": "stop", "source": s.source}))
    # the open utterances are finished after the stop: the transcriber logs each stream's
    # last words out ("stream ... done")
    wait_until(lambda: all(f"{call_id} {s.info.speaker}: stream {s.source} done" in proc.output()
                           for s in (caller, operator)), 15,
               "the streams' last words were not finished after the stop")
    got = segments(client, keys, call_id) or []
    for speaker, lead in (("caller", 1.0), ("operator", 4.0)):
        mine = [s for s in got if s["speaker"] == speaker]
        kinds = [s["kind"] for s in mine]
        assert "partial" in kinds and "final" in kinds, (speaker, kinds)
        assert kinds.index("partial") < kinds.index("final"), kinds
        finals = [s for s in mine if s["kind"] == "final"]
        starts = [float(s["start"]) for s in finals]
        assert starts == sorted(starts), starts
        for s in mine:
            assert float(s["start"]) <= float(s["end"]), s
            assert 0.0 <= float(s["confidence"]) <= 1.0
        # times are audio time from the start of the call's transcription
        assert lead - 0.6 <= starts[0] <= lead + 1.0, (speaker, starts)
        assert float(finals[-1]["end"]) < 30
    # the case card's list holds the finals, in order
    lines = [json.loads(x) for x in client.lrange(transcript_key(keys, call_id), 0, -1)]
    assert [ln["text"] for ln in lines] == [s["text"] for s in got if s["kind"] == "final"] \
        or lines == []  # the list may already be cleared after the stop
    events = [decode(body) for _sid, body in read_events(client, keys)]
    updates = [e for e in events if e.type == "transcript.updated"]
    assert {e.what for e in updates} >= {"partial", "final"}  # type: ignore[attr-defined]
    assert all(e.call_id == call_id for e in updates)  # type: ignore[attr-defined]
    # live transcript gone after the streams stopped (live_keep_seconds = 0)
    wait_until(lambda: not client.exists(segments_key(keys, call_id),
                                         transcript_key(keys, call_id)),
               15, "live transcript not deleted after the call")
    # the masked transcript is in SQL
    engine = make_engine(tx_settings.database_url)
    try:
        def stored() -> list[TranscriptSegment]:
            with session_factory(engine)() as session:
                return list(session.scalars(select(TranscriptSegment).where(
                    TranscriptSegment.call_id == call_id).order_by(TranscriptSegment.id)))

        rows = wait_until(stored, 15, "no transcript rows in the database")
        assert {r.speaker for r in rows} == {"caller", "operator"}
        for r in rows:
            assert r.text and mask_personal_data(r.text) == r.text
            assert r.tenant_id == "city-a"
    finally:
        engine.dispose()
        caller.close()
        operator.close()
        client.close()


def test_restart_mid_call_resumes(procs: Processes, tx_settings: Settings) -> None:
    proc = start(procs, tx_settings)
    keys = Keys(tx_settings.redis.prefix)
    client = redis.Redis.from_url(tx_settings.redis.url)
    call_id = "call-tx-2"
    audio = conversation(CALLER_LINES + CALLER_LINES, 0.5, 1.5)
    caller = Sender(tx_settings, "caller", audio, call_id, time.time())
    caller.register(client, keys)
    try:
        play([caller], seconds=7.0)
        before = wait_until(lambda: segments(client, keys, call_id), 30, "no segments")
        proc.stop(signal.SIGKILL)
        cut = caller.pos / 2 / 16000  # audio seconds sent before the crash
        start(procs, tx_settings)  # same port, same Redis: picks the stream up again
        play([caller])

        def after() -> list[dict[str, str]]:
            return [s for s in segments(client, keys, call_id)
                    if s["kind"] == "final" and float(s["start"]) > cut]

        resumed = wait_until(after, 60, "no segments after the restart")
        assert len(before) >= 1
        assert all(float(s["end"]) <= len(audio) / 16000 + 0.1 for s in resumed)
    finally:
        caller.close()
        client.close()


@pytest.mark.parametrize("model_path, words, state, health", [
    ("", "no speech model configured", "not_configured",
     "not configured: transcription.model_path is not set. To turn it on:"),
    ("/nonexistent/vosk-model", "does not exist", "down",
     "speech model missing: /nonexistent/vosk-model does not exist."),
    ("WRONG", "is not a Vosk model folder", "down",
     "speech model unusable: {tmp}/wrong is not a Vosk"),
])
def test_missing_or_wrong_model_is_reported_not_fatal(procs: Processes, settings: Settings,
                                                      tmp_path: Path, model_path: str,
                                                      words: str, state: str,
                                                      health: str) -> None:
    if model_path == "WRONG":
        (tmp_path / "wrong" / "conf").mkdir(parents=True)
        (tmp_path / "wrong" / "conf" / "mfcc.conf").write_text("")
        model_path = str(tmp_path / "wrong")
    cfg = transcription_settings(settings, model_path)
    proc = start(procs, cfg, state="unavailable")
    beat = heartbeat(cfg)
    assert words in beat["detail"]
    assert "transcription.model_path" in beat["detail"]
    assert "am/final.mdl" in beat["detail"]
    # the health page (common.health) names the problem and the fix
    client = redis.Redis.from_url(cfg.redis.url)
    engine = make_engine(cfg.database_url)
    try:
        [tx] = [c for c in collect(client, Keys(cfg.redis.prefix), engine, cfg)
                if c.component == COMPONENT]
    finally:
        client.close()
        engine.dispose()
    # no model set: an optional part left off, not a failure; a wrong one is a failure
    assert tx.state == state and tx.ok == (state != "down")
    assert tx.detail.startswith(health.format(tmp=tmp_path)), tx.detail
    assert "set transcription.model_path to an unpacked Vosk model folder" in tx.detail
    time.sleep(1.0)  # a window in which nothing may happen: no event marks its end
    assert proc.alive()
    assert proc.output().count("transcription unavailable") == 1
