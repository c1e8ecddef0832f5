"""Every KPI of the synthetic month equals its hand-computed value, on SQLite and
PostgreSQL (docs/kpi.md)."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.orm import Session, sessionmaker

import kpi
from common.settings import KpiSettings
from tests.reports import synthetic
from tests.reports.synthetic import EXPECTED_COUNTS, EXPECTED_TOTAL

TZ = "Asia/Tokyo"
OCT = (date(2026, 10, 1), date(2026, 11, 1))
SETTINGS = KpiSettings()


def summary(factory: sessionmaker[Session], **kw: object) -> kpi.Summary:
    with factory() as session:
        return kpi.summarize(session, tenant="city", start=OCT[0], end=OCT[1], kpi=SETTINGS,
                             tz=TZ, **kw)  # type: ignore[arg-type]


def test_every_kpi_of_the_month(month: sessionmaker[Session]) -> None:
    s = summary(month)
    assert s.total.as_dict() == EXPECTED_TOTAL
    for name, value in EXPECTED_COUNTS.items():
        assert getattr(s.total, name) == value, name
    assert s.total.distribution == {1: 0, 2: 1, 3: 1, 4: 1, 5: 1}


def test_breakdowns(month: sessionmaker[Session]) -> None:
    s = summary(month)
    assert {d: (t.attempted, t.answered, t.abandoned) for d, t in s.departments.items()} == {
        "juminhyo": (1, 0, 1), "koseki": (1, 1, 0)}
    assert s.procedures == {"e_application_help": 2, "escalated": 2, "resolved_faq": 2,
                            "complaint": 1, "other": 1}
    assert s.kiosk_locations == {"中央公民館": 2, "kiosk02": 1}
    assert s.out_of_hours == {"before_opening": 1, "holiday": 1}
    assert {op: c.answered for op, c in s.operators.items()} == {
        "op01": 3, "op02": 2, "op03": 1, "op04": 2}
    assert s.operators["op01"].aht == 180.0
    assert s.services[("remote-window", "kiosk")].offered == 3
    assert s.services[("citizens", "phone")].offered == 10


def test_local_days_cross_midnight_and_month_end(month: sessionmaker[Session]) -> None:
    s = summary(month)
    # C12 arrived 00:00:05 JST on 1 October (30 September in UTC): October 1st.
    assert (s.daily["2026-10-01"].contacts, s.daily["2026-10-01"].offered) == (3, 2)
    # C9 arrived 23:59:50 on 31 October, answered after midnight: 31 October.
    assert s.daily["2026-10-31"].answered == 1
    assert s.hourly["2026-10-31 23"].wait_max == 25
    assert s.hourly["2026-10-01 00"].out_of_hours == 1
    assert "2026-09-30" not in s.daily and "2026-11-03" not in s.daily
    # 1 October 2026 is a Thursday (3): C1 and C2 in the 9 o'clock hour.
    assert s.heatmap()[(3, 9)] == 2


@pytest.mark.parametrize(("interval", "key", "offered"), [
    ("15min", "2026-10-01 09:00", 2), ("15min", "2026-10-21 15:30", 1),
    ("hour", "2026-10-06 11", 2), ("day", "2026-10-06", 2), ("month", "2026-10", 13)])
def test_intervals(month: sessionmaker[Session], interval: str, key: str,
                   offered: int) -> None:
    a, b = kpi.local_range(*OCT, TZ)
    with month() as session:
        groups = kpi.aggregate(session, tenant="city", start=a, end=b, kpi=SETTINGS, tz=TZ,
                               interval=interval)
    assert groups[(key,)].offered == offered
    assert sum(c.contacts for c in groups.values()) == 16


def test_filters_and_other_tenant(month: sessionmaker[Session]) -> None:
    s = summary(month, filters=kpi.Filters(channel="kiosk"))
    assert (s.total.offered, s.total.answered, s.total.abandoned) == (3, 2, 1)
    assert s.total.fcr_rate == 100.0
    s = summary(month, filters=kpi.Filters(operator="op02"))
    assert (s.total.answered, s.total.escalated, s.total.aht) == (2, 0, 165.0)
    with month() as session:
        other = kpi.summarize(session, tenant="town", start=OCT[0], end=OCT[1], kpi=SETTINGS,
                              tz=TZ)
    assert other.total.contacts == 0 and other.total.service_level is None


def test_thresholds_are_settings(month: sessionmaker[Session]) -> None:
    strict = KpiSettings(service_level_seconds=10, short_abandon_seconds=7, fcr_repeat_days=3)
    a, b = kpi.local_range(*OCT, TZ)
    with month() as session:
        c = kpi.aggregate(session, tenant="city", start=a, end=b, kpi=strict, tz=TZ)[()]
    # within 10 s: C1 (10), C6, C13, C14, C17; short abandons (< 7 s): C5, C18
    assert (c.answered_in_sl, c.short_abandoned) == (5, 2)
    # C2's repeat came 4 days later: outside a 3-day window, so C2 is resolved too.
    assert c.fcr == 5


def test_targets_and_erlang() -> None:
    assert kpi.meets(SETTINGS, "service_level", 80.0) is True
    assert kpi.meets(SETTINGS, "abandon_rate", 5.1) is False
    assert kpi.meets(SETTINGS, "contacts", 3) is None
    # Erlang C for 2 Erlangs on 3 operators is 4/9 (hand-computed via Erlang B = 4/19).
    assert kpi.erlang_c(2.0, 3) == pytest.approx(4 / 9, abs=1e-12)
    # 120 calls/h of 180 s = 6 Erlangs: the fewest operators reaching 80 % within 20 s.
    n = kpi.agents_needed(120, 180, 20, 80.0)
    assert kpi.erlang_service_level(120, 180, n, 20) >= 0.8
    assert kpi.erlang_service_level(120, 180, n - 1, 20) < 0.8
    assert n == 9


def test_report_periods() -> None:
    assert kpi.previous_month(date(2027, 1, 1)) == (date(2026, 12, 1), date(2027, 1, 1))
    assert kpi.interim_range(kpi.contract_year(date(2026, 12, 2))) == (
        date(2026, 4, 1), date(2026, 12, 1))
    assert kpi.final_range(kpi.contract_year(date(2027, 3, 2))) == (
        date(2026, 4, 1), date(2027, 4, 1))


def test_rollups_give_the_same_figures(month: sessionmaker[Session]) -> None:
    """Roll up October hour by hour, then read the month from the roll-ups (plus the
    live remainder): every KPI and breakdown is unchanged."""
    live = summary(month)
    with month() as session, session.begin():
        begin, end = kpi.rollup_recent(session, tenant="city",
                                       now=synthetic.jst(10, 20, 12, 34), kpi=SETTINGS, tz=TZ)
    assert (begin, end) == (synthetic.jst(9, 30, 0, 0), synthetic.jst(10, 20, 12, 0))
    mixed = summary(month)  # 1-20 Oct from roll-ups, the rest live
    with month() as session, session.begin():
        kpi.rollup_recent(session, tenant="city", now=synthetic.jst(11, 20, 0, 0),
                          kpi=SETTINGS, tz=TZ)
    rolled = summary(month)
    for s in (mixed, rolled):
        assert s.total.as_dict() == EXPECTED_TOTAL
        assert s.total == live.total
        assert s.daily == live.daily and s.hourly == live.hourly
        assert s.operators == live.operators and s.services == live.services
        assert s.procedures == live.procedures
        assert s.kiosk_locations == live.kiosk_locations
        assert s.out_of_hours == live.out_of_hours
        assert s.departments == live.departments
    kiosk = summary(month, filters=kpi.Filters(channel="kiosk"))
    assert (kiosk.total.offered, kiosk.total.answered) == (3, 2)
