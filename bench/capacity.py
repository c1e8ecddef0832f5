"""Benchmark: capacity of the call-center core on this machine.

    python bench/capacity.py [--rate 10] [--duration 120] [--hold 30.5] [--operators 50]

Starts the real stack itself (bench/_stack.py: its own Asterisk 22, ari_app,
redis-server and SQLite database, loopback only), logs in 50 auto-answering operator
phones (SIPp, registered with digest auth, playing speech once answered) on the
citizens' queue (50 lines, bench/data/capacity-site.toml), then places 10 new calls/s for
2 minutes from the trunk. Every caller is answered by ari_app, hears the greeting, waits
on music on hold and talks to an operator when one is free, and hangs up ``--hold``
seconds after being answered; so about rate x hold callers are in the system at once
(10/s x 30.5 s = 305: 50 talking, the rest on music on hold).

Afterwards it checks: failed calls (SIPp), channels and bridges left in Asterisk, and
timelines in the database (every call has 'arrived' and 'ended' and is marked ended).
CPU (% of one core) and resident memory of Asterisk and ari_app are sampled each second
from /proc, with the live channel counts (ARI).

Writes bench/results/capacity.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("httpx", "sqlalchemy")

from bench._stack import (  # noqa: E402
    LOAD_DID,
    LOAD_OPERATORS,
    LOGS,
    RESULTS,
    BenchStack,
    Sampler,
    machine,
    now_iso,
    source_version,
    steady,
    write_json,
)

TARGET_CONCURRENT = 300


def run(rate: float = 10.0, duration_s: float = 120.0, hold_s: float = 30.5,
        operators: int = LOAD_OPERATORS, target_concurrent: int = TARGET_CONCURRENT,
        results: Path | None = RESULTS / "capacity.json") -> dict[str, Any]:
    log = print
    calls = int(rate * duration_s)
    stack = BenchStack(operators=operators, keep_logs=LOGS / "capacity").start()
    stack.watch_queue = "citizens"
    sampler: Sampler | None = None
    try:
        prefix = stack.settings.operators.prefix
        width = max(2, len(str(operators)))
        endpoints = [f"{prefix}{n:0{width}d}" for n in range(1, operators + 1)]
        stack.phones_up("operators", endpoints)
        stack.login(endpoints, "citizens")
        log(f"{operators} operators logged in; placing {calls} calls at {rate}/s, "
            f"each holding {hold_s} s after the answer")
        sampler = Sampler(stack.pids(), stack.channel_counts)
        sampler.start()
        started = time.monotonic()
        timeout = duration_s + hold_s + 90
        caller = stack.caller("callers", [(LOAD_DID, f"9{i:07d}") for i in range(calls)],
                              rate, int(hold_s * 1000), timeout)
        caller.wait(timeout + 30)
        elapsed = time.monotonic() - started
        left = stack.wait_quiet(30)
        time.sleep(2)  # a last sample with everything idle
        sampler.stop()
        stats = caller.stats()
        created = stats.get("TotalCallCreated", 0)
        successful = stats.get("SuccessfulCall(C)", 0)
        failed = stats.get("FailedCall(C)", 0)
        timelines = stack.wait_timelines("citizens", created, 60)
        problems = stack.ari_app_problems()
        ari_app_alive = stack.ari_app is not None and stack.ari_app.poll() is None
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        stack.close()

    failed_calls = failed + max(0, calls - successful - failed)
    peak_sample = max(sampler.probes, key=lambda p: p.get("callers", 0), default={})
    peak = peak_sample.get("callers", 0)
    incomplete = timelines["incomplete"] + max(0, created - timelines["calls"])
    targets = {
        "failed_calls": {"value": failed_calls, "limit": 0, "met": failed_calls == 0},
        "orphan_channels": {"value": left["channels"], "limit": 0,
                            "met": left["channels"] == 0},
        "orphan_bridges": {"value": left["bridges"], "limit": 0, "met": left["bridges"] == 0},
        "incomplete_timelines": {"value": incomplete, "limit": 0, "met": incomplete == 0},
        "peak_concurrent": {"value": peak, "limit": target_concurrent,
                            "met": peak >= target_concurrent,
                            "note": "at least this many callers in Asterisk at once"},
    }
    out: dict[str, Any] = {
        "benchmark": "capacity",
        "when": now_iso(),
        "method": (
            f"{calls} calls from SIPp (the trunk, 127.0.0.2) at {rate}/s to the citizens' "
            f"DID through Stasis -> ari_app -> greeting -> continue -> Queue(); each caller "
            f"hangs up {hold_s} s after ari_app answers; {operators} registered SIPp "
            "operator phones auto-answer and play speech. Failed = SIPp failed or unfinished "
            "calls. Orphans = channels (CLI 'core show channels count', ARI /channels) and "
            "bridges (CLI 'bridge show all', ARI /bridges) left 30 s after the last call. "
            "Timelines from the SQL tables calls/call_events. Peak concurrent = most caller "
            "channels (from the trunk) seen by ARI, sampled each second with CPU and RSS "
            "from /proc."),
        "calls": created,
        "failed_calls": failed_calls,
        "orphan_channels": left["channels"],
        "orphan_bridges": left["bridges"],
        "incomplete_timelines": incomplete,
        "peak_concurrent": peak,
        "targets": targets,
        "peak_sample": peak_sample,
        "plateau_median": steady(sampler.probes),
        "peak_talking": max((p.get("talking", 0) for p in sampler.probes), default=0),
        "processes": {name: st.report() for name, st in sampler.stats.items()},
        "machine_load_1min": {"start": sampler.loadavg[0] if sampler.loadavg else None,
                              "max": max(sampler.loadavg, default=None)},
        "sipp": {"created": created, "successful": successful, "failed": failed},
        "timelines": timelines,
        "ari_app_alive_at_end": ari_app_alive,
        "ari_app_error_lines": problems,
        "elapsed_s": round(elapsed, 1),
        "params": {"rate_per_s": rate, "duration_s": duration_s, "hold_s": hold_s,
                   "operators": operators},
        "source": source_version(),
        "machine": machine(),
    }
    print_report(out)
    if results is not None:
        write_json(results, out)
        print(f"written: {results}")
    return out


def print_report(out: dict[str, Any]) -> None:
    print("\nCapacity")
    print("  method: " + out["method"])
    print(f"  calls {out['calls']}, failed {out['failed_calls']}, peak concurrent callers "
          f"{out['peak_concurrent']} (talking at peak {out['peak_sample'].get('talking')}, "
          f"most talking {out['peak_talking']})")
    print(f"  plateau (samples with >= 90 % of the peak callers), medians: "
          f"{out['plateau_median']}")
    print(f"  orphans: {out['orphan_channels']} channels, {out['orphan_bridges']} bridges; "
          f"incomplete timelines {out['incomplete_timelines']} of {out['timelines']['calls']}")
    print(f"  ari_app alive at end: {out['ari_app_alive_at_end']}, "
          f"error lines in its log: {out['ari_app_error_lines']}")
    print(f"  machine 1-min load average (2 cores, shared): {out['machine_load_1min']}")
    for name, rep in out["processes"].items():
        print(f"  {name}: {rep}")
    for name, target in out["targets"].items():
        print(f"  target {name}: {target['value']} (limit {target['limit']}) "
              f"{'met' if target['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of new calls")
    parser.add_argument("--hold", type=float, default=30.5,
                        help="seconds each caller stays after the answer")
    parser.add_argument("--operators", type=int, default=LOAD_OPERATORS)
    args = parser.parse_args(argv)
    run(rate=args.rate, duration_s=args.duration, hold_s=args.hold, operators=args.operators)
    return 0


if __name__ == "__main__":
    sys.exit(main())
