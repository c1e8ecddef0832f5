"""Service hours: is a service open at a given moment, and if not, why.

The rule per service comes from the settings (open weekdays, opening and closing time,
Japanese public holidays from ``jpholiday``, the year-end closure 12/29-1/3). Special
days override it: a date can be closed (e.g. a system maintenance day) or open (e.g. a
Sunday opening at the start of the fiscal year, with its own hours). ``decide()`` is a
pure function of its arguments, so callers inject the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import jpholiday

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class HoursRule:
    open_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    open_time: time = time(8, 30)
    close_time: time = time(17, 15)
    closed_on_holidays: bool = True
    # MM-DD closed every year (the city's year-end and new-year closure)
    closed_dates: tuple[str, ...] = ("12-29", "12-30", "12-31", "01-01", "01-02", "01-03")


@dataclass(frozen=True)
class SpecialDay:
    day: date
    open: bool
    open_time: time | None = None
    close_time: time | None = None
    note: str = ""


@dataclass(frozen=True)
class HoursDecision:
    open: bool
    # open | special_open | weekend | holiday | year_end | special_closed |
    # before_opening | after_closing
    reason: str
    detail: str = ""
    next_open: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {"open": self.open, "reason": self.reason, "detail": self.detail,
                "next_open": self.next_open.isoformat() if self.next_open else None}


def parse_time(text: str) -> time:
    """``HH:MM``; ``24:00`` means the end of the day (open until midnight)."""
    if text.strip() == "24:00":
        return time.max
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _day_window(rule: HoursRule, day: date,
                specials: dict[date, SpecialDay]) -> tuple[bool, str, str, time, time]:
    """(open that day, reason, detail, opening, closing)."""
    special = specials.get(day)
    if special is not None:
        if not special.open:
            return False, "special_closed", special.note, rule.open_time, rule.close_time
        return (True, "special_open", special.note, special.open_time or rule.open_time,
                special.close_time or rule.close_time)
    if f"{day:%m-%d}" in rule.closed_dates:
        return False, "year_end", f"{day:%m-%d}", rule.open_time, rule.close_time
    if rule.closed_on_holidays:
        name = jpholiday.is_holiday_name(day)
        if name:
            return False, "holiday", str(name), rule.open_time, rule.close_time
    if WEEKDAYS[day.weekday()] not in rule.open_days:
        return False, "weekend", WEEKDAYS[day.weekday()], rule.open_time, rule.close_time
    return True, "open", "", rule.open_time, rule.close_time


def decide(rule: HoursRule, at: datetime, tz: ZoneInfo,
           specials: dict[date, SpecialDay] | None = None) -> HoursDecision:
    """Whether the service is open at ``at`` (aware datetime) in time zone ``tz``."""
    if at.tzinfo is None:
        raise ValueError("decide() needs an aware datetime")
    specials = specials or {}
    local = at.astimezone(tz)
    is_open, reason, detail, opening, closing = _day_window(rule, local.date(), specials)
    if is_open:
        if local.time() < opening:
            return HoursDecision(False, "before_opening", f"{opening:%H:%M}",
                                 datetime.combine(local.date(), opening, tz))
        if local.time() >= closing:
            return HoursDecision(False, "after_closing", f"{closing:%H:%M}",
                                 _next_open(rule, local.date() + timedelta(days=1), tz,
                                            specials))
        return HoursDecision(True, reason, detail)
    return HoursDecision(False, reason, detail,
                         _next_open(rule, local.date() + timedelta(days=1), tz, specials))


def _next_open(rule: HoursRule, start: date, tz: ZoneInfo,
               specials: dict[date, SpecialDay]) -> datetime | None:
    for offset in range(0, 40):
        day = start + timedelta(days=offset)
        is_open, _reason, _detail, opening, _closing = _day_window(rule, day, specials)
        if is_open:
            return datetime.combine(day, opening, tz)
    return None
