"""Benchmark of the live console: event fan-out to open consoles, case card render time.

Usage::

    python bench/console.py [--clients 100] [--events 40] [--renders 200]

Starts a private redis-server (free loopback port), a SQLite database in a temporary
folder and the web app under gunicorn exactly as in production (``gthread`` worker,
one thread per open console plus spares). Then:

- ``--clients`` consoles (half signed in as operators, half as a supervisor) hold the
  event stream ``/console/events`` open; ``--events`` ``queue.caller`` events are
  published on Redis 100 ms apart the way ari_app publishes them; the latency of each
  event at each console (publish -> the event's ``id:`` line read from the socket) is
  recorded. All streams are read by one thread with ``selectors`` so that the clients
  do not compete with the server for the two cores.
- with those consoles still open, the case card page ``/calls/<id>`` of a call with a
  200-line live transcript, earlier contacts and notes is fetched ``--renders`` times
  (each one also writes its ``case.view`` audit entry, as in production).

Prints the results and writes bench/results/console.json (keys: sse_clients,
sse_p95_ms, render_p95_ms, targets, plus details).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("redis", "flask")

import redis  # noqa: E402

from common import bus  # noqa: E402
from common.console_events import transcript_key  # noqa: E402
from common.db import init_schema, make_engine, session_factory  # noqa: E402
from common.events import QueueCallerState  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.models.calls import Call, CallEvent  # noqa: E402
from common.settings import load_settings, settings_override, to_environ  # noqa: E402
from web import accounts  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "console.json"
TARGETS = {"sse_p95_ms": 200.0, "render_p95_ms": 50.0}
PASSWORD = "bench-password-0123456789"
ID_RE = re.compile(rb"^id: (\S+)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not become ready in {timeout} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Web:
    def __init__(self, port: int) -> None:
        self.port = port

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def login(self, username: str) -> str:
        conn = self.conn()
        conn.request("GET", "/auth/login")
        resp = conn.getresponse()
        page = resp.read().decode()
        cookie = resp.getheader("Set-Cookie", "").split(";")[0]
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "no CSRF token on the log-in page"
        body = f"username={username}&password={PASSWORD}&csrf_token={token.group(1)}"
        conn.request("POST", "/auth/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 302, f"log-in of {username} failed: {resp.status}"
        new = resp.getheader("Set-Cookie", "").split(";")[0]
        conn.close()
        return new or cookie


def open_streams(port: int, cookies: list[str]) -> list[socket.socket]:
    socks = []
    for cookie in cookies:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall((f"GET /console/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Accept: text/event-stream\r\nCookie: {cookie}\r\n\r\n").encode())
        socks.append(s)
    return socks


def read_streams(socks: list[socket.socket], arrivals: dict[tuple[int, str], float],
                 stop: threading.Event, ready: list[int]) -> None:
    sel = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        buffers[i] = b""
    while not stop.is_set():
        for key, _mask in sel.select(timeout=0.2):
            i = key.data
            try:
                chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            now = time.perf_counter()
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            data = buffers[i] + chunk
            if b"retry:" in data and i not in ready:
                ready.append(i)
            for match in ID_RE.finditer(data):
                arrivals.setdefault((i, match.group(1).decode()), now)
            buffers[i] = data[-200:]
    sel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument("--lines", type=int, default=200, help="transcript lines")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mado-bench-console-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        rurl = f"redis://127.0.0.1:{rport}/0"
        rds = redis.Redis.from_url(rurl)
        wait_for(rds.ping, 10, "redis-server")
        web_port = free_port()
        base = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(workdir / "data")})
        settings = settings_override(
            base, redis={"url": rurl},
            database={"url": f"sqlite:///{workdir / 'bench.sqlite3'}"},
            web={"port": web_port}, site={"log_level": "WARNING"})
        keys = Keys(settings.redis.prefix)

        # --- data: users, a call with a long transcript, earlier contacts, notes
        engine = make_engine(settings.database_url)
        init_schema(engine)
        factory = session_factory(engine)
        hasher = accounts.make_hasher()
        now = datetime.now(UTC)
        with factory() as db:
            for name, roles, ep in (("op1", {"operator"}, "op01"),
                                    ("sup1", {"supervisor"}, None)):
                accounts.create_user(db, username=name, tenant_id="city", roles=roles,
                                     password=PASSWORD, hasher=hasher, settings=settings,
                                     sip_endpoint=ep, must_change_password=False)
            db.add(Call(id="bench-call", tenant_id="city", service_id="citizens",
                        channel="phone", did="0312345678", caller="09012345678",
                        arrived_at=now, status="active", queue="citizens", queued_at=now,
                        agent="op01", agent_connected_at=now + timedelta(seconds=8),
                        wait_seconds=8))
            for i in range(10):
                db.add(Call(id=f"earlier-{i}", tenant_id="city", service_id="citizens",
                            channel="phone", did="0312345678", caller="09012345678",
                            arrived_at=now - timedelta(days=i + 1), status="ended",
                            agent="op02", disposition="resolved_faq"))
            for i in range(5):
                db.add(CallEvent(call_id="bench-call", at=now, kind="note", source="web",
                                 dedup_key=f"note:{i}", data={
                                     "author": "青木", "role": "operator",
                                     "text": "住民票の写しの郵送請求について案内した。"}))
            db.commit()
        engine.dispose()
        line = "えー あの 住民票 の 写し を 郵送 で 取り寄せ たい ん です けど 何 が 必要 です か"
        rds.rpush(transcript_key(keys, "bench-call"), *[json.dumps(
            {"at": time.time(), "speaker": "caller" if i % 2 == 0 else "operator",
             "text": line}, ensure_ascii=False) for i in range(args.lines)])

        # --- the web app under gunicorn, as in production
        env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
        env.update(to_environ(settings))
        threads = args.clients + 16
        log = (workdir / "gunicorn.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{web_port}",
             "--worker-class", "gthread", "--workers", "1", "--threads", str(threads),
             "--log-level", "warning", "web.wsgi:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        web = Web(web_port)

        def up() -> bool:
            c = web.conn()
            c.request("GET", "/health.json")
            c.getresponse().read()
            return True

        wait_for(up, 30, "gunicorn")
        op_cookie = web.login("op1")
        sup_cookie = web.login("sup1")

        # --- fan-out: N open consoles, events 100 ms apart
        cookies = [op_cookie if i % 2 == 0 else sup_cookie for i in range(args.clients)]
        socks = open_streams(web_port, cookies)
        arrivals: dict[tuple[int, str], float] = {}
        ready: list[int] = []
        stop = threading.Event()
        reader = threading.Thread(target=read_streams, args=(socks, arrivals, stop, ready),
                                  daemon=True)
        reader.start()
        wait_for(lambda: len(ready) == args.clients, 30, "all event streams")
        sent: dict[str, float] = {}
        for n in range(args.events):
            ev = QueueCallerState(queue="citizens", call_id=f"bench-{n}", state="joined",
                                  position=1, waiting=1)
            t0 = time.perf_counter()
            sid = bus.publish(rds, keys, ev)
            sent[sid] = t0
            time.sleep(0.1)
        time.sleep(1.0)
        latencies = [(arrivals[(i, sid)] - t0) * 1000 for sid, t0 in sent.items()
                     for i in range(args.clients) if (i, sid) in arrivals]
        missing = args.clients * args.events - len(latencies)

        # --- case card render, consoles still open
        conn = web.conn()
        renders = []
        size = 0
        for _ in range(args.renders):
            t0 = time.perf_counter()
            conn.request("GET", "/calls/bench-call", headers={"Cookie": op_cookie})
            resp = conn.getresponse()
            body = resp.read()
            renders.append((time.perf_counter() - t0) * 1000)
            assert resp.status == 200, resp.status
            size = len(body)
        conn.close()
        assert body.count(b"speaker-") >= args.lines, "transcript not rendered"
        stop.set()
        reader.join(5)
        for s in socks:
            s.close()

        sse_p95 = percentile(latencies, 95) if latencies else float("inf")
        render_p95 = percentile(renders, 95)
        result: dict[str, Any] = {
            "benchmark": "console",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "sse_clients": args.clients,
            "sse_p95_ms": round(sse_p95, 1),
            "render_p95_ms": round(render_p95, 1),
            "targets": {
                "sse_p95_ms": {"value": round(sse_p95, 1), "limit": TARGETS["sse_p95_ms"],
                               "met": sse_p95 < TARGETS["sse_p95_ms"] and missing == 0},
                "render_p95_ms": {"value": round(render_p95, 1),
                                  "limit": TARGETS["render_p95_ms"],
                                  "met": render_p95 < TARGETS["render_p95_ms"]},
            },
            "sse_events": args.events,
            "sse_deliveries": len(latencies),
            "sse_missing": missing,
            "sse_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "sse_max_ms": round(max(latencies), 1) if latencies else None,
            "renders": args.renders,
            "render_p50_ms": round(statistics.median(renders), 1),
            "render_max_ms": round(max(renders), 1),
            "render_bytes": size,
            "transcript_lines": args.lines,
            "method": (f"gunicorn gthread (1 worker, {threads} threads) on a private "
                       "redis-server and SQLite; consoles read by one selectors thread; "
                       "latency = publish (XADD + PUBLISH) to the event's id line at the "
                       "client socket; render = full case card page over keep-alive, "
                       "client-measured, including its audit write; "
                       f"{os.cpu_count()} cores shared with whatever else runs"),
        }
        print(json.dumps(result, ensure_ascii=False, indent=2))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
