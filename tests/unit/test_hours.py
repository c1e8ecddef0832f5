"""Service hours: weekdays 08:30-17:15, Japanese public holidays, 12/29-1/3, special days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from common.hours import HoursRule, SpecialDay, decide, parse_time

JST = ZoneInfo("Asia/Tokyo")
RULE = HoursRule()


def at(y: int, m: int, d: int, hh: int, mm: int) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=JST)


@pytest.mark.parametrize(("moment", "is_open", "reason"), [
    (at(2026, 11, 25, 8, 29), False, "before_opening"),   # Wednesday
    (at(2026, 11, 25, 8, 30), True, "open"),
    (at(2026, 11, 25, 17, 14), True, "open"),
    (at(2026, 11, 25, 17, 15), False, "after_closing"),
    (at(2026, 11, 28, 10, 0), False, "weekend"),           # Saturday
    (at(2026, 11, 23, 10, 0), False, "holiday"),           # 勤労感謝の日 (Monday)
    (at(2026, 5, 6, 10, 0), False, "holiday"),             # 振替休日 (substitute holiday)
    (at(2026, 12, 29, 10, 0), False, "year_end"),          # Tuesday, year-end closure
    (at(2027, 1, 4, 9, 0), True, "open"),                  # first working day
])
def test_default_rule(moment: datetime, is_open: bool, reason: str) -> None:
    decision = decide(RULE, moment, JST)
    assert (decision.open, decision.reason) == (is_open, reason)


def test_utc_input_is_judged_in_japan_time() -> None:
    # 00:00 UTC = 09:00 JST on a Wednesday
    assert decide(RULE, datetime(2026, 11, 25, 0, 0, tzinfo=UTC), JST).open
    # 09:00 UTC = 18:00 JST
    assert not decide(RULE, datetime(2026, 11, 25, 9, 0, tzinfo=UTC), JST).open


def test_holiday_names_and_next_opening() -> None:
    decision = decide(RULE, at(2026, 11, 23, 10, 0), JST)
    assert decision.detail == "勤労感謝の日"
    assert decision.next_open == at(2026, 11, 24, 8, 30)
    year_end = decide(RULE, at(2026, 12, 28, 18, 0), JST)
    assert year_end.reason == "after_closing"
    assert year_end.next_open == at(2027, 1, 4, 8, 30)  # 1/4 Monday after 12/29-1/3


def test_special_days_override_the_rule() -> None:
    closed = {date(2026, 11, 25): SpecialDay(date(2026, 11, 25), False, note="システム保守")}
    decision = decide(RULE, at(2026, 11, 25, 10, 0), JST, closed)
    assert not decision.open and decision.reason == "special_closed"
    assert decision.detail == "システム保守"
    sunday = date(2027, 3, 28)
    opened = {sunday: SpecialDay(sunday, True, time(9, 0), time(12, 0), "年度末休日開庁")}
    assert decide(RULE, at(2027, 3, 28, 10, 0), JST, opened).reason == "special_open"
    assert decide(RULE, at(2027, 3, 28, 12, 0), JST, opened).reason == "after_closing"
    assert not decide(RULE, at(2027, 3, 28, 10, 0), JST).open


def test_round_the_clock_and_bad_input() -> None:
    always = HoursRule(open_days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                       open_time=parse_time("00:00"), close_time=parse_time("24:00"),
                       closed_on_holidays=False, closed_dates=())
    assert decide(always, at(2026, 12, 31, 23, 59), JST).open
    with pytest.raises(ValueError):
        decide(RULE, datetime(2026, 11, 25, 10, 0), JST)
