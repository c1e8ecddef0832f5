"""``make run`` for real (``python -m stack.run``) with a site file: it says it is running
only once Asterisk, ARI and AMI are connected, prints the first start's users, and every
child process (ari_app, kiosk_bridge, the transcriber, web, the rq worker and cron) runs
on the very settings of the parent, site file included: each logs the same fingerprint.
The health page then answers 200 with the transcriber "not configured" (no model), and
the README's first call works: ``make test-phones``, the operator logged in on the web,
``make test-call`` answered by the operator's phone."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from common.settings import PROJECT_ROOT, load_settings
from stack.run import CHILDREN
from tests.conftest import free_port, wait_until
from tests.integration.conftest import _free_udp_range
from tests.unit.test_child_settings import SITE  # a 24/7 service, one department

pytestmark = [pytest.mark.asterisk]


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> str:
    """The process's output up to the line matching ``pattern``. Read from the pipe's file
    descriptor in chunks: a buffered readline would keep lines select() cannot see."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    text = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        text += chunk.decode("utf-8", "replace")
        match = re.search(pattern, text, re.M)
        if match:
            return text[:text.index("\n", match.end()) + 1 if "\n" in text[match.end():]
                        else len(text)]
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{text[-4000:]}")


def operator_ready(base: str, password: str) -> None:
    """Log in as the first start's operator and into the queue, as on the console."""
    with httpx.Client(base_url=base, follow_redirects=True, timeout=10) as web:
        token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/auth/login").text)
        assert token
        web.post("/auth/login", data={"username": "operator", "password": password,
                                      "csrf_token": token.group(1)})
        token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/operator/").text)
        assert token, "not logged in"
        resp = web.post("/operator/state", data={"action": "login",
                                                 "csrf_token": token.group(1)},
                        headers={"X-Requested-With": "fetch"})
        assert resp.status_code == 200, resp.text
        wait_until(lambda: web.get("/operator/state").json()["state"] == "ready", 15,
                   "the operator did not become ready")


def test_make_run_with_a_site_file_starts_every_process_on_its_settings(
        tmp_path: Path, redis_url: str) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE, encoding="utf-8")
    rtp = _free_udp_range(200)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
    env.update({
        "MADOGUCHI_CONFIG": str(site),
        "MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
        "MADOGUCHI_REDIS__URL": redis_url, "MADOGUCHI_REDIS__PREFIX": f"mr{os.getpid()}",
        "MADOGUCHI_ASTERISK__SIP_PORT": str(free_port()),
        "MADOGUCHI_ASTERISK__HTTP_PORT": str(free_port()),
        "MADOGUCHI_ASTERISK__AMI_PORT": str(free_port()),
        "MADOGUCHI_ASTERISK__RTP_START": str(rtp), "MADOGUCHI_ASTERISK__RTP_END": str(rtp + 199),
        "MADOGUCHI_WEB__PORT": str(free_port()),
        "MADOGUCHI_KIOSK_BRIDGE__PORT": str(free_port()),
        "MADOGUCHI_TRANSCRIPTION__RTP_PORT": str(free_port(socket.SOCK_DGRAM)),
        "MADOGUCHI_TRUNK__QUALIFY_SECONDS": "0",
    })
    proc = subprocess.Popen([sys.executable, "-m", "stack.run", "--instance",
                             f"makerun-{os.getpid()}"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _read_until(proc, r"^  Logs: ", 150)
        assert "Asterisk, ARI and AMI are connected" in out and "NOT READY" not in out
        # the first start's users, one per role, each with its password
        for role in ("operator", "staff", "supervisor", "administrator", "approver"):
            assert re.search(rf"^\s+{role}\s+user {role}\s+password: \S+", out, re.M), out
        match = re.search(r"Settings: ([0-9a-f]{16}) \(site file ", out)
        assert match, out
        fingerprint = match.group(1)
        parent = load_settings({**env, "MADOGUCHI_CONFIG": str(site)})
        assert parent.fingerprint() == fingerprint
        assert [(s.close_time, s.open_days[-1]) for s in parent.services] == [("24:00", "sun")]
        assert [d.id for d in parent.departments] == ["tax"]
        logs = tmp_path / "data" / "log"
        for name, _args in CHILDREN:
            text = (logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
            line = f"{name}: settings {fingerprint} (site file {site.resolve()}; 1 services, " \
                   "1 departments"
            assert line in text, f"{name}.log:\n{text[-2000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{env['MADOGUCHI_WEB__PORT']}"
                                    "/health.json", timeout=10) as resp:
            body = json.load(resp)
        assert resp.status == 200 and body["status"] == "ok", body
        assert body["components"]["transcriber"]["state"] == "not_configured"
        assert body["components"]["ari"]["state"] == "ok"

        # the README's first hour: test phones, the operator made ready, a test call
        password = re.search(r"user operator\s+password: (\S+)", out).group(1)  # type: ignore[union-attr]
        phones = subprocess.Popen([sys.executable, "-m", "stack.testphones", "op01"],
                                  cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            _read_until(phones, r"registered on", 30)
            operator_ready(f"http://127.0.0.1:{env['MADOGUCHI_WEB__PORT']}", password)
            call = subprocess.run([sys.executable, "-m", "stack.testcall", "--seconds", "20"],
                                  cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                  timeout=90, check=False)
            assert call.returncode == 0, call.stdout + call.stderr
            assert "the call succeeded" in call.stdout and "hours open" in call.stdout
            assert "answered by op01" in call.stdout, call.stdout
        finally:
            phones.send_signal(signal.SIGINT)
            phones.communicate(timeout=30)
        assert phones.returncode == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
    assert proc.returncode == 0, rest[-3000:]
    # Ctrl-C stopped everything it started, Asterisk too
    left = subprocess.run(["pgrep", "-f", f"madoguchi/makerun-{os.getpid()}/"],
                          capture_output=True, text=True, check=False).stdout
    assert not left, f"left running: {left}"
