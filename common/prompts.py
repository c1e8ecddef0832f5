"""The announcement catalogue (config/prompts.toml): names, Japanese and English texts,
and the core sound each falls back to for English-language callers; besides the
prompts, the voice that synthesises the Japanese texts and the Japanese texts of
Asterisk's own sound files (numbers, queue announcements; docs/prompts.md).

Asterisk's dialplan gets each prompt's sound as a global variable ``PROMPT_<NAME>``;
ari_app reads the same variables over ARI, so both always play the same file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import PROJECT_ROOT

PROMPTS_FILE = PROJECT_ROOT / "config" / "prompts.toml"
#: tables of prompts.toml that are not prompts
RESERVED = ("voice", "words")
_SOUND_NAME = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class Catalogue:
    prompts: dict[str, dict[str, str]]
    #: Asterisk's sound name (e.g. ``digits/3``, ``queue-thereare``) -> its Japanese text
    words: dict[str, str]
    #: pyopenjtalk.tts keyword arguments (speed, half_tone)
    voice: dict[str, float]


def load_catalogue(path: Path = PROMPTS_FILE) -> Catalogue:
    """Read and check prompts.toml; a malformed entry raises ValueError naming it."""
    with path.open("rb") as fh:
        raw: dict[str, Any] = tomllib.load(fh)
    prompts = {name: spec for name, spec in raw.items() if name not in RESERVED}
    for name, spec in prompts.items():
        if not _SOUND_NAME.fullmatch(name) or "/" in name:
            raise ValueError(f"{path}: bad prompt name {name!r}")
        if not isinstance(spec, dict) or not all(
                isinstance(spec.get(key), str) and spec[key] for key in ("ja", "fallback")):
            raise ValueError(f"{path}: [{name}] needs the texts 'ja' and 'fallback'")
    words = dict(raw.get("words", {}))
    for name, text in words.items():
        if not _SOUND_NAME.fullmatch(name) or not isinstance(text, str) or not text:
            raise ValueError(f"{path}: [words] {name!r} needs a sound name and a text")
    voice = {key: float(value) for key, value in raw.get("voice", {}).items()}
    return Catalogue(prompts=prompts, words=words, voice=voice)


def load_prompts(path: Path = PROMPTS_FILE) -> dict[str, dict[str, str]]:
    return load_catalogue(path).prompts


def variable_name(prompt: str) -> str:
    return f"PROMPT_{prompt.upper()}"
