"""A test-side RTP listener: receives what a caller hears and measures it."""

from __future__ import annotations

import math
import socket
import struct
import threading
from dataclasses import dataclass, field


def _ulaw_to_linear(byte: int) -> int:
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    sample = ((mantissa << 3) + 0x84) << exponent
    sample -= 0x84
    return -sample if sign else sample


def _alaw_to_linear(byte: int) -> int:
    byte ^= 0x55
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    if exponent == 0:
        sample = (mantissa << 4) + 8
    else:
        sample = ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


ULAW = [_ulaw_to_linear(b) for b in range(256)]
ALAW = [_alaw_to_linear(b) for b in range(256)]


@dataclass
class RtpListener:
    host: str = "127.0.0.2"
    port: int = 0
    packets: int = 0
    payload_types: set[int] = field(default_factory=set)
    samples: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, self.port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            first, second = data[0], data[1]
            csrc = first & 0x0F
            pt = second & 0x7F
            offset = 12 + 4 * csrc
            if first & 0x10 and len(data) >= offset + 4:  # header extension
                (words,) = struct.unpack("!H", data[offset + 2:offset + 4])
                offset += 4 + 4 * words
            payload = data[offset:]
            self.packets += 1
            self.payload_types.add(pt)
            table = ALAW if pt == 8 else ULAW if pt == 0 else None
            if table is not None:
                self.samples.extend(table[b] for b in payload)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def rms_dbfs(self) -> float:
        """Level of what was heard (dBFS); -inf for silence."""
        if not self.samples:
            return float("-inf")
        mean = sum(s * s for s in self.samples) / len(self.samples)
        return 10 * math.log10(mean / (32768.0**2)) if mean > 0 else float("-inf")

    def voiced_seconds(self, threshold_dbfs: float = -45.0) -> float:
        """Seconds of 20 ms frames louder than ``threshold_dbfs``."""
        frame = 160
        voiced = 0
        for i in range(0, len(self.samples) - frame + 1, frame):
            chunk = self.samples[i:i + frame]
            mean = sum(s * s for s in chunk) / frame
            if mean > 0 and 10 * math.log10(mean / (32768.0**2)) > threshold_dbfs:
                voiced += 1
        return voiced * 0.02
