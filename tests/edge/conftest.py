"""The SIP edge on loopback: a real Kamailio (stack.edge.Edge) in front of two "sites"
and a carrier played by SIPp (tests/sipp/edge_site.xml, edge_caller.xml).

    edge      127.0.0.1  (UDP SIP and the JSON-RPC's TCP port: free ports)
    site a    127.0.0.2  priority 20   SIPp UAS
    site b    127.0.0.3  priority 10   SIPp UAS
    carrier   127.0.0.4  SIPp UAS (edge.carrier) and the SIPp callers

One edge and its sites per test module (``edge_env``, module scope); every process is
killed and every folder removed at the end.
"""

from __future__ import annotations

import errno
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.edge import fetch_routes
from common.settings import PROJECT_ROOT, Settings, load_settings
from stack.edge import Edge, EdgeUnavailable, kamailio_binary
from tests.conftest import wait_until

SIPP_DIR = PROJECT_ROOT / "tests" / "sipp"
EDGE_IP = "127.0.0.1"
SITE_IPS = {"a": "127.0.0.2", "b": "127.0.0.3"}
CARRIER_IP = "127.0.0.4"
#: the timers of the test edge: short, so losses and failbacks happen within seconds
EDGE_TIMERS = {"probe_interval": 1, "probe_failures": 2, "probe_timeout_ms": 500,
               "invite_timeout_ms": 1000, "failback_seconds": 3}


def free_port(ip: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def udp_port_taken(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _sipp() -> str:
    binary = shutil.which("sipp")
    if binary is None:
        pytest.fail("sipp is not installed: run scripts/setup.sh test (Debian package "
                    "sip-tester)")
    return binary


@dataclass
class SippUas:
    """A SIPp UAS on ip:port running edge_site.xml as ``name`` (a site or the carrier)."""

    name: str
    ip: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        assert self.proc is None, f"{self.name} is already running"
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        scenario = self.workdir / f"edge_site.{self.name}.xml"
        scenario.write_text((SIPP_DIR / "edge_site.xml").read_text()
                            .replace("@SITE@", self.name))
        cmd = [_sipp(), "-sf", str(scenario), "-i", self.ip, "-mi", self.ip,
               "-p", str(self.port), "-mp", str(free_port(self.ip)), "-bind_local",
               "-nostdin", "-trace_logs", "-log_file", str(self.log_file),
               "-trace_err", "-error_file", str(self.workdir / f"{self.name}.errors.log")]
        with (self.workdir / f"{self.name}.out").open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_until(lambda: self._check_alive() and udp_port_taken(self.ip, self.port), 10,
                   f"SIPp {self.name} did not bind {self.ip}:{self.port}")

    def _check_alive(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (
            f"SIPp {self.name} exited:\n{(self.workdir / f'{self.name}.out').read_text()}")
        return True

    def kill(self) -> None:
        """SIGKILL: the site is gone at once, with nothing sent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait(10)

    def lines(self) -> list[str]:
        """What it logged (``NAME <request line>`` per request, ``NAME BYE``, ...)."""
        if not self.log_file.exists():
            return []
        return [ln.strip() for ln in self.log_file.read_text(errors="replace").splitlines()
                if ln.strip()]

    def received(self, prefix: str) -> list[str]:
        return [ln for ln in self.lines() if ln.startswith(f"{self.name} {prefix}")]


@dataclass
class CallResult:
    returncode: int
    outcome: str  # "answered by b", "refused 503", or "" when neither was logged
    seconds: float
    output: str
    log: Path  # the caller's log; its other files (-trace_msg) are beside it
    logged: list[str]  # the caller's <log> lines


@dataclass
class EdgeEnv:
    settings: Settings
    edge: Edge
    sites: dict[str, SippUas]
    carrier: SippUas
    workdir: Path
    _calls: int = field(default=0)

    def routes_state(self) -> dict[str, str]:
        return {sid: r.state for sid, r in fetch_routes(self.settings, timeout=2).items()}

    def wait_state(self, site_id: str, state: str, timeout: float = 10) -> float:
        """Poll the edge's RPC until ``site_id`` is ``state``; seconds it took."""
        start = time.monotonic()
        wait_until(lambda: self.routes_state()[site_id] == state, timeout,
                   f"site {site_id} did not become {state} (edge log:\n"
                   f"{self.edge.log_tail(15)})", interval=0.05)
        return time.monotonic() - start

    def _caller_cmd(self, number: str, local_ip: str, scenario: str,
                    workdir: Path, log: Path, extra: list[str]) -> list[str]:
        return [_sipp(), f"{self.settings.edge.bind}:{self.settings.edge.port}",
                "-sf", str(SIPP_DIR / scenario), "-s", number,
                "-i", local_ip, "-mi", local_ip, "-bind_local",
                "-p", str(free_port(local_ip)), "-mp", str(free_port(local_ip)),
                "-m", "1", "-timeout", "20s", "-timeout_error", "-nostdin",
                "-trace_logs", "-log_file", str(log),
                "-trace_err", "-error_file", str(workdir / f"{log.stem}.errors.log"),
                *extra]

    def start_call(self, number: str, *, local_ip: str = CARRIER_IP,
                   scenario: str = "edge_caller.xml",
                   extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], Path, float]:
        """Start one SIPp call to the edge in the background."""
        self._calls += 1
        workdir = self.workdir / f"call{self._calls}"
        workdir.mkdir(parents=True)
        log = workdir / "call.log"
        cmd = self._caller_cmd(number, local_ip, scenario, workdir, log, list(extra))
        with (workdir / "sipp.out").open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        return proc, log, time.monotonic()

    def finish_call(self, call: tuple[subprocess.Popen[bytes], Path, float]) -> CallResult:
        proc, log, started = call
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            code = -9
        seconds = time.monotonic() - started
        text = log.read_text(errors="replace") if log.exists() else ""
        logged = [ln.strip() for ln in text.splitlines() if ln.strip()]
        outcome = next((ln for ln in logged
                        if ln.startswith(("answered by", "refused", "options"))), "")
        errors = "".join(p.read_text(errors="replace")[-2000:]
                         for p in log.parent.glob("*.errors.log"))
        return CallResult(code, outcome, seconds, f"{text}\n{errors}", log, logged)

    def call(self, number: str, *, local_ip: str = CARRIER_IP,
             scenario: str = "edge_caller.xml", extra: tuple[str, ...] = ()) -> CallResult:
        """One SIPp call to the edge, to its end."""
        return self.finish_call(self.start_call(number, local_ip=local_ip, scenario=scenario,
                                                extra=extra))


def edge_settings(tmp: Path) -> Settings:
    """Settings of a two-site form on loopback with free ports (through a site file, as
    in production)."""
    ports = {sid: free_port(ip) for sid, ip in SITE_IPS.items()}
    carrier_port = free_port(CARRIER_IP)
    timers = "\n".join(f"{k} = {v}" for k, v in EDGE_TIMERS.items())
    site_file = tmp / "site.toml"
    site_file.write_text(f"""
[edge]
bind = "{EDGE_IP}"
port = {free_port(EDGE_IP)}
rpc_port = {free_port(EDGE_IP, socket.SOCK_STREAM)}
carrier = "sip:{CARRIER_IP}:{carrier_port}"
{timers}

[[sites]]
id = "a"
name = "本庁舎"
name_en = "City hall"
sip = "{SITE_IPS['a']}:{ports['a']}"
web = "http://{SITE_IPS['a']}:8000/"
priority = 20

[[sites]]
id = "b"
name = "北支所"
name_en = "North branch"
sip = "{SITE_IPS['b']}:{ports['b']}"
web = "http://{SITE_IPS['b']}:8000/"
priority = 10
""")
    return load_settings({"MADOGUCHI_CONFIG": str(site_file),
                          "MADOGUCHI_SITE__DATA_DIR": str(tmp / "data")})


@pytest.fixture(scope="module")
def edge_env() -> Iterator[EdgeEnv]:
    try:
        kamailio_binary()
    except EdgeUnavailable as exc:
        pytest.fail(str(exc))
    tmp = Path(tempfile.mkdtemp(prefix="mado-edge-"))
    settings = edge_settings(tmp)
    sites = {s.id: SippUas(s.id, s.sip.split(":")[0], int(s.sip.split(":")[1]), tmp / s.id)
             for s in settings.sites}
    carrier_host, carrier_port = settings.edge.carrier.removeprefix("sip:").split(":")
    carrier = SippUas("carrier", carrier_host, int(carrier_port), tmp / "carrier")
    edge = Edge(settings, tmp / "edge")
    env = EdgeEnv(settings, edge, sites, carrier, tmp)
    try:
        for uas in (*sites.values(), carrier):
            uas.start()
        edge.start()
        # every site answered a probe: both up (not merely "assumed up" before probing)
        wait_until(lambda: all(r.flags == "AP" for r in
                               fetch_routes(settings, timeout=2).values()), 10,
                   "the sites were not probed")
        yield env
    finally:
        edge.stop()
        for uas in (*sites.values(), carrier):
            uas.kill()
        shutil.rmtree(tmp, ignore_errors=True)
