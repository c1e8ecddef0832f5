"""Report periods as local dates ([start, end), end exclusive) and their UTC bounds:
months, the fiscal (contract) year from April, the interim and final report ranges."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local_range(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) local dates -> aware UTC datetimes."""
    zone = ZoneInfo(tz)
    return (datetime.combine(start, time(), zone), datetime.combine(end, time(), zone))


def month_range(year: int, month: int) -> tuple[date, date]:
    start = date(year, month, 1)
    end = date(year + (month == 12), month % 12 + 1, 1)
    return start, end


def previous_month(today: date) -> tuple[date, date]:
    first = today.replace(day=1)
    last = first - timedelta(days=1)
    return month_range(last.year, last.month)


def contract_year(today: date) -> int:
    """The fiscal (contract) year that ``today`` belongs to: April to March."""
    return today.year if today.month >= 4 else today.year - 1


def interim_range(fiscal_year: int) -> tuple[date, date]:
    """April to November of the fiscal year (interim report, due early December)."""
    return date(fiscal_year, 4, 1), date(fiscal_year, 12, 1)


def final_range(fiscal_year: int) -> tuple[date, date]:
    """The whole contract year, April to March (final report, due early March)."""
    return date(fiscal_year, 4, 1), date(fiscal_year + 1, 4, 1)
