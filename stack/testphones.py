"""Bundled test phones for the running system (``make test-phones``): SIPp registers
operator phones (default ``op01``) with their real credentials and answers every call
to them, talking until the other side hangs up, until Ctrl-C. With them an operator can
log in on the console, be made ready and answer ``make test-call`` without a softphone.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess  # nosec B404 # runs SIPp, fixed argv
import sys
import tempfile
import threading
import time

import httpx

from common.settings import Settings
from stack.render import phones
from stack.testcall import SIPP_DIR, free_udp_port, settings_for_sipp


def wait_reachable(settings: Settings, endpoints: list[str], timeout: float = 20) -> None:
    """Asterisk qualifies a contact as soon as it registers, before the phone's own SIPp
    listens on that port: a lost OPTIONS leaves the phone unreachable (and its operator
    unable to be made ready) until the next qualify, 15 s later. Qualify again now, with
    the phone listening, and wait until Asterisk sees every endpoint online."""
    ast = settings.asterisk
    with socket.create_connection((ast.ami_bind, ast.ami_port), timeout=5) as conn:
        actions = [f"Action: Login\r\nUsername: {ast.ami_user}\r\nSecret: {ast.ami_secret}\r\n"]
        actions += [f"Action: PJSIPQualify\r\nEndpoint: {ep}\r\n" for ep in endpoints]
        conn.sendall(("\r\n".join(actions) + "\r\nAction: Logoff\r\n\r\n").encode())
        with conn.makefile("rb") as answers:
            answers.read()  # until Asterisk closes the session after Logoff
    deadline = time.monotonic() + timeout
    while True:
        states = {ep: httpx.get(f"{ast.ari_url}/endpoints/PJSIP/{ep}",
                                auth=(ast.ari_user, ast.ari_password), timeout=5
                                ).json().get("state") for ep in endpoints}
        if all(state == "online" for state in states.values()):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Asterisk does not see the phones online: {states}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoints", nargs="*", default=["op01"],
                        help="phones to register (default op01; make phones lists them)")
    args = parser.parse_args(argv)
    settings = settings_for_sipp()
    if settings is None:
        return 2
    known = {p.id: p for p in phones(settings)}
    unknown = [ep for ep in args.endpoints if ep not in known]
    if unknown:
        print(f"unknown phone(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    ast = settings.asterisk
    host = "127.0.0.1"
    port = free_udp_port(host)
    with tempfile.TemporaryDirectory(prefix="madoguchi-test-phones-") as tmp:
        for ep in args.endpoints:
            reg = subprocess.run(  # nosec B603, B607 # fixed argv, sipp on PATH
                ["sipp", f"{ast.sip_bind}:{ast.sip_port}", "-sf",
                 str(SIPP_DIR / "register_auth.xml"), "-s", ep, "-au", ep, "-ap",
                 known[ep].password, "-i", host, "-p", str(port), "-m", "1",
                 "-timeout", "10s", "-timeout_error", "-nostdin"],
                cwd=tmp, capture_output=True, text=True, timeout=30, check=False)
            if reg.returncode != 0:
                print(f"{ep} could not register with Asterisk at {ast.sip_bind}:"
                      f"{ast.sip_port}: is make run running?", file=sys.stderr)
                return 1
        uas = subprocess.Popen(  # nosec B603, B607 # fixed argv, sipp on PATH
            ["sipp", "-sf", str(SIPP_DIR / "uas_phone.xml"), "-i", host, "-mi", host,
             "-p", str(port), "-mp", str(free_udp_port(host)), "-nostdin"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_reachable(settings, args.endpoints)
        except (OSError, TimeoutError) as exc:
            uas.terminate()
            print(f"the test phones registered but Asterisk cannot reach them: {exc}",
                  file=sys.stderr)
            return 1
        print(f"test phone(s) {', '.join(args.endpoints)} registered on {host}:{port}; they "
              "answer every call. Log in as the operator on the console, click 受付可, then "
              "make test-call. Ctrl-C stops the phones.", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while uas.poll() is None:
                if stop.wait(1.0):
                    break
        finally:
            uas.terminate()
            uas.wait(10)
            for ep in args.endpoints:  # Asterisk sees them gone at once (電話機未接続)
                subprocess.run(  # nosec B603, B607 # fixed argv, sipp on PATH
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
