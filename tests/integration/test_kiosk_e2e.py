"""The remote window end to end: headless Chromium kiosks → kiosk_bridge (aiortc) →
Asterisk's kiosk queue → auto-answering operator phones.

Real Asterisk 22, ari_app, web and kiosk_bridge as their own processes, Redis and SQL.
The kiosks are Chromium pages with a fake camera and a 440 Hz WAV as microphone; the
first operator (op01) is a SIPp phone whose RTP the test handles itself: it measures what
the kiosk says and answers with 1000 Hz, which the kiosk page measures with WebAudio.
A second operator (op02) is an ordinary SIPp phone. Three kiosks: two are served at
once, the third waits with its position on screen and is served when a line frees.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from sqlalchemy import select

from common.commands import AgentLogin, AgentPause, AgentUnpause
from common.db import init_schema, make_engine, session_factory
from common.keys import Keys
from common.kiosk import KioskKeys, dev_secret
from common.models import SpecialDay
from common.models.accounts import AuditEntry
from common.models.calls import Call, CallEvent
from common.settings import Settings, settings_override
from stack.asterisk import AsteriskInstance
from tests.conftest import free_port, wait_until
from tests.integration.conftest import Phones, Proc, Processes, send, start_phones

pytestmark = [pytest.mark.asterisk, pytest.mark.browser, pytest.mark.engine("postgresql")]

CHROMIUM = "/usr/bin/chromium"
KIOSK_TONE = 440.0
OPERATOR_TONE = 1000.0


# ------------------------------------------------------------------------- helpers


def write_tone_wav(path: Path, freq: float, seconds: float = 10.0, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _ulaw_table() -> np.ndarray[Any, Any]:
    out = np.zeros(256, dtype=np.int32)
    for byte in range(256):
        b = ~byte & 0xFF
        sample = (((b & 0x0F) << 3) + 0x84 << ((b >> 4) & 0x07)) - 0x84
        out[byte] = -sample if b & 0x80 else sample
    return out


ULAW = _ulaw_table()


def ulaw_encode(pcm: np.ndarray[Any, Any]) -> bytes:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(x)).astype(np.int32) - 7, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8))


def peak_hz(samples: np.ndarray[Any, Any], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[:5] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


def dbfs(samples: np.ndarray[Any, Any]) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


class OperatorMedia:
    """The RTP end of op01's phone: records what it hears (PCMU), answers with a tone
    to wherever Asterisk sends from, paced at 20 ms."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq, ts, n = 0, 0, 0
        next_send = time.monotonic()
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
                if len(data) > 12 and data[1] & 0x7F == 0:
                    self.remote = addr
                    self.samples.extend(ULAW[np.frombuffer(data[12:], dtype=np.uint8)])
            except TimeoutError:
                pass
            except OSError:
                return
            now = time.monotonic()
            if self.remote is not None and now >= next_send:
                t = (np.arange(160) + n) / 8000
                pcm = (0.3 * 32767 * np.sin(2 * math.pi * OPERATOR_TONE * t)).astype(np.int16)
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234)
                self.sock.sendto(header + ulaw_encode(pcm), self.remote)
                seq, ts, n = seq + 1, ts + 160, n + 160
                next_send = max(next_send + 0.02, now - 0.1)

    def heard(self, seconds: float = 2.0) -> np.ndarray[Any, Any]:
        return np.array(self.samples[-int(seconds * 8000):], dtype=np.float64)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


PAGE_AUDIO = """async () => {
  const el = document.getElementById('k-remote-audio');
  if (!el.srcObject) { return null; }
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(el.srcObject);
  const an = ctx.createAnalyser();
  an.fftSize = 8192;
  src.connect(an);
  await new Promise(r => setTimeout(r, 1500));
  const freq = new Float32Array(an.frequencyBinCount);
  an.getFloatFrequencyData(freq);
  const td = new Float32Array(an.fftSize);
  an.getFloatTimeDomainData(td);
  let peak = 1;
  for (let i = 2; i < freq.length; i++) { if (freq[i] > freq[peak]) { peak = i; } }
  let sum = 0;
  for (const v of td) { sum += v * v; }
  const rms = Math.sqrt(sum / td.length);
  const rate = ctx.sampleRate;
  await ctx.close();
  return {peakHz: peak * rate / an.fftSize, dbfs: 20 * Math.log10(rms || 1e-9)};
}"""

IN_VIEW = """() => Array.from(document.querySelectorAll('section:not([hidden]) button'))
  .map(b => b.getBoundingClientRect())
  .filter(r => r.width > 0)
  .every(r => r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth
              && r.height >= 44)"""

PAGE_STORAGE = """async () => ({
  local: localStorage.length, session: sessionStorage.length, cookies: document.cookie,
  caches: (await caches.keys()).length,
  dbs: indexedDB.databases ? (await indexedDB.databases()).length : 0,
  media: Array.from(document.querySelectorAll('video,audio')).filter(e => e.srcObject).length,
})"""


# ------------------------------------------------------------------------ fixtures


@pytest.fixture
def kiosk_settings(call_settings: Settings) -> Settings:
    # no card agent runs on the kiosk PC here: nothing listens on its port
    settings = settings_override(call_settings, web={"port": free_port()}, kiosk={
        "card_agent_url": f"http://127.0.0.1:{free_port()}"})
    engine = make_engine(settings.database_url)
    init_schema(engine)
    engine.dispose()
    return settings


@pytest.fixture
def stack(processes: Processes, kiosk_settings: Settings, ari_app: Proc
          ) -> Iterator[tuple[str, Proc, Proc]]:
    web = processes.start("web", "web.main", kiosk_settings)
    bridge = processes.start("kiosk_bridge", "tests.integration.kiosk_bridge_loopback",
                             kiosk_settings)
    base = f"http://127.0.0.1:{kiosk_settings.web.port}"
    client = redis.Redis.from_url(kiosk_settings.redis.url)
    keys = Keys(kiosk_settings.redis.prefix)

    def up() -> bool:
        assert web.alive(), web.output()
        assert bridge.alive(), bridge.output()
        return (httpx.get(f"{base}/health.json", timeout=2).status_code in (200, 503)
                and bool(list(client.scan_iter(keys.health_pattern("kiosk_bridge")))))

    wait_until(up, 30, "web or kiosk_bridge did not start")
    client.close()
    yield base, web, bridge


@pytest.fixture
def operator_media() -> Iterator[OperatorMedia]:
    media = OperatorMedia()
    yield media
    media.close()


@pytest.fixture
def operators(kiosk_settings: Settings, tmp_path: Path,
              operator_media: OperatorMedia) -> Iterator[tuple[Phones, Phones]]:
    op1 = start_phones(kiosk_settings, ["op01"], tmp_path / "op01", scenario="uas_phone_rtp.xml",
                       keys={"rtp_port": str(operator_media.port)})
    op2 = start_phones(kiosk_settings, ["op02"], tmp_path / "op02")
    yield op1, op2
    op1.stop()
    op2.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "kiosk-tone.wav"
    write_tone_wav(wav, KIOSK_TONE)
    args = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
            "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-quic"]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield chromium
        chromium.close()


def open_kiosk(browser: Any, base: str, settings: Settings, kiosk: str,
               viewport: dict[str, int] | None = None) -> Any:
    context = browser.new_context(viewport=viewport or {"width": 1920, "height": 1080},
                                  locale="ja-JP")
    context.grant_permissions(["camera", "microphone"], origin=base)
    page = context.new_page()
    page.goto(f"{base}/kiosk/#{kiosk}:{dev_secret(settings, kiosk)}")
    page.wait_for_selector("#screen-welcome:not([hidden])", timeout=15000)
    return page


def start_session(page: Any, category: str = "certificates") -> None:
    page.click("#k-start")
    page.click(f"[data-category='{category}']")


def login_operator(settings: Settings, endpoint: str) -> None:
    result = send(settings, AgentLogin(tenant="city", endpoint=endpoint, queues=["kiosk"]))
    assert result["ok"], result

    def ready() -> bool:
        client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
        try:
            raw = client.hget(Keys(settings.redis.prefix).queue_members("kiosk"), endpoint)
        finally:
            client.close()
        return bool(raw) and json.loads(raw)["status"] == "not_in_use"  # type: ignore[arg-type]

    wait_until(ready, 30, f"{endpoint} not ready in the kiosk queue")


def kiosk_calls(settings: Settings) -> list[Call]:
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as db:
            rows = list(db.scalars(select(Call).where(Call.channel == "kiosk")
                                   .order_by(Call.arrived_at)))
            for row in rows:
                _ = row.events
            return rows
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- tests


def test_kiosks_reach_operators_with_two_way_audio_and_wait_in_the_queue(
        asterisk: AsteriskInstance, kiosk_settings: Settings, stack: tuple[str, Proc, Proc],
        operators: tuple[Phones, Phones], operator_media: OperatorMedia, browser: Any,
        tmp_path: Path) -> None:
    base, _web, bridge = stack
    settings = kiosk_settings
    login_operator(settings, "op01")

    # kiosk 1 reaches op01 (the only operator so far)
    k1 = open_kiosk(browser, base, settings, "k01")
    start_session(k1)
    k1.wait_for_selector("#screen-call:not([hidden])", timeout=40000)

    # kiosk -> operator: op01's phone hears the kiosk's 440 Hz microphone
    wait_until(lambda: len(operator_media.samples) > 8000 * 3, 20, "op01 heard nothing")
    # 1.5 s more of the call's audio, so what is measured is the steady call, not its start
    received = len(operator_media.samples)
    wait_until(lambda: len(operator_media.samples) >= received + 12000, 10,
               "op01's audio stopped")
    heard = operator_media.heard(2.0)
    assert dbfs(heard) > -40, f"op01 hears only {dbfs(heard):.1f} dBFS"
    assert abs(peak_hz(heard) - KIOSK_TONE) < 15, f"op01 hears {peak_hz(heard):.0f} Hz"

    # operator -> kiosk: the page hears op01's 1000 Hz
    level = wait_until(lambda: (r := k1.evaluate(PAGE_AUDIO)) and r["dbfs"] > -40 and r,
                       15, "the kiosk hears nothing")
    assert abs(level["peakHz"] - OPERATOR_TONE) < 20, level
    k1.screenshot(path=str(tmp_path / "kiosk-call-1920.png"))
    assert k1.evaluate(IN_VIEW), "a control of the call screen is off screen or too small"

    # kiosk 2 reaches op02; kiosk 3 waits with its position on screen
    login_operator(settings, "op02")
    k2 = open_kiosk(browser, base, settings, "k02")
    start_session(k2)
    k2.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    k3 = open_kiosk(browser, base, settings, "k03", viewport={"width": 1366, "height": 768})
    start_session(k3)
    k3.wait_for_selector("#screen-waiting:not([hidden])", timeout=30000)
    wait_until(lambda: k3.inner_text("#k-position").strip() == "1", 15,
               "kiosk 3 does not show its place in the queue")
    k3.screenshot(path=str(tmp_path / "kiosk-waiting-1366.png"))
    assert k3.evaluate(IN_VIEW), "a control of the waiting screen is off screen or too small"
    time.sleep(2)  # a window in which nothing may happen: no event marks its end
    assert k3.is_visible("#screen-waiting"), "kiosk 3 was connected while both lines were busy"

    # kiosk 1 hangs up: its line frees and kiosk 3 is served
    k1.click("#screen-call [data-action='hangup']")
    k1.wait_for_selector("#screen-survey:not([hidden])", timeout=15000)
    k3.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    assert k3.evaluate(IN_VIEW), "a control of the call screen is off screen at 1366x768"

    # satisfaction on the kiosk goes onto kiosk 1's call; then the page resets itself
    k1.click("[data-score='4']")
    k1.wait_for_selector("#screen-welcome:not([hidden])", timeout=20000)
    storage = k1.evaluate(PAGE_STORAGE)
    assert storage == {"local": 0, "session": 0, "cookies": "", "caches": 0, "dbs": 0,
                       "media": 0}, storage

    for page in (k2, k3):
        page.click("#screen-call [data-action='hangup']")
        page.wait_for_selector("#screen-survey:not([hidden]), #screen-thanks:not([hidden])",
                               timeout=15000)

    # the timeline: three kiosk sessions as ordinary queued calls, all ended and purged
    # (the purge row comes from web or the bridge, the end from ari_app: either order)
    def all_ended() -> list[Call] | None:
        rows = kiosk_calls(settings)
        done = len(rows) == 3 and all(
            r.status == "ended" and any(e.kind == "kiosk_purge" for e in r.events)
            for r in rows)
        return rows if done else None

    rows = wait_until(all_ended, 30, "kiosk calls not ended and purged on the timeline")
    assert [r.location for r in rows] == ["k01", "k02", "k03"]
    assert [r.agent for r in rows] == ["op01", "op02", "op01"]
    assert all(r.queue == "kiosk" and r.service_id == "remote-window" for r in rows)
    assert rows[0].survey_score == 4
    kinds = [e.kind for e in rows[2].events]
    assert {"arrived", "queue_join", "agent_connect", "kiosk_purge"} <= set(kinds), kinds
    assert rows[2].wait_seconds is not None and rows[2].wait_seconds >= 1

    # nothing of any session remains in Redis; the purge records exist
    client = redis.Redis.from_url(settings.redis.url)
    try:
        prefix = Keys(settings.redis.prefix).prefix
        left = [k.decode() for k in client.scan_iter(f"{prefix}:kiosk:session:*")]
        left += [k.decode() for k in client.scan_iter(f"{prefix}:kiosk:call:*")]
        left += [k.decode() for k in client.scan_iter(f"{prefix}:kiosk:active:*")]
        assert left == []
    finally:
        client.close()
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as db:
            purges = list(db.scalars(select(AuditEntry).where(
                AuditEntry.action == "kiosk.purge")))
            rows_purge = list(db.scalars(select(CallEvent).where(
                CallEvent.kind == "kiosk_purge")))
    finally:
        engine.dispose()
    assert len(purges) == 3
    assert len(rows_purge) == 3
    assert all("session state" in r.data["deleted"] for r in rows_purge)

    # no kiosk channel is left in Asterisk
    wait_until(lambda: "0 active channels" in asterisk.cli("core show channels count"), 15,
               f"channels left: {asterisk.cli('core show channels')}")
    assert bridge.alive()


# ------------------------------------------------ video and the document camera


A4_LINES = ["住民票の写しの交付請求書", "請求者の住所　東京都サンプル市中央一丁目2番3号",
            "The quick brown fox jumps over the lazy dog 0123456789",
            "本籍・筆頭者の記載　　あり　・　なし", "使いみち：年金・就職・その他（　　　　）"]


def render_a4_page(path_png: Path, path_y4m: Path, width: int = 3840,
                   height: int = 2160) -> tuple[int, int, int, int]:
    """An A4 page (portrait, filling the frame's height) with 10 pt text, as a PNG and as
    a y4m file for Chromium's fake camera. Returns the box of the first text line."""
    from PIL import Image, ImageDraw, ImageFont

    px_per_mm = height / 297.0
    page_w = int(210 * px_per_mm)
    left = (width - page_w) // 2
    img = Image.new("RGB", (width, height), (90, 90, 90))
    draw = ImageDraw.Draw(img)
    draw.rectangle([left, 0, left + page_w, height], fill=(255, 255, 255))
    size = round(10 * 25.4 / 72 * px_per_mm)  # 10 pt
    font = ImageFont.truetype("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", size)
    margin = int(20 * px_per_mm)
    y = margin
    boxes = []
    for i in range(40):
        text = A4_LINES[i % len(A4_LINES)]
        box = draw.textbbox((left + margin, y), text, font=font)
        boxes.append(box)
        draw.text((left + margin, y), text, font=font, fill=(0, 0, 0))
        y += int(size * 1.6)
        if y > height - margin:
            break
    img.save(path_png)
    rgb = np.asarray(img, dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y_plane = (0.299 * r + 0.587 * g + 0.114 * b)
    u = (-0.168736 * r - 0.331264 * g + 0.5 * b + 128)
    v = (0.5 * r - 0.418688 * g - 0.081312 * b + 128)

    def sub(p: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return p.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    frame = b"FRAME\n" + np.clip(y_plane, 0, 255).astype(np.uint8).tobytes() + \
        np.clip(sub(u), 0, 255).astype(np.uint8).tobytes() + \
        np.clip(sub(v), 0, 255).astype(np.uint8).tobytes()
    with path_y4m.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F5:1 Ip A1:1 C420jpeg\n".encode())
        fh.write(frame * 2)
    x0, y0, x1, y1 = boxes[0]
    return int(x0), int(y0), int(x1), int(y1)


@pytest.fixture
def document_browser(tmp_path: Path) -> Iterator[tuple[Any, Path, tuple[int, int, int, int]]]:
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "kiosk-tone.wav"
    write_tone_wav(wav, KIOSK_TONE)
    png, y4m = tmp_path / "a4.png", tmp_path / "a4.y4m"
    box = render_a4_page(png, y4m)
    args = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
            f"--use-file-for-fake-video-capture={y4m}",
            "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-quic"]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield chromium, png, box
        chromium.close()


FULL_STILL = """() => {
  const img = document.querySelector('dialog.kiosk-full[open] .kiosk-full-stage img.kiosk-still');
  if (!img) { return null; }
  const r = img.getBoundingClientRect();
  return {left: r.left, top: r.top, width: r.width, height: r.height, vw: innerWidth,
          vh: innerHeight, nw: img.naturalWidth, nh: img.naturalHeight, dpr: devicePixelRatio,
          transform: img.style.transform};
}"""


def check_full_screen_viewer(console: Any, tmp_path: Path) -> None:
    """The still full screen: fit fills the viewport, 1:1 is one image pixel per device
    pixel, the wheel zooms around the pointer, drag and arrows pan, Esc closes."""
    console.click("[data-kiosk-action='full']")
    dialog = console.locator("dialog.kiosk-full")
    box = wait_until(lambda: console.evaluate(FULL_STILL), 5, "the full-screen viewer did not open")
    assert box["dpr"] == 2

    def fits(b: dict[str, Any]) -> bool:
        inside = (b["left"] >= -1 and b["top"] >= -1 and b["left"] + b["width"] <= b["vw"] + 1
                  and b["top"] + b["height"] <= b["vh"] + 1)
        centred = (abs(b["left"] * 2 + b["width"] - b["vw"]) <= 2
                   and abs(b["top"] * 2 + b["height"] - b["vh"]) <= 2)
        return inside and centred and (abs(b["width"] - b["vw"]) <= 1
                                       or abs(b["height"] - b["vh"]) <= 1)

    # it keeps the small viewer's quarter turn (portrait on screen) and turns further
    assert dialog.get_attribute("data-rotate") == "90"
    assert box["height"] > box["width"] and fits(box), box
    console.click("[data-kiosk-action='full-rotate']")
    assert dialog.get_attribute("data-rotate") == "180"
    box = console.evaluate(FULL_STILL)
    assert box["width"] > box["height"] and fits(box), box
    console.screenshot(path=str(tmp_path / "console-kiosk-full-fit.png"))

    console.click("[data-kiosk-action='full-actual']")
    box = console.evaluate(FULL_STILL)
    assert abs(box["width"] - box["nw"] / box["dpr"]) <= 1, box
    assert abs(box["height"] - box["nh"] / box["dpr"]) <= 1, box
    assert dialog.get_attribute("data-zoom") == "100"

    # the wheel zooms in; the image point under the pointer stays under it
    px, py = 300.0, 450.0
    fx, fy = (px - box["left"]) / box["width"], (py - box["top"]) / box["height"]
    console.mouse.move(px, py)
    console.mouse.wheel(0, -240)
    zoomed = wait_until(lambda: (b := console.evaluate(FULL_STILL))["width"] > box["width"] * 1.1
                        and b, 5, "the wheel did not zoom")
    assert abs(zoomed["left"] + fx * zoomed["width"] - px) <= 3, (box, zoomed)
    assert abs(zoomed["top"] + fy * zoomed["height"] - py) <= 3, (box, zoomed)

    # drag pans with the pointer; the right arrow shows more to the right
    console.mouse.down()
    console.mouse.move(px - 50, py - 40, steps=4)
    console.mouse.up()
    dragged = console.evaluate(FULL_STILL)
    assert abs(dragged["left"] - zoomed["left"] + 50) <= 1, (zoomed, dragged)
    assert abs(dragged["top"] - zoomed["top"] + 40) <= 1, (zoomed, dragged)
    console.keyboard.press("ArrowRight")
    panned = console.evaluate(FULL_STILL)
    assert panned["transform"] != dragged["transform"]
    assert panned["left"] < dragged["left"] - 10, (dragged, panned)
    assert abs(panned["top"] - dragged["top"]) <= 1
    console.keyboard.press("0")
    assert fits(console.evaluate(FULL_STILL))

    # Esc closes; the still is back in the small viewer with the rotation it was given
    console.keyboard.press("Escape")
    wait_until(lambda: not console.evaluate(
        "() => document.querySelector('dialog.kiosk-full').open"), 5, "Esc did not close")
    console.wait_for_selector(".kiosk-viewport img.kiosk-still", timeout=5000)
    assert console.locator(".kiosk-viewer").get_attribute("data-rotate") == "180"
    small = console.evaluate("""() => {
      const s = document.querySelector('img.kiosk-still').style;
      return {width: s.width, transform: s.transform};
    }""")
    assert small["width"] == "" and "rotate(180deg)" in small["transform"], small


def test_the_operator_sees_the_kiosk_and_a_legible_a4_document(
        asterisk: AsteriskInstance, kiosk_settings: Settings, stack: tuple[str, Proc, Proc],
        operators: tuple[Phones, Phones], document_browser: Any, tmp_path: Path) -> None:
    from PIL import Image

    from web import accounts

    browser, png, (x0, y0, x1, y1) = document_browser
    base = stack[0]
    settings = kiosk_settings
    engine = make_engine(settings.database_url)
    with session_factory(engine)() as db:
        db.add(accounts.create_user(db, username="op1", tenant_id="city", roles={"operator"},
                                    password="kiosk-e2e-password-42",
                                    hasher=accounts.make_hasher(), settings=settings,
                                    display_name="青木", sip_endpoint="op01",
                                    must_change_password=False))
        db.commit()
    engine.dispose()
    login_operator(settings, "op01")

    # a high-density screen: the full-screen viewer's 1:1 is in device pixels
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="ja-JP",
                                  device_scale_factor=2)
    context.grant_permissions(["camera", "microphone"], origin=base)
    console = context.new_page()
    console.goto(f"{base}/auth/login")
    console.fill("#f-username", "op1")
    console.fill("#f-password", "kiosk-e2e-password-42")
    console.click("main button[type=submit]")
    console.wait_for_url(f"{base}/")
    console.goto(f"{base}/operator/")
    console.wait_for_selector("#console[data-live='open']", timeout=15000)

    kiosk = open_kiosk(browser, base, settings, "k05")
    start_session(kiosk, "mynumber")
    kiosk.wait_for_selector("#screen-call:not([hidden])", timeout=40000)

    # the console opens the case card with the kiosk's camera
    console.wait_for_selector("[data-kiosk-panel]", timeout=20000)
    wait_until(lambda: console.evaluate(
        "() => document.querySelector('.kiosk-video').videoWidth") > 0, 30,
        "the console received no video from the kiosk")
    # and the kiosk receives the console's camera
    wait_until(lambda: kiosk.evaluate(
        "() => document.getElementById('k-remote-video').videoWidth") > 0, 30,
        "the kiosk received no video from the console")

    # the operator asks for a document picture; the kiosk takes it at full resolution
    console.click("[data-kiosk-action='still']")
    console.wait_for_selector(".kiosk-viewer:not([hidden]) img.kiosk-still", timeout=30000)
    wait_until(lambda: console.evaluate(
        "() => document.querySelector('img.kiosk-still').naturalWidth") > 0, 15,
        "the still did not load in the console")
    for _ in range(4):
        console.click("[data-kiosk-action='zoom-in']")
    console.click("[data-kiosk-action='rotate']")
    viewer = console.locator(".kiosk-viewer")
    assert int(viewer.get_attribute("data-zoom") or 0) >= 400
    assert viewer.get_attribute("data-rotate") == "90"
    port = console.locator(".kiosk-viewport").bounding_box()
    assert port is not None
    console.mouse.move(port["x"] + 100, port["y"] + 100)
    console.mouse.down()
    console.mouse.move(port["x"] + 160, port["y"] + 130)
    console.mouse.up()
    transform = console.evaluate("() => document.querySelector('img.kiosk-still').style.transform")
    assert "translate(60px, 30px)" in transform and "rotate(90deg)" in transform
    console.screenshot(path=str(tmp_path / "console-kiosk-still.png"))
    check_full_screen_viewer(console, tmp_path)

    # legibility: the still is the camera's full frame, and the 10 pt line survives
    still_id = viewer.get_attribute("data-still")
    call_id = console.locator("[data-kiosk-panel]").get_attribute("data-call")
    resp = console.request.get(f"{base}/console/kiosk/{call_id}/stills/{still_id}")
    assert resp.status == 200
    still = Image.open(__import__("io").BytesIO(resp.body())).convert("L")
    assert still.size == (3840, 2160), still.size
    source = Image.open(png).convert("L")
    pad = 10
    crop = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    got = np.asarray(still.crop(crop), dtype=np.float64)
    want = np.asarray(source.crop(crop), dtype=np.float64)
    corr = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    contrast = float(np.percentile(got, 95) - np.percentile(got, 3))
    assert corr > 0.9, f"10 pt text line correlates {corr:.3f} with the original"
    assert contrast > 120, f"10 pt text contrast {contrast:.0f}"
    stroke_px = (y1 - y0)
    assert stroke_px >= 20, f"10 pt text is only {stroke_px} px high in the still"

    # the card agent does not run on the kiosk PC: the operator asks for the card, the
    # citizen is told at once (not asked to agree to a read that cannot happen), and so
    # is the operator, with what to do
    console.click("[data-kiosk-action='card']")
    kiosk.wait_for_selector("#k-card[data-step='error']:not([hidden])", timeout=10000)
    assert "カードリーダーの準備ができていません" in kiosk.inner_text("#k-card-error")
    card_state = "[data-kiosk-card] .kiosk-card-state"
    wait_until(lambda: console.get_attribute("[data-kiosk-card]", "data-card-error")
               == "agent-unavailable", 10, "the operator's card panel was not told")
    assert "カード読み取りソフトが起動していない" in console.inner_text(card_state)
    assert "保守担当者" in console.inner_text(card_state)
    kiosk.screenshot(path=str(tmp_path / "kiosk-card-agent-down.png"))
    kiosk.click("[data-card-step='error'] [data-card='cancel']")
    assert kiosk.is_hidden("#k-card") and kiosk.is_visible("#screen-call")
    # and the fleet heartbeat reports the card reader as not working
    client = redis.Redis.from_url(settings.redis.url)
    try:
        kk = KioskKeys(Keys(settings.redis.prefix))
        beat = client.hgetall(kk.heartbeat("k05"))
        errors = [json.loads(e)["error"] for e in client.lrange(kk.errors("k05"), 0, -1)]
    finally:
        client.close()
    assert json.loads(beat[b"devices"])["card_reader"] == "error", beat
    assert any(e.startswith("card reader: agent-unavailable") for e in errors), errors

    kiosk.click("#screen-call [data-action='hangup']")
    kiosk.wait_for_selector("#screen-survey:not([hidden]), #screen-thanks:not([hidden])",
                            timeout=15000)
    assert kiosk.get_attribute("body", "data-current") == "survey", \
        kiosk.evaluate("() => window.madoKiosk.state()")
    # the still is gone with the session
    gone = console.request.get(f"{base}/console/kiosk/{call_id}/stills/{still_id}")
    assert gone.status == 404

    def purge_row() -> CallEvent | None:
        rows = kiosk_calls(settings)
        found = [e for e in rows[-1].events if e.kind == "kiosk_purge"] if rows else []
        return found[0] if found else None

    purge = wait_until(purge_row, 15, "no purge record")
    assert "stills:1" in purge.data["deleted"]
    steps = [e.data["state"] for e in kiosk_calls(settings)[-1].events if e.kind == "kiosk_card"]
    assert steps == ["requested", "error", "cancelled"], steps  # never "consented"


# ----------------------------------------------------------- nobody can answer


LEVEL_WATCH = """() => {
  // the loudest the kiosk's speaker has been since now (dBFS), sampled every 50 ms
  window.__level = -Infinity;
  const timer = setInterval(() => {
    const el = document.getElementById('k-remote-audio');
    if (!el.srcObject || window.__an) {
      if (!window.__an) { return; }
      const td = new Float32Array(window.__an.fftSize);
      window.__an.getFloatTimeDomainData(td);
      let sum = 0;
      for (const v of td) { sum += v * v; }
      const db = 20 * Math.log10(Math.sqrt(sum / td.length) || 1e-9);
      window.__level = Math.max(window.__level, db);
      return;
    }
    const ctx = new AudioContext();
    window.__an = ctx.createAnalyser();
    window.__an.fftSize = 2048;
    ctx.createMediaStreamSource(el.srcObject).connect(window.__an);
  }, 50);
  window.addEventListener('pagehide', () => clearInterval(timer));
}"""


def test_nobody_can_answer_the_kiosk_says_why_and_the_citizen_waits_or_leaves(
        asterisk: AsteriskInstance, kiosk_settings: Settings, stack: tuple[str, Proc, Proc],
        operators: tuple[Phones, Phones], browser: Any, tmp_path: Path) -> None:
    base = stack[0]
    settings = kiosk_settings

    # nobody is logged in to the kiosk queue: the kiosk says so, with the hours, and
    # offers to wait or leave; it also hears the city's announcement
    k1 = open_kiosk(browser, base, settings, "k01", viewport={"width": 1366, "height": 768})
    k1.evaluate(LEVEL_WATCH)
    start_session(k1)
    k1.wait_for_selector("#screen-unavailable:not([hidden])", timeout=30000)
    text = k1.inner_text("#screen-unavailable")
    assert "ただいま対応できるオペレーターがいません" in text, text
    assert "受付時間：毎日 24時間" in text, text  # the test site is open around the clock
    assert k1.inner_text("[data-action='wait']") == "このまま待つ"
    assert k1.inner_text("#screen-unavailable [data-action='hangup']") == "終了する"
    assert k1.evaluate(IN_VIEW), "a choice is off screen or too small"
    k1.screenshot(path=str(tmp_path / "kiosk-no-operator-1366.png"))
    wait_until(lambda: k1.evaluate("() => window.__level") > -45, 15,
               "the kiosk did not hear why")
    k1.click("#k-lang")
    assert "No operator can answer right now." in k1.inner_text("#screen-unavailable")
    assert "Opening hours: every day, 24 hours" in k1.inner_text("#screen-unavailable")
    k1.click("#k-lang")

    def calls_done(count: int) -> list[Call] | None:
        rows = kiosk_calls(settings)
        return rows if len(rows) == count and all(
            r.status == "ended" and any(e.kind == "kiosk_purge" for e in r.events)
            for r in rows) else None

    # "end": the session ends as any other, with the purge
    k1.click("#screen-unavailable [data-action='hangup']")
    k1.wait_for_selector("#screen-thanks:not([hidden])", timeout=15000)
    first = wait_until(lambda: calls_done(1), 20, "the call did not end with its purge")[0]
    assert first.agent is None
    assert [e.data for e in first.events if e.kind == "kiosk_unavailable"] == [
        {"reason": "no_operator"}]
    assert [e.data["rule"] for e in first.events if e.kind == "kiosk_purge"] == ["kiosk_hangup"]
    k1.wait_for_selector("#screen-welcome:not([hidden])", timeout=20000)
    assert k1.evaluate(PAGE_STORAGE) == {"local": 0, "session": 0, "cookies": "",
                                         "caches": 0, "dbs": 0, "media": 0}

    # "wait": the kiosk waits until an operator logs in, then they answer
    start_session(k1)
    k1.wait_for_selector("#screen-unavailable:not([hidden])", timeout=30000)
    k1.click("[data-action='wait']")
    k1.wait_for_selector("#screen-standby:not([hidden])", timeout=5000)
    login_operator(settings, "op01")
    k1.wait_for_selector("#screen-call:not([hidden])", timeout=40000)

    # waiting in the queue, the operators go on a break (leavewhenempty): the kiosk says
    # so; it waits, and is served once op01 is back and free
    k2 = open_kiosk(browser, base, settings, "k02")
    start_session(k2)
    k2.wait_for_selector("#screen-waiting:not([hidden])", timeout=30000)
    wait_until(lambda: k2.inner_text("#k-position").strip() == "1", 15,
               "kiosk 2 is not in the queue")
    assert send(settings, AgentPause(tenant="city", endpoint="op01", reason="break"))["ok"]
    k2.wait_for_selector("#screen-unavailable:not([hidden])", timeout=20000)
    k2.click("[data-action='wait']")
    k2.wait_for_selector("#screen-standby:not([hidden])", timeout=5000)
    assert send(settings, AgentUnpause(tenant="city", endpoint="op01"))["ok"]
    k2.wait_for_selector("#screen-waiting:not([hidden])", timeout=20000)
    assert k1.is_visible("#screen-call")
    k1.click("#screen-call [data-action='hangup']")
    k2.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    k2.click("#screen-call [data-action='hangup']")
    for page in (k1, k2):
        page.wait_for_selector("#screen-survey:not([hidden])", timeout=15000)

    # one call per session on the timeline, the one that left and re-entered the queue too
    rows = wait_until(lambda: calls_done(3), 30, "kiosk calls not ended and purged")
    assert [r.location for r in rows] == ["k01", "k01", "k02"]
    assert [r.agent for r in rows] == [None, "op01", "op01"]
    kinds = [e.kind for e in rows[2].events]
    assert kinds.count("queue_join") == 2 and "kiosk_unavailable" in kinds, kinds
    assert kinds.index("kiosk_unavailable") < kinds.index("agent_connect"), kinds
    client = redis.Redis.from_url(settings.redis.url)
    try:
        prefix = Keys(settings.redis.prefix).prefix
        assert [k for k in client.scan_iter(f"{prefix}:kiosk:session:*")] == []
    finally:
        client.close()
    wait_until(lambda: "0 active channels" in asterisk.cli("core show channels count"), 15,
               f"channels left: {asterisk.cli('core show channels')}")


def test_out_of_hours_the_kiosk_says_closed_with_the_hours_and_no_wait(
        asterisk: AsteriskInstance, kiosk_settings: Settings, stack: tuple[str, Proc, Proc],
        browser: Any, tmp_path: Path) -> None:
    from datetime import datetime as dt
    from zoneinfo import ZoneInfo

    base = stack[0]
    settings = kiosk_settings
    today = dt.now(ZoneInfo(settings.site.timezone)).date()
    engine = make_engine(settings.database_url)
    with session_factory(engine)() as db:
        db.add(SpecialDay(service_id="remote-window", day=today, open=False, note="点検"))
        db.commit()
    engine.dispose()
    # someone could answer (a registered phone, logged in): the hours decide
    phone = start_phones(settings, ["op01"], tmp_path / "op01")
    try:
        _closed_kiosk(asterisk, settings, base, browser)
    finally:
        phone.stop()


def _closed_kiosk(asterisk: AsteriskInstance, settings: Settings, base: str,
                  browser: Any) -> None:
    offset = asterisk.full_log.stat().st_size
    login_operator(settings, "op01")

    kiosk = open_kiosk(browser, base, settings, "k03")
    start_session(kiosk)
    kiosk.wait_for_selector("#screen-closed:not([hidden])", timeout=30000)
    text = kiosk.inner_text("#screen-closed")
    assert "受付時間外" in text and "受付時間：毎日 24時間" in text, text
    assert "次回の受付開始：" in text, text  # tomorrow
    assert kiosk.is_hidden("[data-action='wait']")
    kiosk.click("#screen-closed [data-action='hangup']")
    kiosk.wait_for_selector("#screen-thanks:not([hidden])", timeout=15000)

    def ended() -> Call | None:
        rows = kiosk_calls(settings)
        return rows[0] if rows and rows[0].status == "ended" and any(
            e.kind == "kiosk_purge" for e in rows[0].events) else None

    call = wait_until(ended, 20, "the call did not end with its purge")
    assert call.outcome == "out_of_hours" and call.hours_reason == "special_closed"
    assert call.queue is None and call.agent is None
    wait_until(lambda: "0 active channels" in asterisk.cli("core show channels count"), 15,
               f"channels left: {asterisk.cli('core show channels')}")
    # the kiosk heard its own service's hours (common.prompts: out_of_hours per service)
    with asterisk.full_log.open("rb") as fh:
        fh.seek(offset)
        assert "/sounds/out_of_hours__remote_window." in fh.read().decode(errors="replace")


# ------------------------------------------------------------------------ failures


def test_network_loss_and_bridge_restart_leave_nothing_behind(
        asterisk: AsteriskInstance, kiosk_settings: Settings, stack: tuple[str, Proc, Proc],
        operators: tuple[Phones, Phones], browser: Any, processes: Processes) -> None:
    base, _web, bridge = stack
    settings = kiosk_settings
    login_operator(settings, "op01")

    def purge_rules() -> list[str]:
        return [e.data["rule"] for c in kiosk_calls(settings) for e in c.events
                if e.kind == "kiosk_purge"]

    # network loss: the kiosk vanishes mid-call without hanging up
    k1 = open_kiosk(browser, base, settings, "k06")
    start_session(k1)
    k1.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    # the kiosk's connection goes away without a hang-up request reaching the server
    k1.context.set_offline(True)  # its HTTP requests fail from now on
    k1.context.close()
    wait_until(lambda: purge_rules() == ["network"], 90, "network loss not detected")
    first = kiosk_calls(settings)[0]
    wait_until(lambda: kiosk_calls(settings)[0].status == "ended", 20,
               "the operator's side of the call did not end")
    assert first.agent == "op01"
    wait_until(lambda: "0 active channels" in asterisk.cli("core show channels count"), 20,
               f"channels left: {asterisk.cli('core show channels')}")

    # bridge restart: sessions end on both sides, the page goes back to the start
    k2 = open_kiosk(browser, base, settings, "k07")
    start_session(k2)
    k2.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    assert bridge.stop() == 0
    k2.wait_for_selector("#screen-survey:not([hidden]), #screen-thanks:not([hidden])",
                         timeout=20000)
    wait_until(lambda: sorted(purge_rules()) == ["bridge_restart", "network"], 20,
               "bridge restart not recorded")
    wait_until(lambda: "0 active channels" in asterisk.cli("core show channels count"), 20,
               f"channels left: {asterisk.cli('core show channels')}")
    processes.start("kiosk_bridge", "tests.integration.kiosk_bridge_loopback", settings)
    if k2.is_visible("#screen-survey"):
        k2.click("[data-score='5']")
    k2.wait_for_selector("#screen-welcome:not([hidden])", timeout=30000)
    start_session(k2)
    k2.wait_for_selector("#screen-call:not([hidden])", timeout=40000)
    k2.click("#screen-call [data-action='hangup']")
    wait_until(lambda: len(purge_rules()) == 3, 20, "the new session was not purged")
