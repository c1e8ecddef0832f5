"""Benchmark: the SIP door under attack while a real call talks.

    python bench/sip_attack.py [--flood 2000] [--flood-seconds 20]

On the real stack this script starts itself (bench/_stack.py: its own Asterisk 22,
ari_app, redis-server, SQLite, SIPp operator phones; loopback only; the site file
bench/data/attack-site.toml: the city's 7 lines with the production defaults of the SIP
door), while one citizen talks to an operator:

1. every malformed request of stack.sipattack (non-UTF-8 Call-ID, From, To, Request-URI
   and SDP, NUL bytes, wrong and negative Content-Length, huge headers and Call-ID,
   broken SDP, missing Call-ID/CSeq/Via, noise), the INVITE+CANCEL race at delays from
   0 to 200 ms, INVITEs from an address that is not the trunk's with the trunk's name,
   REGISTERs naming the trunk, a phone and nobody;
2. a flood of INVITE+CANCEL pairs from the trunk's address that never acknowledges an
   answer (bounded: ``--flood`` pairs within ``--flood-seconds``);
3. ten seconds later: what is left in the queues, the call that talked, the processes;
4. then a real call to an idle operator: how long until the operator answers.

Writes bench/results/sip_attack.json: ``cases``, ``asterisk_alive``, ``ari_app_alive``,
``call_kept``, ``next_call_answer_s``, ``ghost_calls_queued``, ``rtp_alloc_failures``,
``stuck_active_calls``, ``spoofed_trunk_accepted``, ``targets``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("httpx", "sqlalchemy")
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench._stack import (  # noqa: E402
    DATA,
    LOGS,
    RESULTS,
    BenchStack,
    machine,
    now_iso,
    source_version,
    wait_until,
    write_json,
)
from common.db import make_engine, session_factory  # noqa: E402
from common.models import Call  # noqa: E402
from stack import sipattack  # noqa: E402

SITE = DATA / "attack-site.toml"
DID = "0312345678"
LIVE_CALLER = "0901111111"
NEXT_CALLER = "0902222222"
OPERATORS = ["op01", "op02", "op03"]
SPOOF_SOURCES = ["127.0.0.9", "127.0.0.10", "127.0.0.11"]
GHOST_WAIT_S = 10.0
ANSWER_LIMIT_S = 2.0
RTP_FAILURE = re.compile(r"No RTP ports remaining|couldn't allocate a port|"
                         r"Unable to allocate RTP", re.IGNORECASE)


def calls(stack: BenchStack) -> list[Call]:
    engine = make_engine(stack.settings.database_url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(Call)))
    finally:
        engine.dispose()


def queued(stack: BenchStack) -> int:
    assert stack.asterisk is not None
    total = 0
    for svc in stack.settings.services:
        found = re.search(r"has (\d+) calls?", stack.asterisk.cli(f"queue show {svc.queue}"))
        total += int(found.group(1)) if found else 0
    return total


def live_up(stack: BenchStack) -> bool:
    return any(LIVE_CALLER in str(c.get("caller", {}).get("number", ""))
               for c in stack.ari_get("/channels"))


def run(flood_pairs: int, flood_seconds: float, log: Any = print) -> dict[str, Any]:
    # the production default's RTP range: 10000 ports (asterisk.rtp_start..rtp_end),
    # and the greeting callers hear (early media, before the answer)
    stack = BenchStack(len(OPERATORS), log=log, keep_logs=LOGS / "sip_attack",
                       site_file=SITE, rtp_ports=10000, silent_greeting=False)
    try:
        stack.start()
        assert stack.asterisk is not None
        stack.phones_up("phones", OPERATORS)
        stack.login(OPERATORS, "citizens")
        live = stack.caller("live", [(DID, LIVE_CALLER)], rate=1, hold_ms=300000, timeout=400)
        wait_until(lambda: any(c.caller == LIVE_CALLER and c.agent_connected_at
                               for c in calls(stack)), 30, "the live call was not answered")
        offset = stack.asterisk.full_log.stat().st_size
        a = stack.settings.asterisk
        target = sipattack.Target("127.0.0.1", a.sip_port, DID, stack.settings.trunk.match[0],
                                  stack.settings.trunk.name)

        log(f"attack: {len(sipattack.MALFORMED)} malformed requests, the INVITE+CANCEL "
            f"race, {len(SPOOF_SOURCES)} spoofed trunks, REGISTER enumeration")
        outcomes = sipattack.run_all(target, spoof_source=SPOOF_SOURCES[0])
        outcomes += [sipattack.spoofed_trunk(target, src) for src in SPOOF_SOURCES[1:]]
        registers = {user: sipattack.register_as(target, user, SPOOF_SOURCES[0])
                     for user in (stack.settings.trunk.name, OPERATORS[0], "nosuchname")}
        log(f"flood: {flood_pairs} INVITE+CANCEL pairs within {flood_seconds:g} s, "
            "never acknowledging an answer")
        started = time.monotonic()
        flood = sipattack.flood(target, flood_pairs, seconds=flood_seconds,
                                acknowledge=False, wait=1.0)
        flood_s = time.monotonic() - started
        outcomes.append(flood)

        time.sleep(GHOST_WAIT_S)  # the measurement's definition: what is left 10 s after
        ghosts = queued(stack)
        asterisk_alive = stack.asterisk.responding()
        ari_app_alive = stack.ari_app is not None and stack.ari_app.poll() is None
        call_kept = live.popen.poll() is None and live_up(stack)
        with stack.asterisk.full_log.open("rb") as fh:
            fh.seek(offset)
            attack_log = fh.read().decode(errors="replace")
        rtp_failures = len(RTP_FAILURE.findall(attack_log))

        # a real call to an idle operator, placed right after
        placed = datetime.now(UTC)
        nxt = stack.caller("next", [(DID, NEXT_CALLER)], rate=1, hold_ms=40000, timeout=90)
        answer_s: float | None = None
        next_refused = False
        try:
            row = wait_until(lambda: next((c for c in calls(stack) if c.caller == NEXT_CALLER
                                           and c.agent_connected_at), None)
                             or (nxt.popen.poll() is not None and "refused"), 45,
                             "the next call was not answered")
            if isinstance(row, Call) and row.agent_connected_at is not None:
                answer_s = round((row.agent_connected_at.replace(tzinfo=UTC) - placed)
                                 .total_seconds(), 3)
            else:
                next_refused = True
                log(f"next call: not answered, SIPp ended: {nxt.stats()}")
        except RuntimeError as exc:
            log(f"next call: {exc}")
        # the attack's calls: ended once Asterisk has let go of them (the unacknowledged
        # answers after its ACK timeout, 32 s)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            stuck = [c for c in calls(stack) if c.status == "active"
                     and c.caller not in (LIVE_CALLER, NEXT_CALLER)]
            if not stuck:
                break
            time.sleep(1)
        spoofed = sum(1 for o in outcomes if o.case == "spoofed_trunk" and o.answered)
        statuses = {u: r.status if r else None for u, r in registers.items()}
        out: dict[str, Any] = {
            "benchmark": "sip_attack",
            "when": now_iso(),
            "source": source_version(),
            "machine": machine(),
            "cases": len(sipattack.MALFORMED) + 1 + len(SPOOF_SOURCES) + len(registers) + 1,
            "asterisk_alive": asterisk_alive,
            "ari_app_alive": ari_app_alive,
            "call_kept": call_kept,
            "next_call_answer_s": answer_s,
            "next_call_refused": next_refused,
            "ghost_calls_queued": ghosts,
            "rtp_alloc_failures": rtp_failures,
            "stuck_active_calls": len(stuck),
            "spoofed_trunk_accepted": spoofed,
            "register_statuses": statuses,
            "flood": {"pairs_sent": flood.sent // 2, "seconds": round(flood_s, 2),
                      "answered": flood.responses.count(200),
                      "refused_503": flood.responses.count(503),
                      "cancelled_487": flood.responses.count(487)},
            "malformed": {o.case: sorted(set(o.responses)) for o in outcomes
                          if o.case in sipattack.MALFORMED},
            "settings": {"max_calls": stack.settings.trunk.max_calls or "auto",
                         "max_calls_per_second": stack.settings.trunk.max_calls_per_second},
        }
        out["targets"] = {
            "alive_and_kept": {"value": [asterisk_alive, ari_app_alive, call_kept],
                               "met": asterisk_alive and ari_app_alive and call_kept},
            "next_call_answer_s": {"value": answer_s, "limit": ANSWER_LIMIT_S,
                                   "met": answer_s is not None and answer_s < ANSWER_LIMIT_S},
            "ghost_calls_queued": {"value": ghosts, "limit": 0, "met": ghosts == 0},
            "rtp_alloc_failures": {"value": rtp_failures, "limit": 0, "met": rtp_failures == 0},
            "stuck_active_calls": {"value": len(stuck), "limit": 0, "met": not stuck},
            "spoofed_trunk_accepted": {"value": spoofed, "limit": 0, "met": spoofed == 0},
            "register_answers_alike": {"value": statuses,
                                       "met": len(set(statuses.values())) == 1},
        }
        return out
    finally:
        stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=2000, help="INVITE+CANCEL pairs")
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    out = run(min(args.flood, 20000), min(args.flood_seconds, 120.0))
    path = write_json(RESULTS / "sip_attack.json", out)
    for key in ("cases", "asterisk_alive", "ari_app_alive", "call_kept", "next_call_answer_s",
                "ghost_calls_queued", "rtp_alloc_failures", "stuck_active_calls",
                "spoofed_trunk_accepted"):
        print(f"  {key}: {out[key]}")
    print(f"  flood: {out['flood']}")
    for name, target in out["targets"].items():
        print(f"  target {name}: {target['value']} {'met' if target['met'] else 'NOT met'}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
