"""The kiosk API in web, with a real kiosk_bridge (aiortc, on its own event loop in a
thread) and a real WebRTC client playing the kiosk: credentials, bad input, the session
lifecycle and the purge, the fleet heartbeat and the maintainer view.

Asterisk is not needed here (tests/integration/test_kiosk_e2e.py has the whole path);
the audio leg request simply waits on the command stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from common.bus import read_events
from common.events import decode
from common.keys import Keys
from common.kiosk import KioskKeys, KioskPurged, dev_secret, session_dir
from common.settings import Kiosk, Settings, settings_override
from tests.conftest import wait_until
from tests.web.conftest import MakeUser, audit_rows, csrf, login
from tests.web.test_console import add_call, add_transfer
from web.db import resources

JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


def auth(settings: Settings, kiosk: str = "k01") -> dict[str, str]:
    return {"Authorization": f"Kiosk {kiosk}:{dev_secret(settings, kiosk)}"}


class BridgeThread:
    """kiosk_bridge's Bridge on its own loop; also runs the test's WebRTC client."""

    def __init__(self, settings: Settings) -> None:
        from kiosk_bridge.bridge import Bridge

        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.bridge = Bridge(settings, instance="test-bridge")
        started = threading.Event()

        async def main() -> None:
            self.stop_event = asyncio.Event()
            started.set()
            await self.bridge.run(self.stop_event)
            # what aiortc leaves running (relay readers, ICE timers) ends with the loop,
            # as asyncio.run() does in the real process
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),),
                                       daemon=True)
        self.thread.start()
        assert started.wait(10)

    def call(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        self.loop.close()


@pytest.fixture
def kiosk_settings(web_settings: Settings) -> Settings:
    return settings_override(web_settings, kiosk_bridge={"answer_timeout": 2.0})


@pytest.fixture
def kiosk_app(kiosk_settings: Settings) -> Iterator[Flask]:
    from tests.web.conftest import FAST_ARGON2
    from web import create_app
    from web.db import resources

    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2},
                     settings=kiosk_settings)
    yield app
    res = resources(app)
    res.session.remove()
    res.engine.dispose()
    res.redis.close()


@pytest.fixture
def kc(kiosk_app: Flask) -> FlaskClient:
    return kiosk_app.test_client()


@pytest.fixture
def bridge(kiosk_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[BridgeThread]:
    import aioice.ice

    # aioice never offers 127.0.0.1 (ENVIRONMENT.md); loopback-only tests need it
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])
    thread = BridgeThread(kiosk_settings)
    yield thread
    thread.stop()


class Client:
    """A kiosk as aiortc sees it: microphone and camera tracks, an offer, an answer."""

    def __init__(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(VideoStreamTrack())

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def connected(self) -> str:
        for _ in range(200):
            if self.pc.connectionState in ("connected", "failed"):
                break
            await asyncio.sleep(0.05)
        return str(self.pc.connectionState)

    async def close(self) -> None:
        await self.pc.close()


def session_keys(settings: Settings, session_id: str) -> list[str]:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        prefix = Keys(settings.redis.prefix).prefix
        found = [k.decode() for k in client.scan_iter(f"{prefix}:kiosk:*")
                 if session_id in k.decode()]
        return found
    finally:
        client.close()


# ---------------------------------------------------------------------------- auth


def test_a_page_without_a_kiosk_credential_cannot_start_a_session(
        kiosk_app: Flask, kc: FlaskClient, kiosk_settings: Settings) -> None:
    offer = {"sdp": "v=0\r\n", "category": "certificates"}
    wrong = f"Kiosk k01:{dev_secret(kiosk_settings, 'k02')}"
    for headers in ({}, {"Authorization": wrong}, {"Authorization": "Kiosk k99:abc"},
                    {"Authorization": "Bearer " + dev_secret(kiosk_settings, "k01")},
                    {"Authorization": "Kiosk k01:"}):
        resp = kc.post("/kiosk/api/session", json=offer, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.get_json()["code"] == "kiosk_credential"
        assert kc.post("/kiosk/api/hello", headers=headers).status_code == 401
        assert kc.post("/kiosk/api/heartbeat", json={}, headers=headers).status_code == 401
    # a signed-in console user is not a kiosk either
    assert len(audit_rows(kiosk_app, action="kiosk.auth", outcome="denied")) == 15
    # nothing was created
    client = redis.Redis.from_url(kiosk_settings.redis.url)
    try:
        assert list(client.scan_iter(f"{kiosk_settings.redis.prefix}:kiosk:*")) == []
    finally:
        client.close()
    # session endpoints need the session's token
    fake = "0" * 32
    assert kc.get(f"/kiosk/api/session/{fake}").status_code == 404
    assert kc.post(f"/kiosk/api/session/{fake}/hangup", json={}).status_code == 404
    assert kc.post(f"/kiosk/api/session/{fake}/still", data=JPEG).status_code == 404


def test_a_console_login_is_not_a_kiosk_credential(kc: FlaskClient, make_user: MakeUser,
                                                   kiosk_settings: Settings) -> None:
    make_user("op1", {"operator"})
    assert login(kc, "op1").status_code == 302
    resp = kc.post("/kiosk/api/session", json={"sdp": "v=0\r\n"})
    assert resp.status_code == 401


def test_production_kiosks_need_their_registered_hash(kiosk_settings: Settings) -> None:
    from argon2 import PasswordHasher

    from common.kiosk import verify_credential

    prod = settings_override(kiosk_settings, site={"env": "production"})
    # without a hash, the development credential does not work in production
    assert verify_credential(prod, f"k01:{dev_secret(prod, 'k01')}") is None
    hashed = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("s3cret-kiosk")
    kiosks = tuple(dataclasses.replace(k, credential_hash=hashed) if k.id == "k01" else k
                   for k in prod.kiosks)
    prod = dataclasses.replace(prod, kiosks=kiosks)
    kiosk = verify_credential(prod, "k01:s3cret-kiosk")
    assert isinstance(kiosk, Kiosk) and kiosk.id == "k01"
    assert verify_credential(prod, "k01:wrong") is None
    assert verify_credential(prod, "k02:s3cret-kiosk") is None


def test_the_page_keeps_nothing_and_sets_no_cookie(kc: FlaskClient) -> None:
    resp = kc.get("/kiosk/")
    assert resp.status_code == 200
    assert "Set-Cookie" not in resp.headers
    assert resp.headers["Cache-Control"] == "no-store"
    assert "connect-src 'self' http://127.0.0.1:47110" in resp.headers["Content-Security-Policy"]
    html = resp.get_data(as_text=True)
    config = json.loads(__import__("html").unescape(
        html.split('data-config="', 1)[1].split('"', 1)[0]))
    assert config["texts"]["ja"]["start"] == "ここを押して始める"
    assert config["texts"]["en"]["start"] == "Touch here to start"
    assert [c["id"] for c in config["categories"]][:2] == ["certificates", "moving"]
    assert config["ice_servers"] == []  # no public STUN by default
    for tag in html.split("<input")[1:]:
        assert 'autocomplete="off"' in tag.split(">")[0]


# ---------------------------------------------------------------------- bad input


def test_bad_input_gets_a_clear_error(kc: FlaskClient, kiosk_settings: Settings) -> None:
    h = auth(kiosk_settings)
    resp = kc.post("/kiosk/api/session", json={"sdp": "hello"}, headers=h)
    assert resp.status_code == 400 and resp.get_json()["code"] == "bad_offer"
    resp = kc.post("/kiosk/api/session", json={"sdp": "v=0\r\n", "category": "x"}, headers=h)
    assert resp.status_code == 400 and "unknown category" in resp.get_json()["error"]
    resp = kc.post("/kiosk/api/session", data="not json", headers=h)
    assert resp.status_code == 400
    resp = kc.post("/kiosk/api/survey", json={"score": 9}, headers={"X-Kiosk-Session": "x"})
    assert resp.status_code == 400 and resp.get_json()["code"] == "bad_score"
    resp = kc.post("/kiosk/api/survey", json={"score": 3}, headers={"X-Kiosk-Session": "x"})
    assert resp.status_code == 404 and resp.get_json()["code"] == "no_survey"


def test_no_bridge_running_is_a_clear_503_and_leaves_nothing(
        kiosk_app: Flask, kc: FlaskClient, kiosk_settings: Settings) -> None:
    resp = kc.post("/kiosk/api/session", json={"sdp": "v=0\r\nsome offer"},
                   headers=auth(kiosk_settings))
    assert resp.status_code == 503
    assert "kiosk_bridge" in resp.get_json()["error"]
    client = redis.Redis.from_url(kiosk_settings.redis.url)
    try:
        prefix = kiosk_settings.redis.prefix
        assert list(client.scan_iter(f"{prefix}:kiosk:*")) == []  # request withdrawn too
    finally:
        client.close()
    assert len(audit_rows(kiosk_app, action="kiosk.purge")) == 1


# ------------------------------------------------------------ lifecycle and purge


def test_a_session_is_purged_completely_at_hang_up(
        kiosk_app: Flask, kc: FlaskClient, kiosk_settings: Settings,
        bridge: BridgeThread) -> None:
    settings = kiosk_settings
    client = bridge.call(_make_client())
    try:
        offer = bridge.call(client.offer())
        resp = kc.post("/kiosk/api/session", json={"sdp": offer, "category": "moving"},
                       headers=auth(settings, "k02"))
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        sid, token = body["session"], body["token"]
        assert "Set-Cookie" not in resp.headers
        bridge.call(client.answer(body["sdp"]))
        assert bridge.call(client.connected()) == "connected"
        # the bridge asked ari_app for the audio leg
        cmds = redis.Redis.from_url(settings.redis.url).xrange(
            Keys(settings.redis.prefix).commands)
        start = decode(cmds[-1][1][b"c"])
        assert start.type == "cmd.kiosk.start"
        assert start.session_id == sid and start.kiosk == "k02"  # type: ignore[attr-defined]
        assert start.rtp_host == "127.0.0.1" and start.rtp_format == "slin"  # type: ignore[attr-defined]

        s = {"X-Kiosk-Session": token}
        state = kc.get(f"/kiosk/api/session/{sid}", headers=s).get_json()
        assert state["state"] == "connecting"
        # another kiosk's token does not open this session
        assert kc.get(f"/kiosk/api/session/{sid}",
                      headers={"X-Kiosk-Session": token[:-1] + "x"}).status_code == 404
        # the operator asks for a still; the page gets the request and uploads one
        kk = KioskKeys(Keys(settings.redis.prefix))
        rds = redis.Redis.from_url(settings.redis.url)
        rds.rpush(kk.requests(sid), "still")
        assert kc.get(f"/kiosk/api/session/{sid}", headers=s).get_json()["requests"] == \
            ["still"]
        resp = kc.post(f"/kiosk/api/session/{sid}/still", data=JPEG, headers=s,
                       content_type="image/jpeg")
        assert resp.status_code == 200
        assert kc.post(f"/kiosk/api/session/{sid}/still", data=b"GIF89a", headers=s,
                       content_type="image/gif").status_code == 400
        # card data (issue 6) and a temporary file of this session
        rds.hset(kk.card(sid), "name", "テスト 太郎")
        folder = session_dir(settings, sid)
        folder.mkdir(parents=True)
        (folder / "scan.tmp").write_bytes(b"x")
        rds.close()

        resp = kc.post(f"/kiosk/api/session/{sid}/hangup", json={"reason": "kiosk_hangup"},
                       headers=s)
        assert resp.status_code == 200
        assert resp.get_json()["survey"] is False  # nobody answered: no survey
        wait_until(lambda: sid not in bridge.bridge.sessions, 10, "bridge kept the session")
        assert session_keys(settings, sid) == []
        assert not folder.exists()
        assert kc.get(f"/kiosk/api/session/{sid}", headers=s).status_code == 404
        purges = [e for _i, body_ in read_events(redis.Redis.from_url(settings.redis.url),
                                                 Keys(settings.redis.prefix))
                  if (e := decode(body_)).type == "kiosk.purged"]
        assert len(purges) == 1  # web and the bridge both ended it: one purge
        purge = purges[0]
        assert isinstance(purge, KioskPurged)
        assert purge.rule == "kiosk_hangup" and purge.kiosk == "k02"
        assert set(purge.deleted) == {"stills:1", "card data", "temp files:1", "session state"}
        assert "テスト" not in json.dumps(purge.to_dict(), ensure_ascii=False)
        rows = audit_rows(kiosk_app, action="kiosk.purge")
        assert [(r.object_id, r.reason) for r in rows] == [(sid, "kiosk_hangup")]
        # the leg is ended in Asterisk too (the bridge and web both ask; either is enough)
        cmds = redis.Redis.from_url(settings.redis.url).xrange(
            Keys(settings.redis.prefix).commands)
        ends = [decode(c[b"c"]) for _i, c in cmds if b"cmd.kiosk.end" in c[b"c"]]
        assert ends and all(e.session_id == sid for e in ends)  # type: ignore[attr-defined]
    finally:
        bridge.call(client.close())


def test_network_loss_ends_and_purges_the_session(
        kc: FlaskClient, kiosk_settings: Settings, bridge: BridgeThread) -> None:
    client = bridge.call(_make_client())
    offer = bridge.call(client.offer())
    body = kc.post("/kiosk/api/session", json={"sdp": offer},
                   headers=auth(kiosk_settings, "k03")).get_json()
    sid = body["session"]
    bridge.call(client.answer(body["sdp"]))
    assert bridge.call(client.connected()) == "connected"
    bridge.call(client.close())  # the kiosk vanishes (no hang-up request)
    wait_until(lambda: sid not in bridge.bridge.sessions, 30, "session not ended")
    wait_until(lambda: session_keys(kiosk_settings, sid) == [], 10, "session not purged")


async def _make_client() -> Client:
    return Client()


# ------------------------------------------------------- nobody can answer, closed


def unavailable_session(settings: Settings, reason: str,
                        **fields: str) -> tuple[str, dict[str, str]]:
    """A session as ari_app leaves it when nobody can answer or the service is closed."""
    import hashlib

    sid, token = "d" * 32, "kiosk-token-of-a-session-nobody-can-answer-0123"
    rds = redis.Redis.from_url(settings.redis.url)
    kk = KioskKeys(Keys(settings.redis.prefix))
    rds.hset(kk.session(sid), mapping={
        "kiosk": "k01", "tenant": "city", "location": "中央公民館", "state": "unavailable",
        "unavailable": reason, "wait": "", "call_id": sid,
        "token": hashlib.sha256(token.encode()).hexdigest(), **fields})
    rds.set(kk.call_session(sid), sid)
    rds.set(kk.active("k01"), sid)
    rds.close()
    return sid, {"X-Kiosk-Session": token}


def test_nobody_can_answer_the_page_says_why_with_the_hours_and_the_citizen_may_wait(
        kiosk_app: Flask, kc: FlaskClient, kiosk_settings: Settings) -> None:
    sid, s = unavailable_session(kiosk_settings, "no_operator")
    state = kc.get(f"/kiosk/api/session/{sid}", headers=s).get_json()
    assert state["state"] == "unavailable" and state["reason"] == "no_operator"
    assert state["wait"] is False
    # the service's own hours (config/defaults.toml), as the phone's announcement says them
    assert state["hours"]["en"] == {"hours": "Opening hours: weekdays, 8:30 to 17:15 (closed "
                                    "on public holidays and the New Year holidays)",
                                    "next": ""}
    assert state["hours"]["ja"]["hours"] == \
        "受付時間：平日 8時30分～17時15分（祝日・年末年始を除く）"

    # the citizen waits: ari_app sees it in the session and queues the kiosk again
    assert kc.post(f"/kiosk/api/session/{sid}/wait", json={}).status_code == 404  # no token
    resp = kc.post(f"/kiosk/api/session/{sid}/wait", json={}, headers=s)
    assert resp.status_code == 200, resp.get_json()
    rds = redis.Redis.from_url(kiosk_settings.redis.url)
    kk = KioskKeys(Keys(kiosk_settings.redis.prefix))
    assert rds.hget(kk.session(sid), "wait") == b"1"
    assert kc.get(f"/kiosk/api/session/{sid}", headers=s).get_json()["wait"] is True
    # back in the queue: nothing to wait for
    rds.hset(kk.session(sid), mapping={"state": "queued", "unavailable": "", "wait": ""})
    resp = kc.post(f"/kiosk/api/session/{sid}/wait", json={}, headers=s)
    assert resp.status_code == 409 and resp.get_json()["code"] == "not_unavailable"
    assert "reason" not in kc.get(f"/kiosk/api/session/{sid}", headers=s).get_json()
    rds.hset(kk.session(sid), mapping={"state": "unavailable", "unavailable": "no_operator"})

    # or leaves: the ordinary end, the purge, no survey (nobody answered)
    resp = kc.post(f"/kiosk/api/session/{sid}/hangup", json={"reason": "kiosk_hangup"},
                   headers=s)
    assert resp.status_code == 200 and resp.get_json()["survey"] is False
    assert session_keys(kiosk_settings, sid) == []
    assert rds.get(kk.active("k01")) is None
    assert kc.get(f"/kiosk/api/session/{sid}", headers=s).status_code == 404
    assert [(r.object_id, r.reason) for r in audit_rows(kiosk_app, action="kiosk.purge")] == \
        [(sid, "kiosk_hangup")]
    ends = [decode(c[b"c"]) for _i, c in rds.xrange(Keys(kiosk_settings.redis.prefix).commands)
            if b"cmd.kiosk.end" in c[b"c"]]
    assert [e.session_id for e in ends] == [sid]  # type: ignore[attr-defined]
    rds.close()


def test_closed_the_page_gets_the_hours_and_the_next_opening_and_cannot_wait(
        kc: FlaskClient, kiosk_settings: Settings) -> None:
    sid, s = unavailable_session(kiosk_settings, "closed",
                                 next_open="2026-12-01T08:30:00+09:00")
    state = kc.get(f"/kiosk/api/session/{sid}", headers=s).get_json()
    assert state["reason"] == "closed"
    assert state["hours"]["en"]["next"] == "Next opening: Tue 1 Dec from 8:30."
    assert state["hours"]["ja"]["next"] == "次回の受付開始：12月1日（火）8時30分"
    resp = kc.post(f"/kiosk/api/session/{sid}/wait", json={}, headers=s)
    assert resp.status_code == 409 and resp.get_json()["code"] == "closed"
    assert kc.post(f"/kiosk/api/session/{sid}/hangup", json={"reason": "idle"},
                   headers=s).status_code == 200
    assert session_keys(kiosk_settings, sid) == []


def test_opening_hours_are_said_from_the_service_s_settings(kiosk_app: Flask) -> None:
    from common.settings import Service
    from web.kiosk_texts import hours_texts

    settings = resources(kiosk_app).settings
    day = Service(id="x", tenant="city", name="x", queue="x", lines=1, channel="kiosk",
                  open_days=("mon", "wed", "sat"), open_time="09:00", close_time="16:45",
                  closed_on_holidays=False, closed_dates=("08-15",))
    always = dataclasses.replace(day, open_days=("mon", "tue", "wed", "thu", "fri", "sat",
                                                 "sun"), open_time="00:00",
                                 close_time="24:00", closed_dates=())
    with kiosk_app.app_context():
        texts = hours_texts(settings, day, "")
        assert texts["en"]["hours"] == "Opening hours: Mon, Wed, Sat, 9:00 to 16:45 (closed " \
            "on 15/8)"
        assert texts["ja"]["hours"] == "受付時間：月・水・土曜日 9時～16時45分（8月15日を除く）"
        assert hours_texts(settings, always, "")["ja"]["hours"] == "受付時間：毎日 24時間"
        assert hours_texts(settings, always, "")["en"]["hours"] == \
            "Opening hours: every day, 24 hours"


# ------------------------------------------------------------------------ fleet


def test_fleet_heartbeat_alarms_and_remote_actions(
        kiosk_app: Flask, kc: FlaskClient, kiosk_settings: Settings,
        make_user: MakeUser) -> None:
    devices = {"camera": "ok", "document_camera": "ok", "microphone": "ok", "speaker": "ok",
               "card_reader": "missing", "keypad": "unknown"}
    resp = kc.post("/kiosk/api/heartbeat", headers=auth(kiosk_settings, "k01"), json={
        "version": "1", "devices": devices, "rtt_ms": 12, "last_error": "still: timeout",
        "screen": "welcome"})
    assert resp.get_json() == {"ok": True, "actions": []}

    admin = kiosk_app.test_client()
    make_user("admin", {"administrator"})
    assert login(admin, "admin").status_code == 302
    status = admin.get("/kiosk-fleet/status.json").get_json()["kiosks"]
    assert len(status) == 8
    by_id = {k["id"]: k for k in status}
    assert by_id["k01"]["alarms"] == ["device:card_reader"]
    assert by_id["k01"]["errors"][0]["error"] == "still: timeout"
    assert by_id["k02"]["alarms"] == ["offline"]
    page = admin.get("/kiosk-fleet/").get_data(as_text=True)
    assert "窓口端末の状態" in page and 'data-alarm="device:card_reader"' in page
    assert "カードリーダー：動作していません" in page and "応答なし（オフライン）" in page

    token = csrf(admin, "/kiosk-fleet/")
    assert admin.post("/kiosk-fleet/k01/action", data={"action": "collect_log",
                                                       "csrf_token": token}).status_code == 302
    assert admin.post("/kiosk-fleet/k01/action", data={"action": "format_disk",
                                                       "csrf_token": token}).status_code == 400
    resp = kc.post("/kiosk/api/heartbeat", headers=auth(kiosk_settings, "k01"), json={})
    assert resp.get_json()["actions"] == ["collect_log"]
    kc.post("/kiosk/api/diagnostics", headers=auth(kiosk_settings, "k01"),
            json={"log": ["2026-11-25T10:00:00Z connection failed"]})
    log = admin.get("/kiosk-fleet/k01/log")
    assert log.status_code == 200 and "connection failed" in log.get_data(as_text=True)
    assert [r.action for r in audit_rows(kiosk_app, object_type="kiosk", outcome="ok")] == \
        ["kiosk.collect_log", "kiosk.log_view"]

    operator = kiosk_app.test_client()
    make_user("op1", {"operator"})
    assert login(operator, "op1").status_code == 302
    assert operator.get("/kiosk-fleet/").status_code == 403


def test_still_size_limit(kc: FlaskClient, kiosk_settings: Settings,
                          bridge: BridgeThread) -> None:
    client = bridge.call(_make_client())
    try:
        offer = bridge.call(client.offer())
        body = kc.post("/kiosk/api/session", json={"sdp": offer},
                       headers=auth(kiosk_settings, "k04")).get_json()
        big = io.BytesIO(b"\xff\xd8" + b"\0" * (kiosk_settings.kiosk.still_max_bytes + 1))
        resp = kc.post(f"/kiosk/api/session/{body['session']}/still", data=big.getvalue(),
                       headers={"X-Kiosk-Session": body["token"]})
        assert resp.status_code == 413
    finally:
        bridge.call(client.close())


def test_only_the_answering_operator_staff_and_supervisors_see_a_kiosk_call(
        kiosk_app: Flask, kiosk_settings: Settings, make_user: MakeUser) -> None:
    rds = redis.Redis.from_url(kiosk_settings.redis.url)
    kk = KioskKeys(Keys(kiosk_settings.redis.prefix))
    sid = "a" * 32
    rds.hset(kk.session(sid), mapping={"kiosk": "k01", "tenant": "city", "agent": "op01",
                                       "call_id": sid, "token": "x"})
    rds.set(kk.call_session(sid), sid)
    rds.hset(kk.stills(sid), "s1", JPEG)
    make_user("op1", {"operator"}, sip_endpoint="op01")
    make_user("op2", {"operator"}, sip_endpoint="op02")
    make_user("sup", {"supervisor"}, sip_endpoint=None)
    make_user("town-sup", {"supervisor"}, tenant_id="town", sip_endpoint=None)
    # staff: only the member the call was transferred to
    make_user("koseki", {"staff"}, sip_endpoint=None, extension="2001")
    make_user("zeimu", {"staff"}, sip_endpoint=None, extension="2002")
    add_call(kiosk_app, sid, agent="op01")
    add_transfer(kiosk_app, sid, target="2001")
    expected = {"op1": 200, "op2": 403, "sup": 200, "town-sup": 404, "koseki": 200,
                "zeimu": 403}
    for name, status in expected.items():
        c = kiosk_app.test_client()
        assert login(c, name).status_code == 302
        assert c.get(f"/console/kiosk/{sid}/stills").status_code == status, name
        resp = c.get(f"/console/kiosk/{sid}/stills/s1")
        assert resp.status_code == status, name
        if status == 200:
            assert resp.data == JPEG and resp.mimetype == "image/jpeg"
            assert "no-store" in resp.headers["Cache-Control"]
    views = audit_rows(kiosk_app, action="kiosk_still.view")
    assert [r.actor for r in views] == ["op1", "sup", "koseki"]
    denied = audit_rows(kiosk_app, action="kiosk_session.view", outcome="denied")
    assert [r.actor for r in denied] == ["op2", "op2", "zeimu", "zeimu"]
    # the operator asks for a still: it waits for the kiosk page's next poll
    c = kiosk_app.test_client()
    login(c, "op1")
    token = csrf(c, "/operator/")
    assert c.post(f"/console/kiosk/{sid}/still-request",
                  headers={"X-CSRF-Token": token}).status_code == 200
    assert rds.lrange(kk.requests(sid), 0, -1) == [b"still"]
    assert c.post(f"/console/kiosk/{sid}/still-request").status_code == 400  # CSRF
    rds.close()
