"""Recognition: one Vosk recognizer per audio stream, worker threads, one shared model.

``Engine.push`` runs on the event loop for every RTP packet: it measures the frame's
level, and only frames the voice-activity detector keeps are converted to the
recognizer's byte order and appended to the stream's pending buffer (silence costs a
level measurement and nothing else). A stream with pending audio is handed to the
thread pool; a worker takes the whole buffer (swapped for an empty one, not copied),
feeds it to the stream's recognizer in one call and reports partial and final results
through ``on_segment`` (called in the worker thread). A stream is never worked on by two
threads at once; many streams share the few workers in turn (after each piece of audio a
stream goes to the back of the queue), and the model is loaded once. The recognizer gets
at least ``BATCH_SECONDS`` of speech per call and is asked for a partial result at most
every ``partial_interval`` seconds (that walks the whole utterance so far).

Times are seconds since the call's transcription started (``StreamInfo.started_at``),
taken from the RTP timestamps, so they stay right across a transcriber restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import vosk

from common.transcription import SAMPLE_RATE, StreamInfo
from transcriber.vad import EnergyVad, level_dbfs

logger = logging.getLogger(__name__)

FRAME_SECONDS = 0.02
PREROLL_FRAMES = 10
#: Speech handed to a recognizer in one call, at least (the end of an utterance goes at once).
BATCH_SECONDS = 0.1
BATCH_BYTES = int(BATCH_SECONDS * SAMPLE_RATE) * 2


@dataclass
class Chunk:
    """Audio waiting for the recognizer: one utterance (or the part of it so far)."""

    audio: bytearray
    start: float
    end: float
    recv: float
    flush: bool = False  # the utterance ended after this audio


@dataclass(frozen=True)
class Segment:
    kind: str  # partial | final
    text: str  # as recognized (the service masks it before it leaves the process)
    start: float
    end: float
    confidence: float  # mean word confidence of a final; 0.0 for partials
    recv_at: float  # epoch when the newest audio in it arrived


class Stream:
    """One direction of one call."""

    def __init__(self, key: str, info: StreamInfo, vad: EnergyVad) -> None:
        self.key = key
        self.info = info
        self.vad = vad
        self.lock = threading.Lock()
        # guarded by lock
        self.pending: list[Chunk] = []
        self.running = False
        self.closed = False
        # event loop only
        self.first_ts: int | None = None
        self.offset = -1.0  # set by the first packet
        self.last_packet = time.monotonic()
        self.last_ts = 0
        self.last_t = 0.0  # stream time and arrival of the newest audio
        self.last_recv = 0.0
        self.preroll: deque[tuple[float, np.ndarray]] = deque(maxlen=PREROLL_FRAMES)
        self.packets = 0
        self.voiced_frames = 0
        # worker only
        self.recognizer: Any = None
        self.utt_start: float | None = None
        self.last_partial = ""
        self.last_partial_at = 0.0
        self.partial_checked_at = 0.0
        self.audio_fed = 0.0  # seconds of audio given to the recognizer
        self.busy = 0.0  # seconds the recognizer worked on this stream

    def stream_time(self, timestamp: int, arrival: float) -> float:
        """Seconds since the call's transcription started. The RTP clock gives the
        spacing; the packet that arrived least late relative to it anchors the clock
        (a packet read late, behind a busy moment, only moves the anchor later, so it
        never counts)."""
        if self.first_ts is None:
            self.first_ts = timestamp
        elapsed = ((timestamp - self.first_ts) & 0xFFFFFFFF) / SAMPLE_RATE
        anchor = max(0.0, arrival - self.info.started_at - elapsed)
        if self.offset < 0.0 or anchor < self.offset:
            self.offset = anchor
        return self.offset + elapsed


def _accept(recognizer: Any, buf: bytearray) -> bool:
    """Feed ``buf`` without copying it (Vosk's own wrapper wants ``bytes``)."""
    try:
        res = vosk._c.vosk_recognizer_accept_waveform(
            recognizer._handle, vosk._ffi.from_buffer(buf), len(buf))
    except AttributeError:  # a Vosk without these internals
        return bool(recognizer.AcceptWaveform(bytes(buf)))
    if res < 0:
        raise RuntimeError("Vosk failed to process audio")
    return bool(res)


def _final(raw: str) -> tuple[str, float]:
    data = json.loads(raw)
    words = data.get("result") or []
    conf = sum(float(w.get("conf", 0.0)) for w in words) / len(words) if words else 0.0
    return str(data.get("text", "")).strip(), round(conf, 3)


class Engine:
    def __init__(self, model: Any, on_segment: Callable[[Stream, Segment], None],
                 workers: int = 2, threshold_dbfs: float = -42.0, hangover_ms: int = 800,
                 partial_interval: float = 0.3) -> None:
        self.model = model
        self.on_segment = on_segment
        self.threshold = threshold_dbfs
        self.hangover_frames = max(1, int(hangover_ms / 1000 / FRAME_SECONDS))
        self.partial_interval = partial_interval
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                       thread_name_prefix="recognizer")
        self.busy_seconds = 0.0  # recognizer time, for the real-time factor
        self.audio_seconds = 0.0  # audio fed to recognizers
        self._stats_lock = threading.Lock()

    def new_stream(self, key: str, info: StreamInfo) -> Stream:
        return Stream(key, info, EnergyVad(self.threshold, self.hangover_frames))

    # ------------------------------------------------------------ event loop side

    def push(self, stream: Stream, payload: memoryview, timestamp: int,
             arrival: float) -> None:
        """One RTP payload (big-endian 16-bit samples at 16 kHz)."""
        if stream.closed or len(payload) < 2:
            return
        stream.packets += 1
        stream.last_packet = time.monotonic()
        samples = np.frombuffer(payload, dtype=">i2", count=len(payload) // 2)
        t = stream.stream_time(timestamp, arrival)
        stream.last_t, stream.last_recv = t + samples.size / SAMPLE_RATE, arrival
        feed, started, ended = stream.vad.frame(level_dbfs(samples))
        if not feed:
            stream.preroll.append((t, samples))
            return
        stream.voiced_frames += 1
        with stream.lock:
            if started:
                for pt, frame in stream.preroll:
                    self._append(stream, pt, frame, arrival)
                stream.preroll.clear()
            self._append(stream, t, samples, arrival)
            if ended:
                stream.pending[-1].flush = True
            # the recognizer gets at least BATCH_SECONDS at a time (fewer, larger calls)
            if ended or len(stream.pending) > 1 or \
                    len(stream.pending[0].audio) >= BATCH_BYTES:
                self._schedule(stream)

    @staticmethod
    def _append(stream: Stream, t: float, samples: np.ndarray, arrival: float) -> None:
        end = t + samples.size / SAMPLE_RATE
        if not stream.pending or stream.pending[-1].flush:
            stream.pending.append(Chunk(bytearray(), t, end, arrival))
        chunk = stream.pending[-1]
        # the one conversion (network to recognizer byte order), straight into the buffer
        chunk.audio += samples.astype("<i2").data
        chunk.end = end
        chunk.recv = arrival

    def close(self, stream: Stream) -> None:
        """The stream ended: finish its open utterance, then forget it."""
        with stream.lock:
            if stream.closed:
                return
            stream.closed = True
            if stream.pending:
                stream.pending[-1].flush = True
            else:  # the open utterance ends with the last audio that came
                stream.pending.append(Chunk(bytearray(), stream.last_t, stream.last_t,
                                            stream.last_recv, True))
            self._schedule(stream)

    def _schedule(self, stream: Stream) -> None:  # with stream.lock held
        if not stream.running:
            stream.running = True
            self.pool.submit(self._work, stream)

    # --------------------------------------------------------------- worker side

    def _work(self, stream: Stream) -> None:
        try:
            while True:
                with stream.lock:
                    if not stream.pending:
                        stream.running = False
                        if stream.closed:
                            stream.recognizer = None
                            self._finished(stream)
                        return
                    chunk = stream.pending.pop(0)
                self._recognize(stream, chunk.audio, chunk.start, chunk.end, chunk.recv,
                                chunk.flush)
                with stream.lock:
                    more = bool(stream.pending)
                if more:
                    # to the back of the queue: every stream gets its turn (round robin),
                    # none waits behind one that keeps talking
                    try:
                        self.pool.submit(self._work, stream)
                        return
                    except RuntimeError:  # shutting down: finish the stream here
                        continue
        except Exception:
            logger.exception("%s %s: recognition failed; the stream starts afresh",
                             stream.info.call_id, stream.info.speaker)
            with stream.lock:
                stream.running = False
                stream.recognizer = None

    def _recognize(self, stream: Stream, buf: bytearray, start: float, end: float,
                   recv: float, flush: bool) -> None:
        rec = stream.recognizer
        if rec is None:
            if not buf:
                return
            rec = stream.recognizer = vosk.KaldiRecognizer(self.model, SAMPLE_RATE)
            rec.SetWords(True)
        began = time.perf_counter()
        if buf:
            if stream.utt_start is None:
                stream.utt_start = start
            if _accept(rec, buf):
                text, conf = _final(rec.Result())
                self._emit_final(stream, text, conf, end, recv)
                stream.utt_start = None if flush else end
            elif not flush and time.monotonic() - stream.partial_checked_at >= \
                    self.partial_interval:
                # asked at most every partial_interval: the partial result walks the whole
                # utterance so far
                stream.partial_checked_at = time.monotonic()
                partial = str(json.loads(rec.PartialResult()).get("partial", "")).strip()
                if partial and partial != stream.last_partial:
                    stream.last_partial = partial
                    stream.last_partial_at = stream.partial_checked_at
                    self.on_segment(stream, Segment("partial", partial, stream.utt_start,
                                                    end, 0.0, recv))
        if flush:
            if not buf:
                end = max(end, stream.utt_start or 0.0)
            text, conf = _final(rec.FinalResult())
            self._emit_final(stream, text, conf, end, recv)
            stream.utt_start = None
        busy, fed = time.perf_counter() - began, len(buf) / 2 / SAMPLE_RATE
        stream.busy += busy
        stream.audio_fed += fed
        with self._stats_lock:
            self.busy_seconds += busy
            self.audio_seconds += fed

    @staticmethod
    def _finished(stream: Stream) -> None:
        """The stream's last words are out: what it cost (the benchmark reads this line)."""
        audio = stream.packets * FRAME_SECONDS
        logger.info("%s %s: stream %s done: %.1f s of audio, %.1f s fed to the recognizer, "
                    "%.3f s recognizing (real-time factor %.4f)", stream.info.call_id,
                    stream.info.speaker, stream.key, audio, stream.audio_fed, stream.busy,
                    stream.busy / audio if audio else 0.0)

    def _emit_final(self, stream: Stream, text: str, conf: float, end: float,
                    recv: float) -> None:
        start = stream.utt_start if stream.utt_start is not None else end
        stream.last_partial = ""
        stream.last_partial_at = 0.0
        stream.partial_checked_at = 0.0
        if text:
            self.on_segment(stream, Segment("final", text, start, end, conf, recv))

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)
