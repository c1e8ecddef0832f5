"""Media adapters between a kiosk's WebRTC session and Asterisk's ExternalMedia RTP.

- ``RtpLeg``: one UDP socket per session. Asterisk sends the call's audio to it (8 kHz,
  ``slin`` big-endian or ``ulaw``); we send the kiosk's audio back *from the same socket*
  to the address the packets come from (ENVIRONMENT.md: ExternalMedia is symmetric).
- ``AsteriskAudioTrack``: the audio the kiosk hears. A ``MediaStreamTrack`` whose
  ``recv()`` paces itself at 20 ms like aiortc's ``AudioStreamTrack`` and takes frames
  from an adaptive jitter buffer filled by the RTP socket.
- ``KioskAudioPump``: reads the kiosk's audio track (48 kHz Opus decoded by aiortc),
  resamples to 8 kHz mono and sends one 20 ms RTP packet per tick through a second
  adaptive buffer (so bursts from the network do not become bursts toward Asterisk).
- ``ProxyVideoTrack``: the operator's camera toward the kiosk; its source is set when an
  operator's console connects and cleared when it leaves.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

RATE = 8000
PTIME = 0.020
SAMPLES = int(RATE * PTIME)  # 160 samples per 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
PAYLOAD_TYPES = {"slin": 10, "ulaw": 0}


# ---------------------------------------------------------------------- G.711 mu-law

def _ulaw_decode_table() -> np.ndarray[Any, np.dtype[np.int16]]:
    out = np.zeros(256, dtype=np.int16)
    for byte in range(256):
        b = ~byte & 0xFF
        sign = b & 0x80
        exponent = (b >> 4) & 0x07
        mantissa = b & 0x0F
        sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
        out[byte] = -sample if sign else sample
    return out


ULAW_DECODE = _ulaw_decode_table()


def ulaw_encode(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8))


def decode_payload(payload: bytes, fmt: str) -> np.ndarray[Any, np.dtype[np.int16]]:
    if fmt == "ulaw":
        return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
    return np.frombuffer(payload[: len(payload) // 2 * 2], dtype=">i2").astype(np.int16)


def encode_payload(pcm: np.ndarray[Any, np.dtype[np.int16]], fmt: str) -> bytes:
    if fmt == "ulaw":
        return ulaw_encode(pcm)
    return pcm.astype(">i2").tobytes()


# ---------------------------------------------------------------- jitter buffering

class JitterBuffer:
    """Adaptive buffer of 20 ms frames (int16 arrays of 160 samples).

    Playout starts once ``target`` frames are buffered. An underrun (nothing to play)
    raises the target by one frame, up to ``max_frames``; a buffer that stays two frames
    above its target for a second drops its oldest frame and lowers the target again, so
    delay shrinks back when the network calms down.
    """

    def __init__(self, max_frames: int = 5, target: int = 2) -> None:
        self.max_frames = max(1, max_frames)
        self.target = min(target, self.max_frames)
        self.frames: dict[int, np.ndarray[Any, np.dtype[np.int16]]] = {}
        self.next_seq: int | None = None
        self.playing = False
        self.underruns = 0
        self.dropped = 0
        self.late = 0
        self._high_ticks = 0
        self._in_seq = 0

    def put(self, frame: np.ndarray[Any, np.dtype[np.int16]], seq: int | None = None) -> None:
        """Add a frame; ``seq`` (RTP sequence, 16 bit) orders frames that arrive out of
        order; without it frames are taken in arrival order."""
        if seq is None:
            seq = self._in_seq
            self._in_seq = (self._in_seq + 1) & 0xFFFF
        if self.next_seq is not None and ((seq - self.next_seq) & 0xFFFF) > 0x8000:
            if ((self.next_seq - seq) & 0xFFFF) > 50:  # a jump, not a late packet: resync
                self.reset()
            else:
                self.late += 1  # older than what was already played
                return
        self.frames[seq] = frame
        if self.next_seq is None:
            self.next_seq = seq
        if len(self.frames) > self.max_frames * 3:  # far behind: resynchronise
            self._drop_oldest(len(self.frames) - self.max_frames)

    def reset(self) -> None:
        """Forget the sequence (a new stream: SSRC change, sequence jump)."""
        self.frames.clear()
        self.next_seq = None
        self.playing = False

    def _drop_oldest(self, count: int) -> None:
        for _ in range(count):
            if self.next_seq is None or not self.frames:
                return
            oldest = min(self.frames, key=lambda s: (s - self.next_seq) & 0xFFFF)  # type: ignore[operator]
            self.frames.pop(oldest, None)
            self.next_seq = (oldest + 1) & 0xFFFF
            self.dropped += 1

    def get(self) -> np.ndarray[Any, np.dtype[np.int16]] | None:
        """The next frame to play, or None (silence) while filling or on a gap."""
        if not self.playing:
            if len(self.frames) < self.target:
                return None
            self.playing = True
        if not self.frames:
            self.underruns += 1
            self.playing = False
            self.target = min(self.target + 1, self.max_frames)
            return None
        assert self.next_seq is not None  # nosec B101 # type narrowing, not a check
        frame = self.frames.pop(self.next_seq, None)
        if frame is None:  # a gap: skip ahead to the oldest frame we have
            self._jump_to_oldest()
            frame = self.frames.pop(self.next_seq, None)
        self.next_seq = (self.next_seq + 1) & 0xFFFF
        if len(self.frames) > self.target + 2:
            self._high_ticks += 1
            if self._high_ticks >= 50:
                self._drop_oldest(1)
                self.target = max(1, self.target - 1)
                self._high_ticks = 0
        else:
            self._high_ticks = 0
        return frame

    def _jump_to_oldest(self) -> None:
        if self.frames and self.next_seq is not None:
            self.next_seq = min(self.frames, key=lambda s: (s - self.next_seq) & 0xFFFF)  # type: ignore[operator]

    @property
    def depth_ms(self) -> int:
        return len(self.frames) * 20


# -------------------------------------------------------------------------- RTP leg

class RtpLeg(asyncio.DatagramProtocol):
    """The session's RTP socket toward Asterisk (both directions)."""

    def __init__(self, fmt: str, jitter_max_ms: int, label: str = "") -> None:
        self.fmt = fmt
        self.label = label
        self.payload_type = PAYLOAD_TYPES[fmt]
        max_frames = max(1, jitter_max_ms // 20)
        # starts at one frame: Asterisk on the LAN is steady; underruns grow it
        self.inbound = JitterBuffer(max_frames=max_frames, target=1)
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        # RFC 3550 5.1: unpredictable initial values (hinder known-plaintext attacks)
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.packets_in = 0
        self.remote_ssrc: int | None = None
        self.packets_out = 0
        self.on_first_packet: Callable[[], None] | None = None

    @classmethod
    async def open(cls, host: str, fmt: str, jitter_max_ms: int, label: str = "") -> RtpLeg:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(fmt, jitter_max_ms, label), local_addr=(host, 0))
        return protocol

    @property
    def local_address(self) -> tuple[str, int]:
        assert self.transport is not None  # nosec B101 # type narrowing, not a check
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        if self.remote is None:
            self.remote = addr  # symmetric RTP: answer where Asterisk sends from
            if self.on_first_packet is not None:
                self.on_first_packet()
        elif addr != self.remote:
            return  # not our ExternalMedia channel
        csrc = data[0] & 0x0F
        offset = 12 + 4 * csrc
        if data[0] & 0x10 and len(data) >= offset + 4:
            (words,) = struct.unpack("!H", data[offset + 2:offset + 4])
            offset += 4 + 4 * words
        (seq,) = struct.unpack("!H", data[2:4])
        (ssrc,) = struct.unpack("!I", data[8:12])
        if ssrc != self.remote_ssrc:  # a new stream from Asterisk (e.g. after a transfer)
            self.remote_ssrc = ssrc
            self.inbound.reset()
        pcm = decode_payload(data[offset:], self.fmt)
        self.packets_in += 1
        # Asterisk sends 20 ms packets; split anything longer into 20 ms frames
        for i in range(0, max(len(pcm), 1), SAMPLES):
            chunk = pcm[i:i + SAMPLES]
            if len(chunk) < SAMPLES:
                chunk = np.pad(chunk, (0, SAMPLES - len(chunk)))
            self.inbound.put(chunk, (seq + i // SAMPLES) & 0xFFFF if i else seq)

    def send(self, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        if self.transport is None or self.remote is None:
            return
        header = struct.pack("!BBHII", 0x80, self.payload_type, self.seq, self.timestamp,
                             self.ssrc)
        self.transport.sendto(header + encode_payload(pcm, self.fmt), self.remote)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(pcm)) & 0xFFFFFFFF
        self.packets_out += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# ------------------------------------------------------------------ kiosk <- Asterisk

class AsteriskAudioTrack(MediaStreamTrack):
    """What the kiosk hears: the call's audio from Asterisk, 20 ms frames at 8 kHz."""

    kind = "audio"

    def __init__(self, leg: RtpLeg) -> None:
        super().__init__()
        self.leg = leg
        self._start: float | None = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += SAMPLES
            wait = self._start + self._timestamp / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        pcm = self.leg.inbound.get()
        if pcm is None:
            pcm = np.zeros(SAMPLES, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._timestamp
        frame.time_base = TIME_BASE
        return frame


# ------------------------------------------------------------------ kiosk -> Asterisk

class KioskAudioPump:
    """Kiosk microphone → 8 kHz mono → paced RTP toward Asterisk."""

    def __init__(self, track: MediaStreamTrack, leg: RtpLeg, jitter_max_ms: int,
                 label: str = "") -> None:
        self.track = track
        self.leg = leg
        self.label = label
        self.buffer = JitterBuffer(max_frames=max(1, jitter_max_ms // 20), target=1)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = np.zeros(0, dtype=np.int16)
        self._tasks: list[asyncio.Task[None]] = []
        self.frames_in = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(), name=f"{self.label}-mic"),
                       loop.create_task(self._pace(), name=f"{self.label}-rtp")]

    async def _read(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            self.frames_in += 1
            for out in self._resampler.resample(frame):  # type: ignore[arg-type]
                pcm = out.to_ndarray().reshape(-1).astype(np.int16)
                self._pending = np.concatenate((self._pending, pcm))
            while len(self._pending) >= SAMPLES:
                self.buffer.put(self._pending[:SAMPLES].copy())
                self._pending = self._pending[SAMPLES:]

    async def _pace(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            wait = start + tick * PTIME - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.2:  # the loop stalled: restart the clock, never burst
                start, tick = time.monotonic(), 0
            pcm = self.buffer.get()
            if pcm is not None:
                self.leg.send(pcm)
            elif self.leg.remote is not None:
                self.leg.send(np.zeros(SAMPLES, dtype=np.int16))  # keep the RTP clock

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --------------------------------------------------------------------- video to kiosk

class ProxyVideoTrack(MediaStreamTrack):
    """The operator's camera toward the kiosk; waits while no console is connected."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._source: MediaStreamTrack | None = None
        self._changed = asyncio.Event()

    def set_source(self, source: MediaStreamTrack | None) -> None:
        self._source = source
        self._changed.set()

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            if source is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                return await source.recv()  # type: ignore[return-value]
            except MediaStreamError:
                if self._source is source:
                    self._source = None
