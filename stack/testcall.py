"""One test call into the running system (``make test-call``): a citizen from the carrier
trunk's address calls the first DID, waits in the queue (or is answered by the phone of an
operator who is ready), and hangs up after ``--seconds``; then what Madoguchi recorded of
the call is printed from its timeline. The caller is SIPp (``tests/sipp/uac_test_call.xml``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess  # nosec B404 # runs SIPp, fixed argv
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from common.db import make_engine, session_factory
from common.models.calls import Call, CallEvent
from common.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

SIPP_DIR = PROJECT_ROOT / "tests" / "sipp"  # the SIPp scenarios, shared with the tests
SCENARIO = SIPP_DIR / "uac_test_call.xml"
CALLER = "0901234567"


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def sipp_command(settings: Settings, workdir: Path, seconds: int,
                 caller: str = CALLER) -> list[str]:
    """The SIPp caller: from the trunk's first address, to the first service's first DID."""
    did = next((d for s in settings.services for d in s.dids), "")
    if not did:
        raise SystemExit("no service has a DID: add dids to a [[services]] entry")
    trunk = settings.trunk.match[0] if settings.trunk.match else "127.0.0.2"
    scenario = workdir / "test_call.xml"
    scenario.write_text(SCENARIO.read_text().replace("[hold_ms]", str(seconds * 1000)))
    ast = settings.asterisk
    return ["sipp", f"{ast.sip_bind}:{ast.sip_port}", "-sf", str(scenario), "-s", did,
            "-i", trunk, "-mi", trunk, "-p", str(free_udp_port(trunk)),
            "-key", "caller", caller, "-key", "rtp_port", str(free_udp_port(trunk)),
            "-m", "1", "-timeout", f"{seconds + 30}s", "-timeout_error", "-nostdin"]


def describe(settings: Settings, caller: str, since: float) -> list[str]:
    """What the timeline says of the newest call from ``caller`` since ``since``."""
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as db:
            call = db.scalars(select(Call).where(Call.caller == caller)
                              .order_by(Call.arrived_at.desc()).limit(1)).first()
            if call is None or call.arrived_at.timestamp() < since - 1:
                return ["Madoguchi recorded no call: is ari_app running? (make run; "
                        "health page /health)"]
            kinds = list(db.scalars(select(CallEvent.kind).where(CallEvent.call_id == call.id)
                                    .order_by(CallEvent.at, CallEvent.id)))
    finally:
        engine.dispose()
    lines = [f"call {call.id}: service {call.service_id}, hours {call.hours_reason or '-'}, "
             f"outcome {call.outcome or call.status}"]
    if call.agent:
        lines.append(f"  answered by {call.agent} after {call.wait_seconds} s in the queue")
    elif call.queue:
        lines.append(f"  waited in queue {call.queue}; no operator answered (log one in on "
                     "the console with a registered softphone to answer the next one)")
    lines.append(f"  timeline: {', '.join(kinds)}")
    return lines


def settings_for_sipp() -> Settings | None:
    """The settings, once SIPp is known to be installed; None (and why, printed) when the
    settings cannot be used or SIPp is missing."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return None
    if shutil.which("sipp") is None:
        print("sipp is not installed: run scripts/setup.sh run (Debian package sip-tester)",
              file=sys.stderr)
        return None
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20,
                        help="how long the caller stays on the line (default 20)")
    args = parser.parse_args(argv)
    settings = settings_for_sipp()
    if settings is None:
        return 2
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="madoguchi-test-call-") as tmp:
        cmd = sipp_command(settings, Path(tmp), args.seconds)
        print(f"calling {cmd[cmd.index('-s') + 1]} from {CALLER} for up to {args.seconds} s …",
              flush=True)
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,  # nosec B603 # own argv, no shell
                              timeout=args.seconds + 60, check=False)
    ok = proc.returncode == 0
    print("the call succeeded" if ok else
          f"the call failed (SIPp exit {proc.returncode}):\n{proc.stderr.strip()[-800:]}")
    for line in describe(settings, CALLER, started):
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
