"""Speech for the transcription tests: espeak-ng (Debian package, scripts/packages-test.txt)
in Korean, the language of the packaged test model, resampled to 16 kHz mono int16.

espeak-ng's robotic voice is recognized poorly, so the tests check the pipeline's
structure (partials, finals, speakers, order, timing), not the words.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16000
CALLER_LINES = ("안녕하세요 주민등록 등본을 발급받고 싶습니다 어떻게 하면 되나요",
                "구청에 가면 바로 받을 수 있나요 신분증이 필요한가요")
OPERATOR_LINES = ("네 구청 민원실에 오시면 바로 발급해 드립니다",
                  "신분증을 꼭 가지고 오세요 감사합니다")


def say(text: str, voice: str = "ko", speed: int = 140) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz int16 samples."""
    binary = shutil.which("espeak-ng")
    assert binary, "espeak-ng is not installed: run scripts/setup.sh test"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run([binary, "-v", voice, "-s", str(speed), "-w", str(path), text],
                       check=True, capture_output=True, timeout=30)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    pos = np.arange(0, len(raw), rate / RATE)
    return np.interp(pos, np.arange(len(raw)), raw.astype(np.float32)).astype("<i2")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype="<i2")


def conversation(lines: tuple[str, ...], lead: float, gap: float,
                 tail: float = 2.0) -> np.ndarray:
    """Silence ``lead``, then the lines with ``gap`` seconds of silence between them."""
    parts = [silence(lead)]
    for line in lines:
        parts += [say(line), silence(gap)]
    parts.append(silence(tail))
    return np.concatenate(parts)


def to_alaw(samples: np.ndarray) -> bytes:
    """G.711 A-law (what the SIPp phones send)."""
    x = samples.astype(np.int32)
    sign = np.where(x >= 0, 0xD5, 0x55)
    x = np.minimum(np.abs(x), 32635)
    exp = np.zeros_like(x)
    for e in range(7, 0, -1):
        exp = np.where((exp == 0) & (x >= (1 << (e + 7))), e, exp)
    mant = np.where(exp == 0, x >> 4, (x >> (exp + 3)) & 0x0F)
    return ((((exp << 4) | mant) ^ sign) & 0xFF).astype(np.uint8).tobytes()


def write_pcap(samples16k: np.ndarray, path: Path, src_port: int = 6000,
               dst_port: int = 6002) -> Path:
    """A pcap of RTP/PCMA packets (20 ms, 8 kHz) for SIPp's play_pcap_audio."""
    import struct

    pcm8 = samples16k[::2]
    alaw = to_alaw(pcm8)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    t = 1_700_000_000.0
    for seq, i in enumerate(range(0, len(alaw) - 159, 160)):
        rtp = struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, (i) & 0xFFFFFFFF, 0x1234) + \
            alaw[i:i + 160]
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        sec = int(t)
        out += struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)) + frame
        t += 0.02
    path.write_bytes(bytes(out))
    return path
