"""The announcement catalogue (config/prompts.toml): names, Japanese and English texts,
and the core sound each falls back to for English-language callers; besides the
prompts, the voice that synthesises the Japanese texts and the Japanese texts of
Asterisk's own sound files (numbers, queue announcements; docs/prompts.md).

Asterisk's dialplan gets each prompt's sound as a global variable ``PROMPT_<NAME>``;
ari_app reads the same variables over ARI, so both always play the same file.

A prompt whose ``ja`` text holds ``{hours}`` (out_of_hours) is said once per service,
with that service's opening hours read out from its settings
(``PROMPT_<NAME>__<SERVICE>``); its plain form, for a caller of no service, leaves out
the sentences that hold a field.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import PROJECT_ROOT, Service

PROMPTS_FILE = PROJECT_ROOT / "config" / "prompts.toml"
#: tables of prompts.toml that are not prompts
RESERVED = ("voice", "words")
_SOUND_NAME = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
#: the fields a per-service text may hold
SERVICE_FIELDS = ("{hours}",)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAYS_JA = dict(zip(WEEKDAYS, "月火水木金土日", strict=True))
#: the year-end closure of the default hours (common.settings.Service.closed_dates)
NEW_YEAR = frozenset({"12-29", "12-30", "12-31", "01-01", "01-02", "01-03"})


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
    for name, spec in prompts.items():
        if any(field in spec["ja"] for field in SERVICE_FIELDS) and not plain_text(spec["ja"]):
            raise ValueError(f"{path}: [{name}] needs a sentence without a field, for "
                             "callers of no service")
    voice = {key: float(value) for key, value in raw.get("voice", {}).items()}
    return Catalogue(prompts=prompts, words=words, voice=voice)


def load_prompts(path: Path = PROMPTS_FILE) -> dict[str, dict[str, str]]:
    return load_catalogue(path).prompts


def variable_name(prompt: str) -> str:
    return f"PROMPT_{prompt.upper()}"


def per_service(text: str) -> bool:
    return any(field in text for field in SERVICE_FIELDS)


def plain_text(text: str) -> str:
    """The text without its sentences that hold a field (said when no service applies)."""
    sentences = re.findall(r"[^。]+。?", text)
    return "".join(s for s in sentences if not per_service(s)).strip()


def service_key(prompt: str, service_id: str) -> str:
    """The prompt's name for one service: ``PROMPT_<NAME>__<SERVICE>`` in Asterisk."""
    return f"{prompt}__{re.sub(r'[^A-Za-z0-9]', '_', service_id)}"


def service_texts(prompts: dict[str, dict[str, str]],
                  services: Iterable[Service]) -> dict[str, str]:
    """``service_key`` -> the Japanese text said to that service's callers, for every
    prompt that is said per service."""
    out: dict[str, str] = {}
    for name, spec in prompts.items():
        if per_service(spec["ja"]):
            for service in services:
                out[service_key(name, service.id)] = spec["ja"].format(
                    hours=spoken_hours(service))
    return out


def said_name(text: str) -> str:
    """The synthesised file of a per-service text, named by what it says (so two
    configurations never overwrite each other's file): ``said/<hash>``."""
    return "said/" + hashlib.sha256(text.encode()).hexdigest()[:16]


def spoken_hours(service: Service) -> str:
    """The opening hours as a Japanese announcement says them, closures first:
    祝日と年末年始を除く平日の午前8時30分から午後5時15分まで / 毎日、24時間."""
    days = set(service.open_days)
    if days == set(WEEKDAYS):
        when = "毎日"
    elif days == set(WEEKDAYS[:5]):
        when = "平日"
    elif days == set(WEEKDAYS[:6]):
        when = "月曜日から土曜日"
    else:
        when = "、".join(f"{_WEEKDAYS_JA[d]}曜日" for d in WEEKDAYS if d in days)
    closed = ["祝日"] if service.closed_on_holidays else []
    dates = set(service.closed_dates)
    if dates and dates <= NEW_YEAR:
        closed.append("年末年始")
    else:
        for mmdd in sorted(dates):
            month, day = (int(part) for part in mmdd.split("-"))
            closed.append(f"{month}月{day}日")
    if closed:
        when = f"{'と'.join(closed)}を除く{when}"
    if (service.open_time, service.close_time) == ("00:00", "24:00"):
        return f"{when}、24時間"
    return f"{when}の{spoken_clock(service.open_time)}から{spoken_clock(service.close_time)}まで"


def spoken_clock(hhmm: str) -> str:
    """``08:30`` → 午前8時30分, ``12:00`` → 正午, ``17:15`` → 午後5時15分."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    if (hours, minutes) == (12, 0):
        return "正午"
    half = "午前" if hours < 12 or hours == 24 else "午後"
    hours = hours % 12
    return f"{half}{hours}時" + (f"{minutes}分" if minutes else "")
