"""The call-center benchmarks run end to end on the real stack, with tiny parameters.

No timing is asserted here (timing stays out of pass/fail tests): only that each
benchmark starts its stack, measures, cleans up and writes JSON with the keys the
benchmark issue asks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import capacity, routing

pytestmark = pytest.mark.asterisk


def _check(path: Path, keys: set[str], targets: set[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    assert keys <= set(data), keys - set(data)
    assert set(data["targets"]) >= targets
    for target in data["targets"].values():
        assert {"value", "limit", "met"} <= set(target)
        assert isinstance(target["met"], bool)
    assert data["method"]
    return data


def test_routing_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "routing.json"
    routing.run(calls=4, rate=4, hold_ms=300, load=True, load_operators=2, load_rate=2,
                load_hold_s=2, ramp_s=1, results=out)
    data = _check(out, {"p50_ratio", "p95_ratio", "ari_p95_ms", "dialplan_p95_ms",
                        "added_p95_ms_under_load", "calls"},
                  {"p95_ratio", "added_p95_ms_under_load"})
    assert data["calls"] == 8
    assert data["idle_ms"]["missing"] == 0
    assert data["left_after"] == {"channels": 0, "bridges": 0}


def test_capacity_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    capacity.run(rate=2, duration_s=3, hold_s=2, operators=2, target_concurrent=1,
                 results=out)
    data = _check(out, {"calls", "failed_calls", "orphan_channels", "orphan_bridges",
                        "incomplete_timelines", "peak_concurrent"},
                  {"failed_calls", "orphan_channels", "orphan_bridges",
                   "incomplete_timelines", "peak_concurrent"})
    assert data["calls"] == 6
    assert data["failed_calls"] == 0
    assert data["incomplete_timelines"] == 0
    assert data["orphan_channels"] == 0 and data["orphan_bridges"] == 0
