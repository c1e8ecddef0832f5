"""Decoder settings (transcription.max_active, beam, lattice_beam) applied to a real Vosk
model: a folder of links with its own conf/model.conf; the model folder is never
written; the tuned model loads and recognizes speech."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tests.transcription.speech import CALLER_LINES, say, silence
from transcriber.model import decoder_options, load_model, tuned_folder


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
            for p in folder.rglob("*") if p.is_file()}


def test_decoder_overrides_make_a_linked_folder_and_leave_the_model_alone(
        test_model: Path, tmp_path: Path) -> None:
    before = snapshot(test_model)
    own = decoder_options(test_model)
    assert own == {"max-active": "3000", "beam": "10.0", "lattice-beam": "2.0"}
    # nothing to change: the model folder itself
    assert tuned_folder(test_model, {"max-active": "3000", "beam": ""}, tmp_path) == test_model
    assert list(tmp_path.iterdir()) == []

    tuned = tuned_folder(test_model, {"max-active": "1000", "beam": "8", "lattice-beam": ""},
                         tmp_path)
    assert tuned.parent == tmp_path and tuned != test_model
    assert decoder_options(tuned) == {"max-active": "1000", "beam": "8", "lattice-beam": "2.0"}
    conf = (tuned / "conf" / "model.conf").read_text().splitlines()
    original = (test_model / "conf" / "model.conf").read_text().splitlines()
    assert [ln for ln in original if "active" not in ln and "--beam" not in ln] == \
        [ln for ln in conf if "active" not in ln and "--beam" not in ln]
    assert not (tuned / "conf" / "model.conf").is_symlink()
    for name in ("am", "graph", "ivector", "conf/mfcc.conf"):
        assert (tuned / name).is_symlink(), name
        assert os.path.realpath(tuned / name) == os.path.realpath(test_model / name)
    # made once, then found again
    assert tuned_folder(test_model, {"max-active": "1000", "beam": "8"}, tmp_path) == tuned
    assert len(list(tmp_path.iterdir())) == 1
    assert snapshot(test_model) == before


def test_the_tuned_model_loads_and_recognizes(test_model: Path, tmp_path: Path) -> None:
    import vosk

    model = load_model(str(test_model), {"max-active": "1000", "beam": "8"}, tmp_path)
    audio = np.concatenate([say(CALLER_LINES[0]), silence(1.0)]).astype("<i2").tobytes()
    rec = vosk.KaldiRecognizer(model, 16000)
    for i in range(0, len(audio), 3200):
        rec.AcceptWaveform(audio[i:i + 3200])
    assert json.loads(rec.FinalResult())["text"].strip()


def test_an_unwritable_cache_falls_back_to_the_models_own_options(
        test_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="transcriber.model"):
        model = load_model(str(test_model), {"max-active": "1000"}, blocked / "cache")
    assert model is not None
    assert "decoder settings not applied" in caplog.text and "model's own" in caplog.text
