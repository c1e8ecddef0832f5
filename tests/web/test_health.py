from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from common.health import COMPONENTS
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
    assert body["components"]["redis"] == {"ok": True, "detail": "PONG"}
    assert body["components"]["database"]["ok"] is True
    assert body["components"]["ari_app"]["ok"] is False


@pytest.mark.filterwarnings(RQ_STATE_DEPRECATION)
def test_health_json_ok_when_everything_reports(client: FlaskClient, settings: Settings) -> None:
    make_everything_healthy(settings)
    resp = client.get("/health.json")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["status"] == "ok"
    assert all(c["ok"] for c in body["components"].values())


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
    assert tx["ok"] is False
    assert tx["detail"].startswith(
        "speech model missing: /opt/models/vosk-model-small-ja-0.22 does not exist. "
        "Fix: set transcription.model_path to an unpacked Vosk model folder")
    assert all(c["ok"] for n, c in body["components"].items() if n != "transcriber")
    page = client.get("/health").get_data(as_text=True)
    assert "音声認識（文字起こし）" in page and "speech model missing" in page


def test_transcriber_not_running_is_shown(client: FlaskClient) -> None:
    body = client.get("/health.json").get_json()
    tx = body["components"]["transcriber"]
    assert tx == {"ok": False, "detail": "not running (no heartbeat): calls are not "
                  "transcribed. Fix: start python -m transcriber.main (make run)"}
