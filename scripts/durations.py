"""Where the test suite's time goes, from pytest's JUnit XML reports.

    .venv/bin/python -m pytest --junitxml=var/junit.xml ...
    .venv/bin/python scripts/durations.py var/junit.xml [more.xml ...] [--top 30]

Prints two Markdown tables (the ones in docs/testing.md): the slowest tests (setup, call
and teardown together, as pytest's JUnit report times them) and the totals per test
folder. Several reports (the two passes of scripts/test.sh) are read as one run.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def read(paths: list[Path]) -> list[tuple[str, float]]:
    """(test id, seconds) of every test case in the reports."""
    cases = []
    for path in paths:
        for case in ET.parse(path).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/")
            cases.append((f"{module}.py::{case.get('name', '')}", float(case.get("time", 0))))
    return cases


def folder(test_id: str) -> str:
    parts = test_id.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def tables(cases: list[tuple[str, float]], top: int) -> str:
    total = sum(t for _, t in cases)
    lines = ["| # | test | s |", "|---|---|---|"]
    for n, (test_id, seconds) in enumerate(sorted(cases, key=lambda c: -c[1])[:top], 1):
        lines.append(f"| {n} | `{test_id}` | {seconds:.1f} |")
    per: dict[str, list[float]] = defaultdict(list)
    for test_id, seconds in cases:
        per[folder(test_id)].append(seconds)
    lines += ["", "| folder | tests | s | share |", "|---|---|---|---|"]
    for name, times in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| `{name}` | {len(times)} | {sum(times):.0f} | "
                     f"{100 * sum(times) / total if total else 0:.0f} % |")
    lines.append(f"| all | {len(cases)} | {total:.0f} | 100 % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.reports if not p.is_file()]
    if missing:
        print(f"error: no such report: {', '.join(missing)} (run pytest with --junitxml)",
              file=sys.stderr)
        return 2
    print(tables(read(args.reports), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
