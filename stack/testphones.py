"""Bundled test phones for the running system (``make test-phones``): SIPp registers
operator phones (default ``op01``) with their real credentials and answers every call
to them, talking until the other side hangs up, until Ctrl-C. With them an operator can
log in on the console, be made ready and answer ``make test-call`` without a softphone.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from common.settings import SettingsError, load_settings
from stack.render import phones
from stack.testcall import SIPP_DIR, _free_udp_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoints", nargs="*", default=["op01"],
                        help="phones to register (default op01; make phones lists them)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if shutil.which("sipp") is None:
        print("sipp is not installed: run scripts/setup.sh run (Debian package sip-tester)",
              file=sys.stderr)
        return 2
    known = {p.id: p for p in phones(settings)}
    unknown = [ep for ep in args.endpoints if ep not in known]
    if unknown:
        print(f"unknown phone(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    ast = settings.asterisk
    host = "127.0.0.1"
    port = _free_udp_port(host)
    with tempfile.TemporaryDirectory(prefix="madoguchi-test-phones-") as tmp:
        for ep in args.endpoints:
            reg = subprocess.run(
                ["sipp", f"{ast.sip_bind}:{ast.sip_port}", "-sf",
                 str(SIPP_DIR / "register_auth.xml"), "-s", ep, "-au", ep, "-ap",
                 known[ep].password, "-i", host, "-p", str(port), "-m", "1",
                 "-timeout", "10s", "-timeout_error", "-nostdin"],
                cwd=tmp, capture_output=True, text=True, timeout=30, check=False)
            if reg.returncode != 0:
                print(f"{ep} could not register with Asterisk at {ast.sip_bind}:"
                      f"{ast.sip_port}: is make run running?", file=sys.stderr)
                return 1
        uas = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "uas_phone.xml"), "-i", host, "-mi", host,
             "-p", str(port), "-mp", str(_free_udp_port(host)), "-nostdin"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"test phone(s) {', '.join(args.endpoints)} registered on {host}:{port}; they "
              "answer every call. Log in as the operator on the console, click 受付可, then "
              "make test-call. Ctrl-C stops the phones.", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while uas.poll() is None and not stop.wait(1.0):
                pass
        finally:
            uas.terminate()
            uas.wait(10)
            for ep in args.endpoints:  # Asterisk sees them gone at once (電話機未接続)
                subprocess.run(
                    ["sipp", f"{ast.sip_bind}:{ast.sip_port}", "-sf",
                     str(SIPP_DIR / "unregister_auth.xml"), "-s", ep, "-au", ep, "-ap",
                     known[ep].password, "-i", host, "-p", str(port), "-m", "1",
                     "-timeout", "10s", "-nostdin"],
                    cwd=tmp, capture_output=True, timeout=30, check=False)
        if uas.returncode not in (0, -signal.SIGTERM):
            print(f"the test phones' SIPp ended with status {uas.returncode}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
