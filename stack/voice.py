"""Synthesise the Japanese prompts and Asterisk's Japanese sound files with Open JTalk.

Every prompt's ``ja`` text and every ``[words]`` entry of config/prompts.toml is spoken
by pyopenjtalk-plus (its dictionary and the "mei" voice ship in the wheel, 48 kHz),
trimmed, low-pass filtered and decimated to 16 kHz (``.sln16``) and 8 kHz (``.sln``),
the signed linear formats Asterisk plays natively (it picks the one its channel needs
least translation for). A manifest keeps one hash per file (text, voice, processing),
so a build regenerates only what changed and removes what is no longer listed.

    python -m stack.voice build       # at setup; a no-op when nothing changed

Layout of the build folder (``.cache/voice``): ``prompts/<name>.sln16``,
``words/<asterisk name>.sln16`` (e.g. ``words/digits/3.sln16``), ``manifest.json``; the
texts said per service (common.prompts: out_of_hours with each service's hours) in
``said/<hash of the text>.sln16``, kept across builds, so instances of different
settings sharing the folder never take each other's files away.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from common.prompts import PROMPTS_FILE, load_catalogue, plain_text, said_name, service_texts
from common.settings import PROJECT_ROOT, Service

BUILD_DIR = PROJECT_ROOT / ".cache" / "voice"
MANIFEST = "manifest.json"
#: extension -> sample rate of the files written for each text
FORMATS = {"sln16": 16000, "sln": 8000}
#: bump when the processing below changes what a text sounds like
PROCESSING = 1
VOICE_KEYS = ("speed", "half_tone")
# silence kept around the speech after trimming (seconds): prompts start after a breath,
# words (pieces Asterisk joins into a sentence) tightly; the end follows the punctuation
LEAD = {"prompt": 0.05, "word": 0.01}
TAIL = {"。": 0.35, "、": 0.15}
TAIL_DEFAULT = {"prompt": 0.25, "word": 0.03}
TRIM_DB = -45.0  # below the loudest sample: silence
LEVEL_DBFS = -18.0  # speech level of every file
PEAK_MAX = 0.9  # and no sample above -0.9 dBFS
POOL_MIN_ITEMS = 8  # texts per worker process worth its start-up (about 0.5 s)

Synthesizer = Callable[[str, dict[str, float]], tuple[np.ndarray, int]]


class VoiceUnavailable(Exception):
    """The prompts cannot be synthesised here; the message says what is missing."""


@dataclass(frozen=True)
class Item:
    """One text to synthesise into ``<build>/<path>.<ext>`` for every format."""

    path: str  # prompts/<name> or words/<asterisk sound name>
    text: str
    kind: str  # prompt | word


@dataclass
class BuildReport:
    out: Path
    generated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"voice: {len(self.generated)} generated, {len(self.kept)} unchanged, "
                f"{len(self.removed)} removed in {self.seconds:.1f} s ({self.out})")


def items(catalogue_file: Path = PROMPTS_FILE, services: tuple[Service, ...] = ()
          ) -> tuple[list[Item], dict[str, float]]:
    """What prompts.toml asks for (and, for ``services``, what is said per service),
    and the voice to say it with."""
    cat = load_catalogue(catalogue_file)
    unknown = set(cat.voice) - set(VOICE_KEYS)
    if unknown:
        raise ValueError(f"{catalogue_file}: [voice] knows {', '.join(VOICE_KEYS)}, "
                         f"not {', '.join(sorted(unknown))}")
    out = [Item(f"prompts/{name}", plain_text(spec["ja"]), "prompt")
           for name, spec in cat.prompts.items()]
    out += [Item(f"words/{name}", text, "word") for name, text in cat.words.items()]
    said = {said_name(text): text for text in service_texts(cat.prompts, services).values()}
    out += [Item(path, text, "prompt") for path, text in sorted(said.items())]
    return out, cat.voice


def engine_version() -> str:
    try:
        return f"pyopenjtalk-plus {metadata.version('pyopenjtalk-plus')}"
    except metadata.PackageNotFoundError as exc:
        raise VoiceUnavailable("pyopenjtalk-plus is not installed: run scripts/setup.sh "
                               "(it installs the pinned dependencies of pyproject.toml)") from exc


def openjtalk(text: str, voice: dict[str, float]) -> tuple[np.ndarray, int]:
    """pyopenjtalk.tts: a float waveform (16-bit scale) and its sample rate."""
    # pyopenjtalk-plus prints a notice about its optional ONNX model on import
    with contextlib.redirect_stdout(io.StringIO()):
        import pyopenjtalk
    with warnings.catch_warnings():
        # its reading of some kanji (外, ...) calls SudachiPy's Dictionary.create(),
        # which that library has deprecated: a notice about the engine, not about us
        warnings.filterwarnings("ignore", "Dictionary.create", DeprecationWarning)
        wave, rate = pyopenjtalk.tts(text, speed=voice.get("speed", 1.0),
                                     half_tone=voice.get("half_tone", 0.0),
                                     predict_nani=False)
    return np.asarray(wave, dtype=np.float64), int(rate)


def item_hash(item: Item, voice: dict[str, float], engine: str) -> str:
    key = {"text": item.text, "kind": item.kind, "voice": voice, "engine": engine,
           "processing": PROCESSING, "formats": FORMATS}
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False)
                          .encode()).hexdigest()


def lowpass(taps: int, cutoff: float, rate: int, attenuation_db: float = 80.0) -> np.ndarray:
    """A linear-phase windowed-sinc (Kaiser) low-pass filter with unity gain at DC."""
    beta = 0.1102 * (attenuation_db - 8.7)
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff / rate * np.sinc(2 * cutoff / rate * n) * np.kaiser(taps, beta)
    return np.asarray(h / h.sum())


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Decimate by the whole factor ``rate / target``: first a low-pass filter that passes
    90 % of the new band and stops (80 dB) at its Nyquist frequency, so nothing folds back
    into the speech; then every n-th sample. The filter runs as an FFT convolution."""
    if target == rate:
        return wave
    if rate % target:
        raise ValueError(f"cannot decimate {rate} Hz to {target} Hz by a whole factor")
    factor = rate // target
    nyquist = target / 2
    width = 0.1 * nyquist  # transition band below the new Nyquist frequency
    taps = int(np.ceil((80.0 - 8) / (2.285 * 2 * np.pi * width / rate))) | 1
    h = lowpass(taps, nyquist - width / 2, rate)
    n = wave.size + taps - 1
    size = 1 << (n - 1).bit_length()
    filtered = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(h, size), size)
    # linear phase: the filter delays by (taps - 1) / 2 samples
    return np.asarray(filtered[taps // 2:taps // 2 + wave.size:factor])


def speech_level(x: np.ndarray, rate: int) -> float:
    """The level of the speech itself (dBFS): the RMS of the 20 ms frames within 30 dB of
    the loudest one, so pauses do not lower it and short words compare with sentences."""
    frame = max(1, int(0.02 * rate))
    frames = x[:x.size // frame * frame].reshape(-1, frame)
    if not frames.size:
        frames = x.reshape(1, -1)
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    voiced = frames[energy >= energy.max() * 10 ** (-30 / 20)]
    return float(20 * np.log10(np.sqrt(np.mean(voiced ** 2))))


def shape(wave: np.ndarray, rate: int, item: Item) -> np.ndarray:
    """Scale to [-1, 1], trim the synthesiser's silence, bring the speech to one level
    (Asterisk joins words and numbers into sentences: none may stand out) and keep a
    pause that fits the text (a piece of a sentence joins its neighbours closely)."""
    x = wave / 32768.0
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        raise ValueError(f"{item.path}: the synthesiser returned silence for {item.text!r}")
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (TRIM_DB / 20))
    x = x[loud[0]:loud[-1] + 1]
    gain = 10 ** ((LEVEL_DBFS - speech_level(x, rate)) / 20)
    x = x * min(gain, PEAK_MAX / peak)
    lead = LEAD[item.kind]
    tail = TAIL.get(item.text[-1], TAIL_DEFAULT[item.kind])
    return np.concatenate([np.zeros(int(lead * rate)), x, np.zeros(int(tail * rate))])


def encode(wave: np.ndarray) -> bytes:
    """Signed linear 16-bit, little-endian (Asterisk's slin on this machine)."""
    return np.asarray(np.clip(np.round(wave * 32767), -32768, 32767), dtype="<i2").tobytes()


def _write(path: Path, data: bytes) -> None:
    """Atomically: a running Asterisk (or a hard link to the old file) never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (make run and a test run)
        yield


def _outputs(out: Path, path: str) -> list[Path]:
    return [out / f"{path}.{ext}" for ext in FORMATS]


def speak(item: Item, voice: dict[str, float],
          synthesize: Synthesizer = openjtalk) -> dict[str, bytes]:
    """One text in every format: extension -> the file's bytes."""
    wave, rate = synthesize(item.text, voice)
    shaped = shape(wave, rate, item)
    return {ext: encode(resample(shaped, rate, target)) for ext, target in FORMATS.items()}


def _speak_all(todo: list[Item], voice: dict[str, float], synthesize: Synthesizer | None,
               workers: int) -> Iterator[tuple[Item, dict[str, bytes]]]:
    """Open JTalk's engine is one per process (behind a lock): with ``workers`` the texts
    are spoken in that many fresh processes (spawned: no fork of a process that may run
    threads; the caller's main module must be importable, as ``python -m`` makes it)."""
    workers = min(workers, len(todo) // POOL_MIN_ITEMS)
    if synthesize is not None or workers < 2:
        for item in todo:
            yield item, speak(item, voice, synthesize or openjtalk)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from zip(todo, pool.map(speak, todo, [voice] * len(todo), chunksize=4),
                       strict=True)


def build(out: Path = BUILD_DIR, catalogue_file: Path = PROMPTS_FILE,
          synthesize: Synthesizer | None = None, workers: int = 1,
          services: tuple[Service, ...] = ()) -> BuildReport:
    """Bring ``out`` up to date with prompts.toml (and the per-service texts of
    ``services``): synthesise the texts whose hash changed (or whose files are missing),
    remove the files of catalogue texts no longer listed.
    ``workers``: processes to speak in when there is much to do (the full build at
    setup: ``python -m stack.voice build`` uses every core)."""
    started = time.monotonic()
    wanted, voice = items(catalogue_file, services)
    engine = engine_version()
    report = BuildReport(out)
    with _locked(out):
        try:
            old: dict[str, Any] = json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError):
            old = {}
        files = old.get("files", {}) if isinstance(old.get("files"), dict) else {}
        manifest: dict[str, Any] = {"engine": engine, "voice": voice, "formats": FORMATS,
                                    "files": {}}
        todo = []
        for item in wanted:
            digest = item_hash(item, voice, engine)
            manifest["files"][item.path] = {"hash": digest, "text": item.text}
            if files.get(item.path, {}).get("hash") == digest and \
                    all(p.is_file() for p in _outputs(out, item.path)):
                report.kept.append(item.path)
            else:
                todo.append(item)
        done = dict(files)
        for item, encoded in _speak_all(todo, voice, synthesize, workers):
            for ext, data in encoded.items():
                _write(out / f"{item.path}.{ext}", data)
            report.generated.append(item.path)
            done[item.path] = manifest["files"][item.path]
            # the manifest after every file: an interrupted build keeps what it made
            _write(out / MANIFEST, json.dumps(manifest | {"files": done},
                                              ensure_ascii=False, indent=1).encode())
        for path, entry in files.items():  # said per service: another instance's, maybe
            if path.startswith("said/") and path not in manifest["files"] and \
                    entry.get("hash") and all(p.is_file() for p in _outputs(out, path)):
                manifest["files"][path] = done[path] = entry
        for path in sorted(set(files) - set(manifest["files"])):
            for stale in _outputs(out, path):
                stale.unlink(missing_ok=True)
            report.removed.append(path)
        _write(out / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1).encode())
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build"])
    parser.add_argument("--out", type=Path, default=BUILD_DIR)
    parser.add_argument("--prompts", type=Path, default=PROMPTS_FILE,
                        help="the catalogue (default: config/prompts.toml)")
    args = parser.parse_args(argv)
    try:
        report = build(args.out, args.prompts, workers=os.cpu_count() or 1)
    except (VoiceUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
