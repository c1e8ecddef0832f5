"""The real stack for the call-center benchmarks (bench/routing.py, bench/capacity.py).

``BenchStack`` starts everything a benchmark needs and stops it again, even on failure:
a private redis-server on a free port, a SQLite database in a temporary folder, its own
Asterisk 22 instance (configuration rendered from the production templates, free SIP,
HTTP, AMI and RTP ports, plus one benchmark-only dialplan entry appended to the rendered
``extensions.conf``), its own ari_app process, and SIPp phones for the operators.

Only loopback addresses are used. Callers come from 127.0.0.2 (the trunk).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import select

from common.bus import read_events
from common.commands import AgentLogin, send_command
from common.db import make_engine, session_factory
from common.events import decode
from common.keys import Keys
from common.models import Call, CallEvent
from common.settings import Settings, load_settings, settings_override, to_environ
from stack import loopback
from stack.asterisk import AsteriskInstance, provide
from stack.loopback import free_port, free_udp_range
from stack.loopback import terminate as _terminate
from stack.render import phones as all_phones
from stack.testphones import wait_reachable

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / "var" / "bench-logs"  # git-ignored: the last run's logs, for a look afterwards
SITE_FILE = DATA / "capacity-site.toml"
UAC_HOLD = DATA / "uac_hold.xml"
REGISTER = ROOT / "tests" / "sipp" / "register_auth.xml"
UAS_PHONE = ROOT / "tests" / "sipp" / "uas_phone.xml"
CALLER_IP = "127.0.0.2"  # the development trunk's address (trunk.match)

LOAD_DID = "0312345678"  # citizens: the loaded queue (50 lines)
PROBE_DID = "0312340000"  # probe service: Stasis -> ari_app -> continue -> Queue(probe)
DIRECT_DID = "0312349999"  # benchmark-only: straight to the same Queue(probe) entry
# benchmark-only, for the breakdown: the dialplan's greeting entry without the controller
GREET_DID = "0312349998"
PRE_QUEUE_PROMPTS = ("greeting", "survey_invite")
LOAD_OPERATORS = 50
PROBE_OPERATORS = 6


def wait_until(predicate: Callable[[], Any], timeout: float, message: str,
               interval: float = 0.1) -> Any:
    """``stack.loopback.wait_until``, failing with RuntimeError (what the benchmarks
    catch)."""
    try:
        return loopback.wait_until(predicate, timeout, message, interval)
    except TimeoutError as exc:
        raise RuntimeError(str(exc)) from None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 3),
            "p95": round(percentile(values, 95), 3), "mean": round(statistics.fmean(values), 3),
            "max": round(max(values), 3)}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


class BenchAsterisk(AsteriskInstance):
    """An Asterisk instance whose rendered dialplan gets one benchmark-only entry."""

    extra_dialplan = ""

    def render(self) -> None:
        super().render()
        if self.extra_dialplan:
            path = self.host_dir / "etc" / "extensions.conf"
            with path.open("a", encoding="utf-8") as fh:
                fh.write(self.extra_dialplan)


# A context may be opened again further down extensions.conf: this adds one DID to the
# trunk's context that goes straight to the same queue entry ari_app continues to.
DIRECT_DIALPLAN = f"""
; ---- benchmark only (bench/_stack.py): the dialplan path without the controller
[from-trunk]
exten => {DIRECT_DID},1,Goto(mado-queue,probe,1)
exten => {GREET_DID},1,Goto(mado-greet,probe,1)
"""


# ------------------------------------------------------------------- process sampling


@dataclass
class ProcStats:
    name: str
    pid: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # t, cpu%, rss

    def report(self) -> dict[str, float | int]:
        cpu = [s[1] for s in self.samples[1:]]
        rss = [s[2] for s in self.samples]
        if not rss:
            return {"samples": 0}
        return {"samples": len(self.samples),
                "cpu_pct_mean": round(statistics.fmean(cpu), 1) if cpu else 0.0,
                "cpu_pct_p95": round(percentile(cpu, 95), 1) if cpu else 0.0,
                "cpu_pct_max": round(max(cpu), 1) if cpu else 0.0,
                "rss_mb_start": round(rss[0] / 1048576, 1),
                "rss_mb_max": round(max(rss) / 1048576, 1),
                "rss_mb_end": round(rss[-1] / 1048576, 1)}


def _cpu_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples CPU (% of one core) and resident memory of some processes, and an extra
    probe (e.g. channel counts), once per ``interval``, until stopped."""

    def __init__(self, procs: dict[str, int], probe: Callable[[], dict[str, int]] | None,
                 interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.stats = {name: ProcStats(name, pid) for name, pid in procs.items()}
        self.probe = probe
        self.probes: list[dict[str, int]] = []
        self.loadavg: list[float] = []  # the machine's 1-minute load average (2 cores)
        self.interval = interval
        self._stop_event = threading.Event()
        self._hz = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        last: dict[str, tuple[float, int]] = {}
        while not self._stop_event.is_set():
            now = time.monotonic()
            for name, st in self.stats.items():
                try:
                    ticks, rss = _cpu_ticks(st.pid), _rss_bytes(st.pid)
                except (OSError, ValueError):
                    continue
                prev = last.get(name)
                cpu = 0.0 if prev is None else \
                    100.0 * (ticks - prev[1]) / self._hz / max(now - prev[0], 1e-6)
                last[name] = (now, ticks)
                st.samples.append((now, cpu, rss))
            self.loadavg.append(os.getloadavg()[0])
            if self.probe is not None:
                try:
                    self.probes.append(self.probe())
                except Exception:  # noqa: BLE001 - a missed sample is not a result
                    pass
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


# ---------------------------------------------------------------------------- SIPp


@dataclass
class Sipp:
    name: str
    popen: subprocess.Popen[str]
    workdir: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def stats(self) -> dict[str, int]:
        path = self.workdir / f"{self.name}.stat.csv"
        if not path.exists():
            return {}
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if len(lines) < 2:
            return {}
        out: dict[str, int] = {}
        for key, value in zip(lines[0].split(";"), lines[-1].split(";"), strict=False):
            if re.fullmatch(r"\d+", value.strip()):
                out[key.strip()] = int(value)
        return out


def parse_msg_log(path: Path, direction: str) -> dict[str, float]:
    """First INVITE per caller number in a SIPp ``-trace_msg`` log: {number: epoch s}.

    ``direction`` is "sent" (the caller's log) or "received" (an operator phone's). SIPp
    stamps each message with the wall clock (microseconds) when it sends or reads it."""
    out: dict[str, float] = {}
    if not path.exists():
        return out
    text = path.read_text(errors="replace")
    parts = re.split(r"^-{10,}\s+(\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)\s*\n", text,
                     flags=re.MULTILINE)
    for stamp, body in zip(parts[1::2], parts[2::2], strict=False):
        first, _, message = body.partition("\n")
        if direction not in first:
            continue
        message = message.lstrip("\r\n")
        if not message.startswith("INVITE "):
            continue
        found = re.search(r"^From:.*?<sips?:([^@>;]+)@", message, re.MULTILINE | re.IGNORECASE)
        if found:
            at = datetime.strptime(" ".join(stamp.split()), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.setdefault(found.group(1), at)
    return out


# --------------------------------------------------------------------------- stack


class BenchStack:
    """Everything one benchmark run needs; ``close()`` stops all of it."""

    def __init__(self, operators: int, log: Callable[[str], None] = print,
                 keep_logs: Path | None = None, site_file: Path = SITE_FILE,
                 rtp_ports: int = 1200, silent_greeting: bool = True) -> None:
        self.log = log
        self.exit = ExitStack()
        self.tmp = Path(tempfile.mkdtemp(prefix="mado-bench-"))
        self.keep_logs = keep_logs
        self.operators = operators
        self.asterisk: BenchAsterisk | None = None
        self.ari_app: subprocess.Popen[bytes] | None = None
        self.ari_app_log = self.tmp / "ari_app.log"
        self.phones: list[Sipp] = []
        self.watch_queue = ""
        self.site_file = site_file
        self.rtp_ports = rtp_ports
        self.silent_greeting = silent_greeting
        self.settings: Settings = load_settings({"MADOGUCHI_CONFIG": str(site_file)})

    # -- start

    def start(self) -> BenchStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        redis_url = self._start_redis()
        sounds = self.tmp / "sounds"
        sounds.mkdir()
        # Empty recordings of the prompts a caller hears before the queue (the greeting;
        # the survey invitation when a service offers the survey opt-in): they are still
        # played ([mado-greet], user events, timeline rows) but the audio lasts 0 s, so
        # routing time is the product's work, not speech.
        # (silent_greeting=False: the product's own prompts, as callers hear them)
        for prompt in PRE_QUEUE_PROMPTS if self.silent_greeting else ():
            (sounds / f"{prompt}.sln").write_bytes(b"")
        rtp = free_udp_range(self.rtp_ports)
        base = load_settings({
            "MADOGUCHI_SITE__DATA_DIR": str(self.tmp / "data"),
            "MADOGUCHI_CONFIG": str(self.site_file),
            "MADOGUCHI_OPERATORS__COUNT": str(self.operators),
            "MADOGUCHI_PROMPTS__CUSTOM_DIR": str(sounds),
            "MADOGUCHI_SITE__LOG_LEVEL": "WARNING",
        })
        # The shared root file system by its real path (stack.asterisk recognises its
        # own processes in it by that path when deciding whether to unmount /proc).
        rootfs = Path(base.asterisk.rootfs)
        rootfs = (rootfs if rootfs.is_absolute() else ROOT / rootfs).resolve()
        self.settings = settings_override(
            base,
            asterisk={"rootfs": str(rootfs), "sip_port": free_port(socket.SOCK_DGRAM),
                      "http_port": free_port(), "ami_port": free_port(),
                      "rtp_start": rtp, "rtp_end": rtp + self.rtp_ports - 1,
                      "ari_app": f"mado-bench-{os.getpid()}"},
            redis={"url": redis_url},
            database={"url": f"sqlite:///{self.tmp / 'bench.sqlite3'}"})
        install = provide(self.settings, build=True)
        self.asterisk = BenchAsterisk(install, self.settings, f"bench-{os.getpid()}")
        self.asterisk.extra_dialplan = DIRECT_DIALPLAN
        self.exit.callback(self._stop_asterisk)
        self.asterisk.start()
        self.log(f"Asterisk {install.version} on SIP 127.0.0.1:{self.settings.asterisk.sip_port}")
        self._start_ari_app()

    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        rdir = self.tmp / "redis"
        rdir.mkdir()
        proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(rdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.exit.callback(_terminate, proc)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            wait_until(client.ping, 10, "redis-server did not start")
        finally:
            client.close()
        return url

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
        env.update(to_environ(self.settings))
        env["MADOGUCHI_CONFIG"] = str(self.site_file)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start_ari_app(self) -> None:
        with self.ari_app_log.open("wb") as fh:
            # MADO_BENCH_PROFILE=out.prof: run ari_app under cProfile (written at its exit)
            profile = os.environ.get("MADO_BENCH_PROFILE")
            wrap = ["-m", "cProfile", "-o", profile] if profile else []
            self.ari_app = subprocess.Popen(
                [sys.executable, *wrap, "-m", "ari_app.main"], cwd=ROOT, env=self.child_env(),
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.exit.callback(self._stop_ari_app)
        keys = Keys(self.settings.redis.prefix)
        client = redis.Redis.from_url(self.settings.redis.url, decode_responses=True)

        def ready() -> bool:
            if self.ari_app is not None and self.ari_app.poll() is not None:
                raise RuntimeError(f"ari_app exited:\n{self.ari_app_log.read_text()[-3000:]}")
            for key in client.scan_iter(keys.health_pattern("ari_app")):
                beat = client.hgetall(key)
                return beat.get("ari") == "up" and beat.get("ami") == "up"
            return False

        try:
            wait_until(ready, 30, "ari_app did not connect to ARI and AMI")
        finally:
            client.close()

    def phones_up(self, name: str, endpoints: list[str], trace: bool = False,
                  scenario: Path = UAS_PHONE) -> Sipp:
        """Register ``endpoints`` on one UDP port (digest auth), then answer there
        (with ``scenario``: by default tests/sipp/uas_phone.xml)."""
        workdir = self.tmp / name
        workdir.mkdir()
        passwords = {p.id: p.password for p in all_phones(self.settings)}
        port = free_port(socket.SOCK_DGRAM)
        sip = f"127.0.0.1:{self.settings.asterisk.sip_port}"
        for ep in endpoints:
            reg = subprocess.run(
                ["sipp", sip, "-sf", str(REGISTER), "-s", ep, "-au", ep, "-ap", passwords[ep],
                 "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "10s",
                 "-timeout_error", "-nostdin"],
                cwd=workdir, capture_output=True, text=True, timeout=30)
            if reg.returncode != 0:
                raise RuntimeError(f"{ep} did not register:\n{reg.stdout[-2000:]}")
        cmd = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
               "-p", str(port), "-mp", str(free_port(socket.SOCK_DGRAM)), "-nostdin",
               "-max_socket", "2000"]
        if trace:
            cmd += ["-trace_msg", "-message_file", str(workdir / "msg.log")]
        with (workdir / "sipp.out").open("w") as out:
            popen = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                     text=True)
        phone = Sipp(name, popen, workdir)
        self.phones.append(phone)
        self.exit.callback(phone.stop)
        # qualified again now that SIPp listens: an operator whose phone Asterisk sees as
        # unreachable cannot log in (stack.testphones)
        wait_reachable(self.settings, endpoints, timeout=60)
        return phone

    def login(self, endpoints: list[str], queue: str) -> None:
        """Operators log in over the command API (ari_app adds them over AMI)."""
        client = redis.Redis.from_url(self.settings.redis.url)
        keys = Keys(self.settings.redis.prefix)
        try:
            pending: dict[str, str] = {}
            for ep in endpoints:
                cmd = AgentLogin(tenant="city", endpoint=ep, queues=[queue])
                pending[send_command(client, keys, cmd)] = ep
            results: dict[str, dict[str, Any]] = {}

            def all_answered() -> bool:
                for _sid, body in read_events(client, keys, count=100000):
                    try:
                        event = decode(body)
                    except Exception:  # noqa: BLE001 - other events; only results count
                        continue
                    cid = getattr(event, "command_id", None)
                    if event.type == "command.result" and cid in pending:
                        results[cid] = event.to_dict()["data"]
                return len(results) == len(pending)

            wait_until(all_answered, 30, f"log-in of {len(endpoints)} operators not answered")
            refused = {pending[c]: r for c, r in results.items() if not r.get("ok")}
            if refused:
                raise RuntimeError(f"log-in refused: {refused}")
        finally:
            client.close()
        assert self.asterisk is not None

        def members_ready() -> bool:
            assert self.asterisk is not None
            text = self.asterisk.cli(f"queue show {queue}")
            return text.count("(Not in use)") >= len(endpoints)

        wait_until(members_ready, 30, f"{queue}: operators not ready")

    def caller(self, name: str, rows: list[tuple[str, str]], rate: float, hold_ms: int,
               timeout: float, trace: bool = False) -> Sipp:
        """Start a SIPp caller placing one call per row (DID, caller number)."""
        workdir = self.tmp / name
        workdir.mkdir()
        inf = workdir / "calls.csv"
        with inf.open("w", newline="") as fh:
            fh.write("SEQUENTIAL\n")
            writer = csv.writer(fh, delimiter=";", lineterminator=";\n")
            writer.writerows(rows)
        cmd = ["sipp", f"127.0.0.1:{self.settings.asterisk.sip_port}", "-sf", str(UAC_HOLD),
               "-inf", str(inf), "-i", CALLER_IP, "-mi", CALLER_IP,
               "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
               "-m", str(len(rows)), "-r", str(rate), "-rp", "1000",
               "-l", str(len(rows)), "-d", str(hold_ms), "-recv_timeout", "30000",
               "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
               "-max_socket", "4000",
               "-trace_stat", "-fd", "1", "-stf", str(workdir / f"{name}.stat.csv"),
               "-trace_err", "-error_file", str(workdir / "errors.log")]
        if trace:
            cmd += ["-trace_msg", "-message_file", str(workdir / "msg.log")]
        with (workdir / "sipp.out").open("w") as out:
            popen = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                     text=True)
        sipp = Sipp(name, popen, workdir)
        self.exit.callback(sipp.stop)
        return sipp

    # -- observation

    def ari_get(self, path: str) -> Any:
        a = self.settings.asterisk
        resp = httpx.get(f"{a.ari_url}{path}", auth=(a.ari_user, a.ari_password), timeout=10)
        resp.raise_for_status()
        return resp.json()

    def channel_counts(self) -> dict[str, int]:
        """Live channels by role: callers (from the trunk) and operator legs."""
        channels = self.ari_get("/channels")
        trunk = f"PJSIP/{self.settings.trunk.name}-"
        callers = sum(1 for c in channels if str(c.get("name", "")).startswith(trunk))
        prefix = f"PJSIP/{self.settings.operators.prefix}"
        talking = sum(1 for c in channels if str(c.get("name", "")).startswith(prefix)
                      and c.get("state") == "Up")
        out = {"channels": len(channels), "callers": callers, "talking": talking}
        if self.watch_queue and self.asterisk is not None:
            text = self.asterisk.cli(f"queue show {self.watch_queue}")
            found = re.search(r"has (\d+) calls?", text)
            out["queue_waiting"] = int(found.group(1)) if found else -1
            out["members_in_use"] = text.count("(In use)") + text.count("(Busy)")
            out["members_free"] = text.count("(Not in use)")
            out["members_unavailable"] = text.count("(Unavailable)")
        return out

    def orphans(self) -> dict[str, int]:
        """Channels and bridges still alive (Asterisk CLI and ARI)."""
        assert self.asterisk is not None
        text = self.asterisk.cli("core show channels count")
        found = re.search(r"(\d+) active channels?", text)
        cli_channels = int(found.group(1)) if found else -1
        bridges_cli = [ln for ln in self.asterisk.cli("bridge show all").splitlines()
                       if re.match(r"^[0-9a-f]{8}-", ln.strip())]
        return {"channels": max(cli_channels, len(self.ari_get("/channels"))),
                "bridges": max(len(bridges_cli), len(self.ari_get("/bridges")))}

    def wait_quiet(self, timeout: float) -> dict[str, int]:
        """Wait until no channel or bridge is left (or the time is up); the last count."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.orphans()
            if (left["channels"] == 0 and left["bridges"] == 0) or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def timelines(self, service_id: str) -> dict[str, int]:
        """Calls of one service in the database and how many timelines are incomplete
        (no 'arrived' or no 'ended' event, or the call is not marked ended)."""
        engine = make_engine(self.settings.database_url)
        try:
            with session_factory(engine)() as session:
                calls = list(session.scalars(select(Call).where(Call.service_id == service_id)))
                kinds: dict[str, set[str]] = {}
                for call_id, kind in session.execute(
                        select(CallEvent.call_id, CallEvent.kind)
                        .join(Call, Call.id == CallEvent.call_id)
                        .where(Call.service_id == service_id)):
                    kinds.setdefault(call_id, set()).add(kind)
        finally:
            engine.dispose()
        incomplete = sum(1 for c in calls if c.status != "ended"
                         or not {"arrived", "ended"} <= kinds.get(c.id, set()))
        return {"calls": len(calls), "incomplete": incomplete}

    def step_offsets(self, service_id: str,
                     kinds: tuple[str, ...] = ("answered", "hours", "prompt", "prompt_end",
                                               "to_queue", "queue_join", "ring")
                     ) -> dict[str, float]:
        """Median time (ms) from 'arrived' (StasisStart's own timestamp) to each timeline
        event of the service's calls: where ari_app spends the routing time."""
        engine = make_engine(self.settings.database_url)
        offsets: dict[str, list[float]] = {k: [] for k in kinds}
        try:
            with session_factory(engine)() as session:
                rows = session.execute(
                    select(CallEvent.call_id, CallEvent.kind, CallEvent.at)
                    .join(Call, Call.id == CallEvent.call_id)
                    .where(Call.service_id == service_id)).all()
        finally:
            engine.dispose()
        per_call: dict[str, dict[str, datetime]] = {}
        for call_id, kind, at in rows:
            per_call.setdefault(call_id, {}).setdefault(kind, at)
        for events in per_call.values():
            start = events.get("arrived")
            if start is None:
                continue
            for kind in kinds:
                if kind in events:
                    offsets[kind].append((events[kind] - start).total_seconds() * 1000)
        return {k: round(statistics.median(v), 1) for k, v in offsets.items() if v}

    def wait_timelines(self, service_id: str, expected: int, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.timelines(service_id)
            if (got["calls"] >= expected and got["incomplete"] == 0) \
                    or time.monotonic() > deadline:
                return got
            time.sleep(1.0)

    def ari_app_problems(self) -> int:
        """ERROR/exception lines ari_app logged."""
        text = self.ari_app_log.read_text(errors="replace") if self.ari_app_log.exists() else ""
        return sum(1 for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln)

    def pids(self) -> dict[str, int]:
        assert self.asterisk is not None and self.asterisk.process is not None
        assert self.ari_app is not None
        return {"asterisk": self.asterisk.process.pid, "ari_app": self.ari_app.pid}

    # -- stop

    def _keep_logs(self, dest: Path) -> None:
        """Copy the logs of this run (ari_app, Asterisk, SIPp) to ``dest`` for a look
        afterwards; the temporary folder itself is removed."""
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        wanted = [self.ari_app_log, *self.tmp.glob("*/sipp.out"), *self.tmp.glob("*/errors.log"),
                  *self.tmp.glob("*/*.stat.csv")]
        if self.asterisk is not None:
            wanted += [self.asterisk.log_file, self.asterisk.full_log]
        for path in wanted:
            if path.is_file():
                target = dest / (f"{path.parent.name}-{path.name}"
                                 if path.parent != self.tmp else path.name)
                shutil.copy2(path, target)

    def _stop_ari_app(self) -> None:
        if self.ari_app is not None:
            _terminate(self.ari_app)

    def _stop_asterisk(self) -> None:
        if self.asterisk is None:
            return
        try:
            if self.asterisk.running():
                self.asterisk.cli("channel request hangup all")
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self.asterisk.stop()

    def close(self) -> None:
        """Stop everything this stack started (last started first), keep the logs if
        asked, then remove the temporary folders."""
        try:
            self.exit.close()
        finally:
            if self.keep_logs is not None:
                try:
                    self._keep_logs(self.keep_logs)
                except OSError as exc:
                    self.log(f"logs not kept: {exc}")
            if self.asterisk is not None and not self.asterisk.running():
                shutil.rmtree(self.asterisk.host_dir, ignore_errors=True)
            shutil.rmtree(self.tmp, ignore_errors=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def source_version() -> str:
    """The code measured: ``git describe`` of this folder (with -dirty when the working
    tree has changes), or the note in .bench-source of an exported copy."""
    note = ROOT / ".bench-source"
    if note.is_file():
        return note.read_text().strip()
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def steady(probes: list[dict[str, int]], key: str = "callers",
           share: float = 0.9) -> dict[str, float]:
    """Median of every probe value over the samples where ``key`` was at least ``share``
    of its peak: the loaded plateau rather than one instant."""
    peak = max((p.get(key, 0) for p in probes), default=0)
    plateau = [p for p in probes if peak and p.get(key, 0) >= share * peak]
    if not plateau:
        return {}
    keys = sorted({k for p in plateau for k in p})
    out: dict[str, float] = {k: statistics.median(p.get(k, 0) for p in plateau) for k in keys}
    out["samples"] = len(plateau)
    return out


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "kernel": os.uname().release}
