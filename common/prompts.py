"""The announcement catalogue (config/prompts.toml): names, Japanese and English texts,
and the core sound each falls back to until the city's recording is installed.

Asterisk's dialplan gets each prompt's sound as a global variable ``PROMPT_<NAME>``;
ari_app reads the same variables over ARI, so both always play the same file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from common.settings import PROJECT_ROOT

PROMPTS_FILE = PROJECT_ROOT / "config" / "prompts.toml"


def load_prompts(path: Path = PROMPTS_FILE) -> dict[str, dict[str, str]]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def variable_name(prompt: str) -> str:
    return f"PROMPT_{prompt.upper()}"
