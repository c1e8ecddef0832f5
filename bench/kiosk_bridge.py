"""Benchmark: the kiosk bridge's added audio latency and its CPU per kiosk session.

    python bench/kiosk_bridge.py [--seconds 20]

Starts what it needs: a private redis-server, kiosk_bridge as its own process (offering
127.0.0.1 as its ICE host candidate, like the tests), and in this process aiortc clients
playing the kiosks plus an RTP echo playing Asterisk's ExternalMedia channel (it answers
every packet at once, from the socket the bridge sends to). Requests reach the bridge
the way web sends them (``kiosk.request`` on Redis); ``cmd.kiosk.start`` is answered the
way ari_app answers it (``kiosk.call`` queued). Asterisk itself is left out on purpose:
the figures are the bridge's own.

- Latency: a kiosk client sends a 20 ms 1 kHz click once a second; the time from handing
  the click frame to its encoder until the echoed click comes out of its decoder is the
  round trip kiosk → bridge → "Asterisk" → bridge → kiosk. The same loop against a plain
  aiortc peer that echoes directly (decode + encode, as any WebRTC far end) is the
  baseline; ``added_latency_ms`` is half the difference of the medians: what the bridge's
  RTP leg, resampling, pacing and jitter buffers add one way. Half the whole round trip
  is reported as ``one_way_upper_bound_ms``.
- CPU: the bridge process's CPU (% of one core, from /proc) while N sessions run: audio
  only (Opus both ways + 8 kHz RTP), and audio plus 640×480 VP8 video from the kiosk
  (decoded once by the bridge for relaying). Per-session figures are the slope between
  the idle bridge and N sessions. The clients' own encoding runs in this process and is
  not counted.

Writes bench/results/kiosk_bridge.json with ``added_latency_ms``,
``cpu_percent_per_audio_session``, ``cpu_percent_per_video_session``,
``sessions_on_one_core`` and ``targets`` (latency < 60 ms; 8 kiosks on one core).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("aiortc")

import aioice.ice  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack  # noqa: E402

from bench._stack import (  # noqa: E402
    _cpu_ticks,
    free_port,
    machine,
    now_iso,
    source_version,
    wait_until,
    write_json,
)
from common.events import decode  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.kiosk import KioskBridgeRequest, KioskCallState, KioskKeys  # noqa: E402
from kiosk_bridge.bridge import short_audio_buffer  # noqa: E402

# loopback only: aioice never offers 127.0.0.1 by itself (ENVIRONMENT.md)
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

RESULTS = ROOT / "bench" / "results" / "kiosk_bridge.json"
LATENCY_TARGET_MS = 60.0
# The bench client stands in for the kiosk's browser, whose receive buffer (NetEq) adapts
# down to a packet or two on a quiet LAN; aiortc's fixed 80 ms would be counted otherwise.
SHORT_CLIENT_BUFFER = True
KIOSKS = 8
PREFIX = "benchkiosk"


class ClickTrack(MediaStreamTrack):
    """8 kHz mono, 20 ms frames, paced; a 1 kHz click every second."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.start: float | None = None
        self.n = 0
        self.sent: list[float] = []

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        else:
            wait = self.start + self.n * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        pcm = np.zeros(160, dtype=np.int16)
        if self.n % 50 == 25:
            pcm = (0.5 * 32767 * np.sin(2 * math.pi * 1000 * np.arange(160) / 8000)).astype(
                np.int16)
            self.sent.append(time.monotonic())
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = self.n * 160
        frame.time_base = __import__("fractions").Fraction(1, 8000)
        self.n += 1
        return frame


class Echo(asyncio.DatagramProtocol):
    """Asterisk's ExternalMedia stand-in: sends one packet to the bridge (so it learns
    where to send), then returns every packet at once."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.packets = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def hello(self, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        header = struct.pack("!BBHII", 0x80, 10, 1, 160, 0x4242)
        self.transport.sendto(header + bytes(320), addr)


class Kiosk:
    def __init__(self, video: bool) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.click = ClickTrack()
        self.pc.addTrack(self.click)
        if video:
            self.pc.addTrack(VideoStreamTrack())  # 640x480, 30 fps
        self.heard: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and SHORT_CLIENT_BUFFER:
                short_audio_buffer(self.pc, track)
            self.tasks.append(asyncio.get_running_loop().create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            while True:
                await track.recv()
        loud = False
        while True:
            frame = await track.recv()
            pcm = frame.to_ndarray().astype(np.float64)  # type: ignore[union-attr]
            level = float(np.sqrt(np.mean(pcm ** 2)))
            if level > 2000 and not loud:
                self.heard.append(time.monotonic())
            loud = level > 2000

    def round_trips_ms(self) -> list[float]:
        out = []
        for sent in self.click.sent:
            later = [h for h in self.heard if sent < h < sent + 0.9]
            if later:
                out.append((later[0] - sent) * 1000)
        return out

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


class Harness:
    def __init__(self, redis_url: str, bridge_pid: int) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.keys = Keys(PREFIX)
        self.kk = KioskKeys(self.keys)
        self.bridge_pid = bridge_pid
        self.kiosks: list[Kiosk] = []
        self.echoes: list[Echo] = []

    async def open(self, video: bool) -> Kiosk:
        loop = asyncio.get_running_loop()
        sid = uuid.uuid4().hex
        self.redis.hset(self.kk.session(sid), mapping={"kiosk": f"b{len(self.kiosks):02d}",
                                                       "tenant": "city", "state": "new"})
        kiosk = Kiosk(video)
        await kiosk.pc.setLocalDescription(await kiosk.pc.createOffer())
        request = KioskBridgeRequest(action="offer", session_id=sid,
                                     sdp=kiosk.pc.localDescription.sdp)
        self.redis.rpush(self.kk.bridge_requests, request.encode())
        item: Any = await loop.run_in_executor(
            None, lambda: self.redis.blpop([self.kk.reply(request.id)], timeout=15))
        if item is None:
            raise RuntimeError("the bridge did not answer")
        reply = decode(item[1])
        if not reply.ok:  # type: ignore[attr-defined]
            raise RuntimeError(f"the bridge refused: {reply.error}")  # type: ignore[attr-defined]
        await kiosk.pc.setRemoteDescription(RTCSessionDescription(
            sdp=reply.sdp, type="answer"))  # type: ignore[attr-defined]
        start = await loop.run_in_executor(None, self._start_command, sid)
        _t, echo = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        echo.hello((start["rtp_host"], int(start["rtp_port"])))
        port = echo.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        state = KioskCallState(session_id=sid, call_id=sid, tenant="city", kiosk="bench",
                               state="queued", asterisk_rtp=f"127.0.0.1:{port}")
        self.redis.publish(self.keys.events_live, state.encode())
        self.kiosks.append(kiosk)
        self.echoes.append(echo)
        return kiosk

    def _start_command(self, sid: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            rows: Any = self.redis.xrange(self.keys.commands)
            for _id, fields in rows:
                data: dict[str, Any] = decode(fields[b"c"]).to_dict()
                if data["type"] == "cmd.kiosk.start" and data["data"]["session_id"] == sid:
                    return data["data"]
            return None

        return wait_until(found, 15, "no cmd.kiosk.start")

    async def close_all(self) -> None:
        for kiosk in self.kiosks:
            await kiosk.close()
        for echo in self.echoes:
            if echo.transport is not None:
                echo.transport.close()
        self.kiosks, self.echoes = [], []
        await asyncio.sleep(2)

    async def cpu(self, seconds: float) -> float:
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), _cpu_ticks(self.bridge_pid)
        await asyncio.sleep(seconds)
        return 100.0 * (_cpu_ticks(self.bridge_pid) - c0) / hz / (time.monotonic() - t0)


async def direct_round_trips(seconds: float) -> list[float]:
    """The same click loop against a plain aiortc peer that sends what it hears straight
    back (decode + encode, no bridge, no RTP leg): what any WebRTC far end costs."""
    kiosk = Kiosk(video=False)
    echo = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    @echo.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        short_audio_buffer(echo, track)
        echo.addTrack(track)

    await kiosk.pc.setLocalDescription(await kiosk.pc.createOffer())
    await echo.setRemoteDescription(kiosk.pc.localDescription)
    await echo.setLocalDescription(await echo.createAnswer())
    await kiosk.pc.setRemoteDescription(echo.localDescription)
    await asyncio.sleep(3)
    kiosk.click.sent.clear()
    kiosk.heard.clear()
    await asyncio.sleep(seconds)
    trips = kiosk.round_trips_ms()
    await kiosk.close()
    await echo.close()
    return trips


def _summary(trips: list[float]) -> dict[str, float]:
    return {"n": len(trips), "p50": round(statistics.median(trips), 1),
            "p95": round(sorted(trips)[max(0, int(len(trips) * 0.95) - 1)], 1),
            "min": round(min(trips), 1), "max": round(max(trips), 1)}


async def measure(h: Harness, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["idle_cpu_percent"] = round(await h.cpu(min(seconds, 10)), 2)
    direct = await direct_round_trips(seconds)
    if not direct:
        raise RuntimeError("no click came back from the direct aiortc echo peer")
    out["direct_round_trip_ms"] = _summary(direct)

    # latency: one audio session alone
    k = await h.open(video=False)
    await asyncio.sleep(3)  # connect, fill buffers
    k.click.sent.clear()
    k.heard.clear()
    await asyncio.sleep(seconds)
    trips = k.round_trips_ms()
    if not trips:
        raise RuntimeError(f"no click came back: the audio path does not work (connection "
                           f"{k.pc.connectionState}, echoed {h.echoes[0].packets} packets, "
                           f"{len(k.click.sent)} clicks sent, {len(k.heard)} heard)")
    out["round_trip_ms"] = {**_summary(trips), "clicks_sent": len(k.click.sent)}
    await h.close_all()

    runs: dict[str, dict[str, float]] = {}
    for label, video, count in (("audio", False, 1), ("audio", False, 4),
                                ("audio", False, KIOSKS), ("video", True, 1),
                                ("video", True, 2)):
        for _ in range(count):
            await h.open(video=video)
        await asyncio.sleep(4)
        cpu = await h.cpu(seconds)
        echoed = sum(e.packets for e in h.echoes)
        runs[f"{label}x{count}"] = {"sessions": count, "cpu_percent": round(cpu, 1),
                                    "rtp_packets_echoed": echoed,
                                    "load_1min": round(os.getloadavg()[0], 2)}
        print(f"  {label:5s} x{count}: bridge {cpu:5.1f} % of one core")
        await h.close_all()
    # all 8 kiosks in sessions: 2 talking (the kiosk queue's 2 lines) with video, 6
    # waiting in the queue with audio only (the page sends its camera once answered)
    for video in (True, True, False, False, False, False, False, False):
        await h.open(video=video)
    await asyncio.sleep(4)
    cpu = await h.cpu(seconds)
    runs["kiosks8_2video_6waiting"] = {"sessions": KIOSKS, "cpu_percent": round(cpu, 1),
                                       "load_1min": round(os.getloadavg()[0], 2)}
    print(f"  8 kiosks (2 with video): bridge {cpu:5.1f} % of one core")
    await h.close_all()
    out["runs"] = runs
    idle = out["idle_cpu_percent"]

    def slope(key: str, n: int) -> float:
        return (runs[key]["cpu_percent"] - idle) / n

    out["per_audio_session"] = round(slope(f"audiox{KIOSKS}", KIOSKS), 2)
    out["per_video_session"] = round(max(slope("videox1", 1), slope("videox2", 2)), 2)
    return out


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis.Redis.from_url(url).ping(), 10, "redis-server did not start")
    return proc, url


BRIDGE = ("import sys, aioice.ice\n"
          "aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ['127.0.0.1']\n"
          "from kiosk_bridge.main import main\n"
          "sys.exit(main())\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measurement window per step (default 20)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mado-bench-kiosk-"))
    redis_proc, url = start_redis(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
    env.update({"MADOGUCHI_REDIS__URL": url, "MADOGUCHI_REDIS__PREFIX": PREFIX,
                "MADOGUCHI_SITE__DATA_DIR": str(workdir), "MADOGUCHI_SITE__LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1"})
    log = (workdir / "kiosk_bridge.log").open("wb")
    bridge = subprocess.Popen([sys.executable, "-c", BRIDGE], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        client = redis.Redis.from_url(url)
        wait_until(lambda: list(client.scan_iter(Keys(PREFIX).health_pattern("kiosk_bridge"))),
                   30, "kiosk_bridge did not start")
        print(f"kiosk_bridge pid {bridge.pid}; {args.seconds:.0f} s per step")
        harness = Harness(url, bridge.pid)
        result = asyncio.run(measure(harness, args.seconds))
    except Exception:
        log.flush()
        print((workdir / "kiosk_bridge.log").read_text(errors="replace")[-3000:],
              file=sys.stderr)
        raise
    finally:
        bridge.terminate()
        try:
            bridge.wait(15)
        except subprocess.TimeoutExpired:
            bridge.kill()
        log.close()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    via_bridge = result["round_trip_ms"]["p50"]
    direct = result["direct_round_trip_ms"]["p50"]
    added = round((via_bridge - direct) / 2, 1)
    upper = round(via_bridge / 2, 1)
    per_audio = result["per_audio_session"]
    per_video = result["per_video_session"]
    per_kiosk = per_audio + per_video if per_video > per_audio else per_video
    sessions_on_one_core = int(100 // per_video) if per_video > 0 else None
    eight = result["runs"][f"audiox{KIOSKS}"]["cpu_percent"]
    mixed = result["runs"]["kiosks8_2video_6waiting"]["cpu_percent"]
    data: dict[str, Any] = {
        "added_latency_ms": added,
        "cpu_percent_per_audio_session": per_audio,
        "cpu_percent_per_video_session": per_video,
        "sessions_on_one_core": sessions_on_one_core,
        "targets": {
            "added_latency_ms < 60": {"value": added, "limit": LATENCY_TARGET_MS,
                                      "met": added < LATENCY_TARGET_MS},
            "8 kiosks with video on one core (sessions_on_one_core >= 8)": {
                "value": sessions_on_one_core, "limit": KIOSKS,
                "met": bool(sessions_on_one_core and sessions_on_one_core >= KIOSKS)},
            "8 audio sessions measured at once < 100 % of one core": {
                "value": eight, "limit": 100.0, "met": eight < 100.0},
            "all 8 kiosks in sessions (2 talking with video, 6 waiting) < 100 % of one core": {
                "value": mixed, "limit": 100.0, "met": mixed < 100.0},
        },
        "details": {**result, "per_kiosk_audio_and_video_estimate": round(per_kiosk, 2),
                    "one_way_upper_bound_ms": upper},
        "method": ("latency: a 20 ms click each second; round trip kiosk client -> bridge -> "
                   "RTP echo (Asterisk's place) -> bridge -> kiosk client, minus the round trip "
                   "through a plain aiortc echo peer (what any WebRTC far end costs: decode, "
                   "encode), halved; one_way_upper_bound_ms is half the whole round trip. "
                   "CPU: bridge process from /proc, slope over the idle bridge; video: 640x480 "
                   "VP8 from aiortc's test pattern"),
        "measured_at": now_iso(), "source": source_version(), "machine": machine(),
    }
    write_json(RESULTS, data)
    print(f"round trip p50 via the bridge {via_bridge} ms, via a plain aiortc peer {direct} ms "
          f"-> added one-way latency {added} ms (target < {LATENCY_TARGET_MS:.0f}; upper "
          f"bound {upper} ms)")
    print(f"CPU per session: audio {per_audio} %, audio+video {per_video} % of one core; "
          f"{sessions_on_one_core} video sessions fit one core; 8 audio sessions: {eight} %")
    for name, target in data["targets"].items():
        print(f"target {name}: {'met' if target['met'] else 'NOT met'} ({target['value']})")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
