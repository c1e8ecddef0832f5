"""Benchmark: routing overhead of ari_app against the plain dialplan, idle and under load.

    python bench/routing.py [--calls 120] [--rate 2] [--load-rate 10] [--load-hold 30]

Measures, on the real stack this script starts itself (bench/_stack.py: its own
Asterisk 22, ari_app, redis-server and SQLite database, SIPp phones, loopback only),
the time from the caller's INVITE leaving SIPp to the operator phone's INVITE reaching
SIPp, for two paths into the same queue entry (``[mado-queue]`` ``probe``):

- ``ari_app``: DID -> ``Stasis()`` -> ari_app (timeline rows, service hours,
  ``continue``) -> ``[mado-greet]`` (answer, greeting and survey-invitation prompts,
  their user events back to ari_app) -> ``Queue()``, the production path; the two
  recordings are empty files, so the prompts are played but take no audio time;
- ``dialplan``: a benchmark-only DID whose dialplan goes straight to the same queue entry.

Calls alternate between the two paths in the same run, one caller at a time on idle
operator phones of a separate "probe" queue. Phase 1 runs on an idle system; phase 2
while the capacity load (bench/capacity.py: 10 new calls/s holding 30.5 s, 50 operators
talking, the rest on music on hold) runs on the citizens' queue. Both SIPp processes log
every message with the wall clock (``-trace_msg``); the two legs are matched by the
caller number, which Asterisk passes on in the operator INVITE's From header.

Writes bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("httpx", "sqlalchemy")

from bench._stack import (  # noqa: E402
    DIRECT_DID,
    GREET_DID,
    LOAD_DID,
    LOAD_OPERATORS,
    LOGS,
    PROBE_DID,
    PROBE_OPERATORS,
    RESULTS,
    BenchStack,
    Sampler,
    machine,
    now_iso,
    parse_msg_log,
    percentile,
    source_version,
    summary_ms,
    write_json,
)

RATIO_LIMIT = 2.0
ADDED_LIMIT_MS = 20.0
METHOD = (
    "Time from the caller's INVITE (sent, SIPp -trace_msg wall clock) to the operator "
    "phone's INVITE (received, same clock), matched by caller number. Two paths into the "
    "same dialplan queue entry, alternating call by call in one run: ari_app = DID -> "
    "Stasis -> ari_app (timeline rows, hours decision, continue) -> [mado-greet] (answer, "
    "greeting and survey invitation prompts) -> Queue(); dialplan = benchmark-only DID -> "
    "Goto the same Queue() entry, no prompts. The recordings of those two prompts are "
    "empty files: the prompts are really played but last 0 s, so the figure is routing "
    "work, not announcement length. Probe calls go to "
    "a separate queue with idle operators (one caller at a time); under load, the capacity "
    "load runs on the citizens' queue meanwhile. Ratios are ari_app/dialplan of the idle "
    "p50 and p95; added_p95_ms_under_load = ari_app p95 - dialplan p95 under load.")


# The two measured paths, and a third for the breakdown only: the dialplan's own greeting
# entry ([mado-greet]: answer, the two prompts, their user events) without the controller.
PATHS = {PROBE_DID: "ari_app", DIRECT_DID: "dialplan", GREET_DID: "dialplan_greeted"}


def probe_rows(prefix: str, calls: int) -> list[tuple[str, str]]:
    """ari_app and dialplan calls alternate (``calls`` of them); every third pair is
    followed by a dialplan_greeted call. The caller number says which and when."""
    rows: list[tuple[str, str]] = []
    for i in range(calls):
        rows.append((PROBE_DID if i % 2 == 0 else DIRECT_DID, f"{prefix}{len(rows):06d}"))
        if i % 6 == 5:
            rows.append((GREET_DID, f"{prefix}{len(rows):06d}"))
    return rows


def run_probe(stack: BenchStack, name: str, prefix: str, calls: int, rate: float,
              hold_ms: int, phone_log: Path) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    rows = probe_rows(prefix, calls)
    timeout = calls / rate + hold_ms / 1000 + 60
    caller = stack.caller(name, rows, rate, hold_ms, timeout, trace=True)
    caller.wait(timeout + 30)
    time.sleep(0.5)
    sent = parse_msg_log(caller.workdir / "msg.log", "sent")
    received = parse_msg_log(phone_log, "received")
    by_path: dict[str, list[float]] = {path: [] for path in PATHS.values()}
    missing = 0
    for did, number in rows:
        path = PATHS[did]
        if number in sent and number in received:
            by_path[path].append((received[number] - sent[number]) * 1000.0)
        else:
            missing += 1
    stats = caller.stats()
    return {**by_path, "missing": missing,
            "sipp_successful": stats.get("SuccessfulCall(C)", 0),
            "sipp_failed": stats.get("FailedCall(C)", 0),
            "machine_load_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)]}


def run(calls: int = 120, rate: float = 2.0, hold_ms: int = 1000, load: bool = True,
        load_operators: int = LOAD_OPERATORS, load_rate: float = 10.0,
        load_hold_s: float = 30.5, ramp_s: float | None = None,
        results: Path | None = RESULTS / "routing.json") -> dict[str, Any]:
    log = print
    ramp = load_hold_s if ramp_s is None else ramp_s
    stack = BenchStack(operators=LOAD_OPERATORS + PROBE_OPERATORS,
                       keep_logs=LOGS / "routing").start()
    try:
        width = len(str(LOAD_OPERATORS + PROBE_OPERATORS))
        prefix = stack.settings.operators.prefix
        probe_eps = [f"{prefix}{n:0{max(2, width)}d}"
                     for n in range(LOAD_OPERATORS + 1, LOAD_OPERATORS + PROBE_OPERATORS + 1)]
        phones = stack.phones_up("probe-phones", probe_eps, trace=True)
        stack.login(probe_eps, "probe")
        phone_log = phones.workdir / "msg.log"

        log(f"phase 1 (idle): {calls} calls at {rate}/s, alternating ari_app / dialplan")
        idle = run_probe(stack, "idle", "81", calls, rate, hold_ms, phone_log)

        loaded: dict[str, Any] | None = None
        sampler: Sampler | None = None
        load_stats: dict[str, int] = {}
        if load:
            load_eps = [f"{prefix}{n:0{max(2, width)}d}" for n in range(1, load_operators + 1)]
            stack.phones_up("load-phones", load_eps)
            stack.login(load_eps, "citizens")
            probe_time = calls / rate + hold_ms / 1000 + 5
            load_calls = int(load_rate * (ramp + probe_time))
            log(f"phase 2 (load): {load_calls} calls at {load_rate}/s holding {load_hold_s} s "
                f"on {load_operators} operators; probing after {ramp:.0f} s")
            sampler = Sampler(stack.pids(), stack.channel_counts)
            sampler.start()
            load_timeout = load_calls / load_rate + load_hold_s + 90
            load_caller = stack.caller("load", [(LOAD_DID, f"9{i:07d}")
                                                for i in range(load_calls)],
                                       load_rate, int(load_hold_s * 1000), load_timeout)
            time.sleep(ramp)
            loaded = run_probe(stack, "loaded", "82", calls, rate, hold_ms, phone_log)
            load_caller.wait(load_timeout + 30)
            sampler.stop()
            load_stats = load_caller.stats()
        left = stack.wait_quiet(30)
        steps = stack.step_offsets("probe")
    finally:
        stack.close()

    ari, direct = idle["ari_app"], idle["dialplan"]
    if not ari or not direct:
        raise RuntimeError(f"no matched calls (missing {idle['missing']}): nothing measured")
    p50_ratio = percentile(ari, 50) / percentile(direct, 50)
    p95_ratio = percentile(ari, 95) / percentile(direct, 95)
    added: float | None = None
    if loaded and loaded["ari_app"] and loaded["dialplan"]:
        added = percentile(loaded["ari_app"], 95) - percentile(loaded["dialplan"], 95)
    peak = max((p.get("callers", 0) for p in sampler.probes), default=0) if sampler else 0
    out: dict[str, Any] = {
        "benchmark": "routing",
        "when": now_iso(),
        "method": METHOD,
        "p50_ratio": round(p50_ratio, 3),
        "p95_ratio": round(p95_ratio, 3),
        "ari_p95_ms": round(percentile(ari, 95), 3),
        "dialplan_p95_ms": round(percentile(direct, 95), 3),
        "added_p95_ms_under_load": None if added is None else round(added, 3),
        "calls": calls * (2 if load else 1),
        "targets": {
            "p95_ratio": {"value": round(p95_ratio, 3), "limit": RATIO_LIMIT,
                          "met": p95_ratio <= RATIO_LIMIT and idle["missing"] == 0},
            "added_p95_ms_under_load": {
                "value": None if added is None else round(added, 3), "limit": ADDED_LIMIT_MS,
                # a phase with unmatched probe calls (lost or timed out under an
                # overloaded machine) measured nothing trustworthy: never "met"
                "met": added is not None and added <= ADDED_LIMIT_MS
                and loaded is not None and loaded["missing"] == 0},
        },
        "idle_ms": {"ari_app": summary_ms(ari), "dialplan": summary_ms(direct),
                    "dialplan_greeted": summary_ms(idle["dialplan_greeted"]),
                    "missing": idle["missing"], "sipp_failed": idle["sipp_failed"],
                    "machine_load_1min": idle["machine_load_1min"]},
        "loaded_ms": None if loaded is None else {
            "ari_app": summary_ms(loaded["ari_app"]), "dialplan": summary_ms(loaded["dialplan"]),
            "dialplan_greeted": summary_ms(loaded["dialplan_greeted"]),
            "missing": loaded["missing"], "sipp_failed": loaded["sipp_failed"],
            "machine_load_1min": loaded["machine_load_1min"]},
        "load": None if not load else {
            "rate_per_s": load_rate, "hold_s": load_hold_s, "operators": load_operators,
            "ramp_s": ramp, "calls": load_stats.get("TotalCallCreated", 0),
            "failed": load_stats.get("FailedCall(C)", 0), "peak_concurrent_callers": peak,
            "processes": {n: s.report() for n, s in sampler.stats.items()} if sampler else {},
            "machine_load_1min_max": max(sampler.loadavg, default=None) if sampler else None},
        "ari_app_steps_p50_ms": steps,
        "left_after": left,
        "params": {"calls_per_phase": calls, "rate_per_s": rate, "hold_ms": hold_ms},
        "source": source_version(),
        "machine": machine(),
    }
    print_report(out)
    if results is not None:
        write_json(results, out)
        print(f"written: {results}")
    return out


def print_report(out: dict[str, Any]) -> None:
    print("\nRouting overhead: caller INVITE -> operator INVITE (ms)")
    print("  method: " + out["method"])
    rows = [("idle", out["idle_ms"])]
    if out["loaded_ms"]:
        rows.append(("under load", out["loaded_ms"]))
    for label, data in rows:
        for path in ("ari_app", "dialplan", "dialplan_greeted"):
            s = data[path]
            if s.get("n"):
                print(f"  {label:<11} {path:<16} n={s['n']:<4} p50={s['p50']:8.3f} "
                      f"p95={s['p95']:8.3f} max={s['max']:8.3f}")
        print(f"  {label:<11} unmatched calls: {data['missing']}")
    print(f"  p50 ratio {out['p50_ratio']}, p95 ratio {out['p95_ratio']}; "
          f"added at p95 under load: {out['added_p95_ms_under_load']} ms")
    if out["load"]:
        load = out["load"]
        print(f"  load: {load['calls']} calls, {load['failed']} failed, peak "
              f"{load['peak_concurrent_callers']} callers")
        for name, rep in load["processes"].items():
            print(f"  {name}: {rep}")
    print(f"  ari_app timeline, median ms after StasisStart: {out['ari_app_steps_p50_ms']}")
    for name, target in out["targets"].items():
        print(f"  target {name}: {target['value']} (limit {target['limit']}) "
              f"{'met' if target['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=120, help="probe calls per phase")
    parser.add_argument("--rate", type=float, default=2.0, help="probe calls per second")
    parser.add_argument("--hold-ms", type=int, default=1000)
    parser.add_argument("--no-load", action="store_true", help="idle phase only")
    parser.add_argument("--load-rate", type=float, default=10.0)
    parser.add_argument("--load-hold", type=float, default=30.5)
    args = parser.parse_args(argv)
    run(calls=args.calls, rate=args.rate, hold_ms=args.hold_ms, load=not args.no_load,
        load_rate=args.load_rate, load_hold_s=args.load_hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
