"""What ``make run`` prints, and when: where to point a browser, softphones and a kiosk,
once Asterisk, ARI and AMI are really connected."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import redis

from common.db import init_schema, make_engine
from common.kiosk import dev_secret
from common.settings import Settings, load_settings, settings_override
from stack.run import banner, not_ready, wait_ready
from tests.conftest import free_port
from tests.web.conftest import make_everything_healthy


def test_the_banner_names_a_working_kiosk_url_and_the_missing_model(tmp_path: Path) -> None:
    settings = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    text = banner(settings, None)
    kiosk = settings.kiosks[0]
    url = (f"http://{settings.web.bind}:{settings.web.port}/kiosk/#{kiosk.id}:"
           f"{dev_secret(settings, kiosk.id)}")
    assert url in text
    assert "transcription.model_path" in text
    assert f"http://{settings.web.bind}:{settings.web.port}/" in text


def test_a_configured_model_is_not_reported_missing(tmp_path: Path) -> None:
    settings = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
                              "MADOGUCHI_TRANSCRIPTION__MODEL_PATH": str(tmp_path / "model")})
    text = banner(settings, None)
    assert "transcription.model_path" not in text
    assert "/kiosk/#" in text


def ready_check(settings: Settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis.url)
    engine = make_engine(settings.database_url)
    try:
        return not_ready(settings, client, engine)
    finally:
        client.close()
        engine.dispose()


def test_make_run_says_it_is_running_only_when_asterisk_ari_and_ami_are_connected(
        settings: Settings) -> None:
    """Real Redis and database: with no ari_app heartbeat (nothing connected to Asterisk)
    and no web listening, every part is named; once ari_app reports Asterisk, ARI and AMI
    up and the web answers (503 is an answer), nothing is pending."""
    engine = make_engine(settings.database_url)
    try:
        init_schema(engine)
    finally:
        engine.dispose()
    port = free_port()
    settings = settings_override(settings, web={"bind": "127.0.0.1", "port": port})
    pending = ready_check(settings)
    assert {p.split(":")[0] for p in pending} == {"asterisk", "ari", "ami", "ari_app", "web"}
    text = banner(settings, None, pending=pending)
    assert "NOT READY  ari_app:" in text and "is running" not in text

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(503)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            """No request log on the test's output."""

    server = HTTPServer(("127.0.0.1", port), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        make_everything_healthy(settings)
        assert ready_check(settings) == []
        ticks: list[int] = []
        assert wait_ready(settings, lambda: ticks.append(1), timeout=5) == []
        text = banner(settings, None, users="development users (tenant city):\n"
                      "  operator       user operator       password: pw-1\n")
        assert "Asterisk, ARI and AMI are connected" in text and "NOT READY" not in text
        assert "user operator       password: pw-1" in text
        assert "make phones" in text and "make kiosk-url KIOSK=" in text
        assert "make test-call" in text and "python -m" not in text
    finally:
        server.shutdown()
        server.server_close()
