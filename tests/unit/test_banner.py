"""What ``make run`` prints: where to point a browser, softphones and a kiosk."""

from __future__ import annotations

from pathlib import Path

from common.kiosk import dev_secret
from common.settings import load_settings
from stack.run import banner


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
