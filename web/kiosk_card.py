"""The My Number card flow's data (R5, docs/card_agent.md), without routes: what the
kiosk page may report, the checks on the four items it sends, how the console shows
them (the Japanese date, the sex labels), and recording a step of the flow. The kiosk
API's card view is ``web.kiosk.card_step``, the console's are in ``web.kiosk_console``.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Any

from common.kiosk import CARD_ITEMS, KioskCardState, write_if_live
from web.console import publish
from web.db import get_redis
from web.kiosk_shared import add_timeline_event, kk

#: The card agent's error ids (docs/card_agent.md) and the page's own one for an agent
#: that does not answer; anything else is refused.
CARD_ERRORS = ("no-reader", "reader-unplugged", "pcsc-unavailable", "no-card", "card-removed",
               "not-my-number-card", "wrong-pin", "pin-locked", "bad-pin-format",
               "unexpected-response", "busy", "agent-unavailable")
#: Longest accepted item (characters): the card's own fields are far shorter.
CARD_ITEM_MAX = {"name": 200, "address": 400, "birth": 10, "sex": 1}
SEX_LABELS = {"1": ("男", "male"), "2": ("女", "female"), "9": ("適用不能", "not applicable"),
              "0": ("不明", "unknown")}
#: States in which the citizen has agreed and the read is under way.
CARD_ACTIVE = ("consented", "waiting_card", "pin", "reading", "error")
#: card_* fields of the session hash: the flow's state for the console, never the data.
CARD_FIELDS = ("card_state", "card_error", "card_tries", "card_notice_ja", "card_notice_en",
               "card_detail", "card_at")


#: Japanese eras (first day, name): dates on the city's forms are written in the era.
ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"), (date(1926, 12, 25), "昭和"),
        (date(1912, 7, 30), "大正"), (date(1873, 1, 1), "明治"))


def japanese_date(iso: str) -> str:
    """``1985-04-01`` → ``1985年4月1日（昭和60年）`` (the era year, 元年 for the first)."""
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return iso
    text = f"{day.year}年{day.month}月{day.day}日"
    for start, name in ERAS:
        if day >= start:
            year = day.year - start.year + 1
            return f"{text}（{name}{'元' if year == 1 else year}年）"
    return text


def clean_text(value: Any, limit: int) -> str | None:
    """A bounded single-line text, or None when it is not one."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        return None
    return value


def card_items(raw: Any) -> dict[str, str] | str:
    """The four items as sent by the kiosk page, checked; or what is wrong with them."""
    if not isinstance(raw, dict) or set(raw) - set(CARD_ITEMS) - {"sex_ja", "sex_en"}:
        return f"items must be an object with {', '.join(CARD_ITEMS)}"
    items: dict[str, str] = {}
    for name in CARD_ITEMS:
        value = clean_text(raw.get(name), CARD_ITEM_MAX[name])
        if value is None or (name in ("name", "birth", "sex") and not value.strip()):
            return f"item {name!r} is missing or not a single line of at most " \
                   f"{CARD_ITEM_MAX[name]} characters"
        items[name] = value
    try:
        datetime.strptime(items["birth"], "%Y-%m-%d")
    except ValueError:
        return "item 'birth' must be a date YYYY-MM-DD"
    if items["sex"] not in SEX_LABELS:
        return "item 'sex' must be the ISO 5218 code 0, 1, 2 or 9"
    return items


def record_card_state(session_id: str, meta: dict[str, str], state: str,
                      fields: dict[str, str]) -> bool:
    """Record a step of the card flow: session hash, the call's timeline, the consoles.
    False when the session ended meanwhile (nothing is written then)."""
    values = {name: "" for name in CARD_FIELDS}
    values.update(fields)
    values["card_state"] = state
    values["card_at"] = f"{time.time():.3f}"
    if not write_if_live(get_redis(), kk(), session_id, kk().session(session_id), values):
        return False
    call_id = meta.get("call_id", "")
    if not call_id:
        return True
    data: dict[str, Any] = {"state": state}
    if fields.get("card_error"):
        data["error"] = fields["card_error"]
    if fields.get("card_tries"):
        data["tries_left"] = int(fields["card_tries"])
    add_timeline_event(call_id, "kiosk_card", data, f"kiosk_card:{state}:{values['card_at']}")
    publish(KioskCardState(call_id=call_id, tenant=meta.get("tenant", ""), state=state,
                           error=fields.get("card_error", "")))
    return True
