from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from common.health import COMPONENTS, write_heartbeat
from common.keys import Keys
from common.settings import Settings, settings_override
from tests.web.conftest import RQ_STATE_DEPRECATION, make_everything_healthy
from web import create_app
from web.db import resources
from web.health import scrub


def test_health_json_degraded_without_processes(client: FlaskClient) -> None:
    resp = client.get("/health.json")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "degraded"
    assert set(body["components"]) == set(COMPONENTS)
    assert body["components"]["redis"] == {"ok": True, "state": "ok", "detail": "PONG"}
    assert body["components"]["database"]["ok"] is True
    assert body["components"]["ari_app"]["ok"] is False
    assert body["components"]["ari_app"]["state"] == "down"


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_health_json_ok_when_everything_reports(client: FlaskClient, settings: Settings) -> None:
    make_everything_healthy(settings)
    resp = client.get("/health.json")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["status"] == "ok"
    assert all(c["ok"] and c["state"] == "ok" for c in body["components"].values())


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_health_page_is_japanese_and_public(client: FlaskClient, settings: Settings) -> None:
    make_everything_healthy(settings)
    resp = client.get("/health")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert '<html lang="ja">' in page
    assert "システムの状態" in page
    assert "すべての構成要素が正常に動作しています。" in page


def test_health_page_in_english(client: FlaskClient) -> None:
    resp = client.get("/health?lang=en")
    assert resp.status_code == 503
    page = resp.get_data(as_text=True)
    assert '<html lang="en">' in page
    assert "Some components are not working." in page
    # the choice sticks for the session
    assert '<html lang="en">' in client.get("/health").get_data(as_text=True)


def test_health_without_redis_is_an_answer_not_a_crash(settings: Settings) -> None:
    dead = settings_override(settings, redis={"url": "redis://127.0.0.1:1/0"})
    app: Flask = create_app({"TESTING": True}, settings=dead)
    try:
        resp = app.test_client().get("/health.json")
        assert resp.status_code == 503
        body = resp.get_json()
        assert body["components"]["redis"]["ok"] is False
        assert body["components"]["database"]["ok"] is True
        page = app.test_client().get("/health")
        assert page.status_code == 503
    finally:
        resources(app).engine.dispose()


def test_scrub_hides_credentials() -> None:
    text = scrub("cannot connect to postgresql://mado:s3cret@db:5432/x password=hunter2")
    assert "s3cret" not in text and "hunter2" not in text
    assert "postgresql://***@db:5432/x" in text
    assert len(scrub("x" * 1000)) <= 200


def test_security_headers_on_health(client: FlaskClient) -> None:
    resp = client.get("/health")
    csp = resp.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"



@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_transcriber_without_model_is_a_clear_problem_with_the_fix(
        client: FlaskClient, settings: Settings) -> None:
    """The heartbeat the transcriber writes when its model folder is missing
    (tests/transcription/test_transcriber.py checks the real process writes it)."""
    import redis

    from common.health import write_heartbeat
    from common.keys import Keys

    make_everything_healthy(settings)
    r = redis.Redis.from_url(settings.redis.url)
    write_heartbeat(r, Keys(settings.redis.prefix), "transcriber", "test", {
        "state": "unavailable", "problem": "not_found",
        "model_path": "/opt/models/vosk-model-small-ja-0.22",
        "detail": "speech model folder /opt/models/vosk-model-small-ja-0.22 does not exist"},
        ttl=60)
    r.close()
    resp = client.get("/health.json")
    assert resp.status_code == 503
    body = resp.get_json()
    tx = body["components"]["transcriber"]
    assert tx["ok"] is False and tx["state"] == "down"
    assert tx["detail"].startswith(
        "speech model missing: /opt/models/vosk-model-small-ja-0.22 does not exist. "
        "Fix: set transcription.model_path to an unpacked Vosk model folder")
    assert all(c["ok"] for n, c in body["components"].items() if n != "transcriber")
    page = client.get("/health").get_data(as_text=True)
    assert "音声認識（文字起こし）" in page and "speech model missing" in page


# ------------------------------------------------------- optional parts left off

AppWith = Callable[..., FlaskClient]


@pytest.fixture
def app_with(web_settings: Settings) -> Iterator[AppWith]:
    """A client of an app built on the web test settings with some sections replaced
    (``kiosks=...`` replaces the registered kiosks)."""
    apps: list[Flask] = []

    def make(kiosks: tuple[Any, ...] | None = None, **sections: Any) -> FlaskClient:
        settings = settings_override(web_settings, **sections)
        if kiosks is not None:
            settings = dataclasses.replace(settings, kiosks=kiosks)
        app = create_app({"TESTING": True}, settings=settings)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        res = resources(app)
        res.session.remove()
        res.engine.dispose()
        res.redis.close()


def _heartbeat(settings: Settings, component: str, fields: dict[str, str] | None) -> None:
    """Write the heartbeat ``component`` writes (as its tests check), or remove it."""
    r = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.prefix)
    if fields is None:
        r.delete(keys.health(component, "test"))
    else:
        write_heartbeat(r, keys, component, "test", fields, ttl=60)
    r.close()


def _row(page: str, component: str) -> str:
    match = re.search(rf'<span class="code" translate="no">{component}</span></th>(.*?)</tr>',
                      page, re.S)
    assert match, f"no row for {component}"
    return match.group(1)


NO_MODEL_BEAT = {"state": "unavailable", "problem": "not_configured", "model_path": "",
                 "detail": "no speech model configured: set transcription.model_path"}


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
@pytest.mark.parametrize("beat", [None, NO_MODEL_BEAT], ids=["not-running", "running"])
def test_transcriber_without_model_is_not_configured_not_a_failure(
        client: FlaskClient, settings: Settings, beat: dict[str, str] | None) -> None:
    """No transcription.model_path (the test settings' default): whether the transcriber
    runs without a model or does not run, it is "not configured" and /health is 200."""
    make_everything_healthy(settings)
    _heartbeat(settings, "transcriber", beat)
    resp = client.get("/health.json")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["status"] == "ok"
    tx = body["components"]["transcriber"]
    assert tx["state"] == "not_configured" and tx["ok"] is True
    assert tx["detail"].startswith(
        "not configured: transcription.model_path is not set. To turn it on: set "
        "transcription.model_path to an unpacked Vosk model folder"), tx["detail"]
    assert all(c["state"] == "ok" for n, c in body["components"].items() if n != "transcriber")

    resp = client.get("/health?lang=en")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "All configured components are working." in page
    row = _row(page, "transcriber")
    assert '<span class="badge off" data-state="not_configured">Not configured</span>' in row
    assert "badge bad" not in row
    assert "To turn it on, set this setting to the folder of an unpacked speech model" in row
    assert "<code>transcription.model_path</code>" in row
    assert 'class="badge bad"' not in page
    japanese = _row(client.get("/health?lang=ja").get_data(as_text=True), "transcriber")
    assert "未設定" in japanese and "音声認識モデルのフォルダー" in japanese


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_transcription_turned_off_is_not_configured(settings: Settings,
                                                   app_with: AppWith) -> None:
    client = app_with(transcription={"enabled": False, "model_path": "/opt/models/x"})
    make_everything_healthy(settings)
    _heartbeat(settings, "transcriber", None)
    resp = client.get("/health.json")
    assert resp.status_code == 200, resp.get_json()
    tx = resp.get_json()["components"]["transcriber"]
    assert tx["state"] == "not_configured"
    assert tx["detail"].startswith("not configured: transcription.enabled is false")


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_transcriber_with_missing_model_folder_is_a_failure(
        settings: Settings, app_with: AppWith, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    client = app_with(transcription={"model_path": missing})
    make_everything_healthy(settings)
    # the heartbeat the transcriber writes for this path (tests/transcription checks it)
    _heartbeat(settings, "transcriber", {
        "state": "unavailable", "problem": "not_found", "model_path": missing,
        "detail": f"speech model folder {missing} does not exist"})
    resp = client.get("/health.json")
    body = resp.get_json()
    assert resp.status_code == 503, body
    assert body["status"] == "degraded"
    tx = body["components"]["transcriber"]
    assert tx["state"] == "down" and tx["ok"] is False
    assert tx["detail"].startswith(f"speech model missing: {missing} does not exist. Fix:")
    row = _row(client.get("/health?lang=en").get_data(as_text=True), "transcriber")
    assert 'class="badge bad"' in row and "Down" in row


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_transcriber_not_running_with_a_model_configured_is_a_failure(
        settings: Settings, app_with: AppWith, tmp_path: Path) -> None:
    client = app_with(transcription={"model_path": str(tmp_path)})
    make_everything_healthy(settings)
    _heartbeat(settings, "transcriber", None)
    resp = client.get("/health.json")
    assert resp.status_code == 503
    tx = resp.get_json()["components"]["transcriber"]
    assert tx == {"ok": False, "state": "down", "detail": "not running (no heartbeat): calls "
                  "are not transcribed. Fix: start python -m transcriber.main (make run)"}
    # running without the model the settings name: its environment differs, a failure
    _heartbeat(settings, "transcriber", NO_MODEL_BEAT)
    resp = client.get("/health.json")
    assert resp.status_code == 503
    tx = resp.get_json()["components"]["transcriber"]
    assert tx["state"] == "down" and str(tmp_path) in tx["detail"]


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_kiosk_bridge_without_kiosks_is_not_configured(settings: Settings,
                                                      app_with: AppWith) -> None:
    client = app_with(kiosks=())
    make_everything_healthy(settings)
    _heartbeat(settings, "kiosk_bridge", None)
    resp = client.get("/health.json")
    body = resp.get_json()
    assert resp.status_code == 200, body
    bridge = body["components"]["kiosk_bridge"]
    assert bridge["state"] == "not_configured" and bridge["ok"] is True
    assert "no kiosks are registered" in bridge["detail"]
    row = _row(client.get("/health?lang=en").get_data(as_text=True), "kiosk_bridge")
    assert "Not configured" in row and "badge bad" not in row
    # a bridge that runs anyway is simply up
    _heartbeat(settings, "kiosk_bridge", {"peers": "0"})
    assert client.get("/health.json").get_json()["components"]["kiosk_bridge"]["state"] == "ok"


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_kiosk_bridge_not_running_with_kiosks_is_a_failure(client: FlaskClient,
                                                          settings: Settings) -> None:
    make_everything_healthy(settings)
    _heartbeat(settings, "kiosk_bridge", None)
    resp = client.get("/health.json")
    assert resp.status_code == 503
    assert resp.get_json()["components"]["kiosk_bridge"] == {
        "ok": False, "state": "down", "detail": "not running (no heartbeat)"}


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_rtp_ports_running_out_are_an_alarm(client: FlaskClient, settings: Settings) -> None:
    make_everything_healthy(settings)
    body = client.get("/health.json").get_json()
    assert body["components"]["rtp"] == {"ok": True, "state": "ok",
                                         "detail": "4 of 10000 ports in use (0 %)"}
    rds = redis.Redis.from_url(settings.redis.url)
    beat = {"asterisk": "up", "ari": "up", "ami": "up", "rtp_in_use": "8400",
            "rtp_ports": "10000"}
    write_heartbeat(rds, Keys(settings.redis.prefix), "ari_app", "test", beat, ttl=60)
    resp = client.get("/health.json")
    rtp = resp.get_json()["components"]["rtp"]
    assert resp.status_code == 503 and rtp["state"] == "down"
    assert rtp["detail"].startswith("8400 of 10000 ports in use (84 %): running out")
    # not counted yet (ARI not connected since ari_app started): unknown, not fine
    write_heartbeat(rds, Keys(settings.redis.prefix), "ari_app", "test",
                    {"asterisk": "up", "ari": "down", "ami": "up"}, ttl=60)
    assert client.get("/health.json").get_json()["components"]["rtp"]["detail"].startswith(
        "unknown: not counted yet")
    rds.close()
