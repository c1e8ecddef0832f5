"""The two-site form on one machine (docs/sites.md): the Kamailio edge and every site
(Asterisk + ari_app, optionally the web), each site on its own loopback address, sharing
one Redis and one SQL database -- for the tests, the failover benchmark and a drill.

    python -m stack.sites            # start the edge and two sites; Ctrl-C stops them

Addresses (all loopback): the edge ``EDGE_IP``, the sites ``SITE_IPS`` in order, the
carrier (callers, and where the sites' callbacks go) ``CARRIER_IP``. The phones register
from 127.0.0.1, which is never the edge's address: each site identifies the trunk by the
edge's address alone. A site is lost by ``kill_site``: SIGKILL of its Asterisk and its
ari_app (and its web).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import shutil
import signal
import socket
import subprocess  # nosec B404 # runs the system's own processes and SIPp, fixed argv
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from common.bus import read_events
from common.commands import AgentLogin, send_command
from common.events import decode
from common.keys import Keys
from common.settings import PROJECT_ROOT, Settings, load_settings, to_environ
from stack.asterisk import AsteriskInstance, provide
from stack.edge import Edge
from stack.loopback import free_port, free_udp_range, terminate, wait_until
from stack.render import phones as all_phones
from stack.testphones import wait_reachable

logger = logging.getLogger(__name__)

EDGE_IP = "127.0.0.10"
SITE_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
CARRIER_IP = "127.0.0.20"
SIPP = PROJECT_ROOT / "tests" / "sipp"
UAC_HOLD = SIPP / "uac_edge_hold.xml"
UAC_WAIT_BYE = SIPP / "uac_edge_wait_bye.xml"
DEFAULT_SITES = (("a", "本庁舎", "City hall", 20), ("b", "北支所", "North branch", 10))
PRE_QUEUE_PROMPTS = ("greeting", "survey_invite")
RTP_PORTS = 1200  # per site: enough for the 50 lines of the capacity site file


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class SiteRun:
    """One running site."""

    id: str
    ip: str
    settings: Settings
    env: dict[str, str]
    logdir: Path
    asterisk: AsteriskInstance | None = None
    ari_app: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    phones: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.redis.prefix)

    @property
    def web_url(self) -> str:
        return f"http://{self.settings.web.bind}:{self.settings.web.port}"

    def alive(self) -> bool:
        return self.asterisk is not None and self.asterisk.running()


class SitesStack:
    """The edge and the sites; ``close()`` stops everything it started."""

    def __init__(self, base_site_file: Path, workdir: Path | None = None, *,
                 sites: tuple[tuple[str, str, str, int], ...] = DEFAULT_SITES,
                 silent_greeting: bool = True, web: bool = False,
                 edge_overrides: dict[str, Any] | None = None,
                 redis_url: str = "", database_url: str = "",
                 environ: dict[str, str] | None = None,
                 log: Callable[[str], None] = logger.info) -> None:
        """``environ``: more settings for every process (``MADOGUCHI_...`` variables)."""
        self.base_site_file = base_site_file
        self.own_tmp = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mado-sites-"))
        self.site_defs = sites
        self.silent_greeting = silent_greeting
        self.with_web = web
        self.edge_overrides = edge_overrides or {}
        self.redis_url = redis_url
        self.database_url = database_url
        self.log = log
        self.extra_environ = environ or {}
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.edge: Edge | None = None
        self.sites: dict[str, SiteRun] = {}
        self.site_file = self.workdir / "sites.toml"
        self.carrier_port = free_port(socket.SOCK_DGRAM)
        self._callers: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ start

    def start(self) -> SitesStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            self.redis_url = self._start_redis()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.workdir / 'shared.sqlite3'}"
        sounds = self.workdir / "sounds"
        sounds.mkdir(exist_ok=True)
        for prompt in PRE_QUEUE_PROMPTS if self.silent_greeting else ():
            (sounds / f"{prompt}.sln").write_bytes(b"")
        edge_port, rpc_port = free_port(socket.SOCK_DGRAM), free_port()
        sip_ports = {sid: free_port(socket.SOCK_DGRAM) for sid, *_ in self.site_defs}
        self._write_site_file(edge_port, rpc_port, sip_ports)
        # the edge reads [edge] and [[sites]] from the same file (no site of its own)
        edge_settings = load_settings(self._environ(""))
        self.edge = Edge(edge_settings, self.workdir / "edge")
        self.edge.start()
        self.log(f"edge on {EDGE_IP}:{edge_port} (RPC {rpc_port})")
        for i, (sid, *_rest) in enumerate(self.site_defs):
            self._start_site(sid, SITE_IPS[i], sip_ports[sid], sounds)

    def _write_site_file(self, edge_port: int, rpc_port: int,
                         sip_ports: dict[str, int]) -> None:
        text = self.base_site_file.read_text(encoding="utf-8")
        edge = {"bind": EDGE_IP, "port": edge_port, "rpc_port": rpc_port,
                "carrier": f"sip:{CARRIER_IP}:{self.carrier_port}",
                **self.edge_overrides}
        lines = ["", "# ---- the two-site form (stack/sites.py)", "[edge]"]
        lines += [f"{k} = {_toml(v)}" for k, v in edge.items()]
        for i, (sid, name, name_en, priority) in enumerate(self.site_defs):
            lines += ["", "[[sites]]", f"id = {_toml(sid)}", f"name = {_toml(name)}",
                      f"name_en = {_toml(name_en)}", f"priority = {priority}",
                      f"sip = {_toml(f'{SITE_IPS[i]}:{sip_ports[sid]}')}",
                      f"web = {_toml(f'http://{SITE_IPS[i]}:8000/')}"]
        self.site_file.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")

    def _environ(self, site_id: str, **extra: str) -> dict[str, str]:
        env = {"MADOGUCHI_CONFIG": str(self.site_file),
               "MADOGUCHI_SITE__DATA_DIR": str(self.workdir / "data"),
               "MADOGUCHI_SITE__LOG_LEVEL": "INFO",
               "MADOGUCHI_REDIS__URL": self.redis_url,
               "MADOGUCHI_DATABASE__URL": self.database_url,
               "MADOGUCHI_PROMPTS__CUSTOM_DIR": str(self.workdir / "sounds"),
               "MADOGUCHI_TRUNK__MATCH": EDGE_IP,
               "MADOGUCHI_TRUNK__QUALIFY_SECONDS": "0",
               "MADOGUCHI_TRANSCRIPTION__ENABLED": "false"}
        env.update(self.extra_environ)
        if site_id:
            env["MADOGUCHI_SITE__ID"] = site_id
            env["MADOGUCHI_REDIS__PREFIX"] = f"mado-{site_id}"
        env.update(extra)
        return env

    def _start_site(self, sid: str, ip: str, sip_port: int, sounds: Path) -> None:
        rtp = free_udp_range(RTP_PORTS)
        rootfs = Path(load_settings(self._environ("")).asterisk.rootfs)
        rootfs = (rootfs if rootfs.is_absolute() else PROJECT_ROOT / rootfs).resolve()
        assert self.edge is not None  # nosec B101 # started above
        edge = self.edge.settings.edge
        environ = self._environ(
            sid,
            MADOGUCHI_ASTERISK__ROOTFS=str(rootfs),
            MADOGUCHI_ASTERISK__HOST=ip, MADOGUCHI_ASTERISK__SIP_BIND=ip,
            MADOGUCHI_ASTERISK__SIP_PORT=str(sip_port),
            MADOGUCHI_ASTERISK__HTTP_BIND=ip, MADOGUCHI_ASTERISK__HTTP_PORT=str(free_port()),
            MADOGUCHI_ASTERISK__AMI_BIND=ip, MADOGUCHI_ASTERISK__AMI_PORT=str(free_port()),
            MADOGUCHI_ASTERISK__RTP_START=str(rtp),
            MADOGUCHI_ASTERISK__RTP_END=str(rtp + RTP_PORTS - 1),
            MADOGUCHI_ASTERISK__ARI_APP=f"mado-{sid}",
            MADOGUCHI_TRUNK__CONTACT=f"sip:{edge.bind}:{edge.port}",
            MADOGUCHI_WEB__BIND=ip, MADOGUCHI_WEB__PORT=str(free_port()))
        settings = load_settings(environ)
        logdir = self.workdir / f"logs-{sid}"
        logdir.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
        env.update(to_environ(settings))
        env["MADOGUCHI_CONFIG"] = str(self.site_file)
        env["PYTHONUNBUFFERED"] = "1"
        run = SiteRun(sid, ip, settings, env, logdir)
        self.sites[sid] = run
        install = provide(settings, build=True)
        run.asterisk = AsteriskInstance(install, settings, f"site{sid}-{os.getpid()}")
        run.asterisk.start()
        run.ari_app = self._spawn(run, "ari_app", ["-m", "ari_app.main"])
        if self.with_web:
            run.web = self._spawn(run, "web", ["-m", "web.main"])
        self._wait_ari_app(run)
        self.log(f"site {sid}: Asterisk on {ip}:{sip_port}, ari_app connected")

    def _spawn(self, run: SiteRun, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (run.logdir / f"{name}.log").open("ab") as fh:
            return subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT,  # nosec B603 # own interpreter and argv
                                    env=run.env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

    def _wait_ari_app(self, run: SiteRun) -> None:
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)

        def ready() -> bool:
            if run.ari_app is not None and run.ari_app.poll() is not None:
                raise RuntimeError(f"ari_app of site {run.id} exited:\n"
                                   f"{(run.logdir / 'ari_app.log').read_text()[-3000:]}")
            for key in client.scan_iter(run.keys.health_pattern("ari_app")):
                beat = client.hgetall(key)
                return beat.get("ari") == "up" and beat.get("ami") == "up"
            return False

        try:
            wait_until(ready, 60, f"ari_app of site {run.id} did not connect")
        finally:
            client.close()

    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/setup.sh")
        port = free_port()
        rdir = self.workdir / "redis"
        rdir.mkdir(exist_ok=True)
        self.redis_proc = subprocess.Popen(  # nosec B603 # redis-server by shutil.which
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(rdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            wait_until(client.ping, 10, "redis-server did not start")
        finally:
            client.close()
        return url

    # ------------------------------------------------------------ operators

    def phones_up(self, site_id: str, endpoints: list[str],
                  scenario: Path = SIPP / "uas_phone.xml",
                  trace: Path | None = None,
                  extra_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """Register ``endpoints`` at the site from one SIPp (127.0.0.1), which answers
        every call to them (``trace``: log every message there, SIPp -trace_msg)."""
        run = self.sites[site_id]
        passwords = {p.id: p.password for p in all_phones(run.settings)}
        port = free_port(socket.SOCK_DGRAM)
        sip = f"{run.ip}:{run.settings.asterisk.sip_port}"
        workdir = run.logdir / f"phones-{port}"
        workdir.mkdir()
        for ep in endpoints:
            reg = subprocess.run(  # nosec B603 B607 # sipp, fixed argv
                ["sipp", sip, "-sf", str(SIPP / "register_auth.xml"), "-s", ep, "-au", ep,
                 "-ap", passwords[ep], "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                 "-timeout", "10s", "-timeout_error", "-nostdin"],
                cwd=workdir, capture_output=True, text=True, timeout=30)
            if reg.returncode != 0:
                raise RuntimeError(f"{ep} did not register at site {site_id}:\n"
                                   f"{reg.stdout[-2000:]}")
        with (workdir / "sipp.out").open("wb") as out:
            proc = subprocess.Popen(  # nosec B603 B607 # sipp, fixed argv
                ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
                 "-p", str(port), "-mp", str(free_port(socket.SOCK_DGRAM)), "-nostdin",
                 "-max_socket", "500",
                 *(["-trace_msg", "-message_file", str(trace)] if trace else []),
                 *extra_args],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        run.phones.append(proc)
        wait_reachable(run.settings, endpoints, timeout=30)
        return proc

    def login(self, site_id: str, endpoints: list[str], queue: str) -> None:
        """Operators log in at the site over its command stream; wait until ready. A phone
        the controller does not see reachable yet (its device state lags the registration
        by a moment) is asked again, for up to 15 s."""
        deadline = time.monotonic() + 15
        while True:
            refused = self._login_once(site_id, endpoints, queue)
            late = [ep for ep, r in refused.items() if r.get("code") == "phone_unavailable"]
            if not refused:
                break
            if len(late) < len(refused) or time.monotonic() > deadline:
                raise RuntimeError(f"log-in refused at site {site_id}: {refused}")
            endpoints = late
            time.sleep(0.5)
        run = self.sites[site_id]
        assert run.asterisk is not None  # nosec B101 # started
        wait_until(lambda: run.asterisk.cli(f"queue show {queue}").count("(Not in use)")  # type: ignore[union-attr]
                   >= len(endpoints), 30, f"{queue} at site {site_id}: operators not ready")

    def _login_once(self, site_id: str, endpoints: list[str],
                    queue: str) -> dict[str, dict[str, Any]]:
        """Send the log-ins, wait for every answer; the refused ones by endpoint."""
        run = self.sites[site_id]
        client = redis.Redis.from_url(self.redis_url)
        try:
            pending = {send_command(client, run.keys,
                                    AgentLogin(tenant="city", endpoint=ep, queues=[queue])): ep
                       for ep in endpoints}
            results: dict[str, Any] = {}

            def answered() -> bool:
                for _sid, body in read_events(client, run.keys, count=100000):
                    try:
                        event = decode(body)
                    except Exception:  # noqa: BLE001 - other events
                        continue
                    cid = getattr(event, "command_id", None)
                    if event.type == "command.result" and cid in pending:
                        results[cid] = event.to_dict()["data"]
                return len(results) == len(pending)

            wait_until(answered, 30, f"log-in at site {site_id} not answered")
            return {pending[c]: r for c, r in results.items() if not r.get("ok")}
        finally:
            client.close()

    # -------------------------------------------------------------- callers

    def carrier_up(self, hold_ms: int = 3000,
                   scenario: Path = SIPP / "uas_answer_hangup.xml") -> subprocess.Popen[bytes]:
        """The carrier's side of the calls the sites place (callbacks, through the edge to
        ``edge.carrier``): SIPp on the carrier's address, answering every call and
        hanging up after ``hold_ms``."""
        workdir = self.workdir / "carrier"
        workdir.mkdir(exist_ok=True)
        with (workdir / "sipp.out").open("wb") as out:
            proc = subprocess.Popen(  # nosec B603 B607 # sipp, fixed argv
                ["sipp", "-sf", str(scenario), "-i", CARRIER_IP, "-mi", CARRIER_IP,
                 "-p", str(self.carrier_port), "-mp", str(free_port(socket.SOCK_DGRAM)),
                 "-d", str(hold_ms), "-nostdin", "-max_socket", "500", "-trace_msg",
                 "-message_file", str(workdir / "msg.log")],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        self._callers.append(proc)
        return proc

    @property
    def edge_address(self) -> str:
        assert self.edge is not None  # nosec B101 # started
        return f"{self.edge.settings.edge.bind}:{self.edge.settings.edge.port}"

    def call(self, name: str, rows: list[tuple[str, str]], hold_ms: int, rate: float = 10.0,
             timeout: float = 120.0, scenario: Path = UAC_HOLD, target: str = "",
             source: str = CARRIER_IP) -> subprocess.Popen[bytes]:
        """SIPp callers from the carrier's address to the edge (or ``target``, host:port,
        from ``source``), one call per (DID, caller number) row; the process ends when
        every call ended (exit 0: all succeeded). Its folder: ``caller_dir(name)``."""
        workdir = self.caller_dir(name)
        workdir.mkdir()
        inf = workdir / "calls.csv"
        with inf.open("w", newline="") as fh:
            fh.write("SEQUENTIAL\n")
            csv.writer(fh, delimiter=";", lineterminator=";\n").writerows(rows)
        cmd = ["sipp", target or self.edge_address, "-sf", str(scenario), "-inf", str(inf),
               "-i", source, "-mi", source, "-p", str(free_port(socket.SOCK_DGRAM)),
               "-mp", str(free_port(socket.SOCK_DGRAM)), "-m", str(len(rows)),
               "-r", str(rate), "-rp", "1000", "-l", str(len(rows)), "-d", str(hold_ms),
               "-recv_timeout", "60000", "-timeout", f"{int(timeout)}s", "-timeout_error",
               "-nostdin", "-max_socket", "500", "-trace_stat", "-fd", "1",
               "-stf", str(workdir / "stat.csv"), "-trace_err",
               "-error_file", str(workdir / "errors.log"), "-trace_msg",
               "-message_file", str(workdir / "msg.log")]
        with (workdir / "sipp.out").open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=workdir, stdout=out,  # nosec B603 # sipp, fixed argv
                                    stderr=subprocess.STDOUT)
        self._callers.append(proc)
        return proc

    def caller_dir(self, name: str) -> Path:
        return self.workdir / f"caller-{name}"

    # ----------------------------------------------------------------- loss

    def kill_site(self, site_id: str) -> None:
        """Lose a site: SIGKILL its Asterisk, ari_app and web at once."""
        run = self.sites[site_id]
        procs: list[Any] = [run.ari_app, run.web]
        if run.asterisk is not None and run.asterisk.process is not None:
            with contextlib.suppress(ProcessLookupError):  # died by itself already
                os.killpg(run.asterisk.process.pid, signal.SIGKILL)
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
        for proc in [*procs, run.asterisk.process if run.asterisk else None]:
            if proc is not None:
                proc.wait(10)

    def revive_site(self, site_id: str) -> None:
        """Start a lost site again (its Asterisk and ari_app, on the same addresses); its
        phones must register again (``phones_up``)."""
        run = self.sites[site_id]
        assert run.asterisk is not None  # nosec B101 # started once
        for proc in run.phones:
            terminate(proc)
        run.phones.clear()
        run.asterisk.start()
        run.ari_app = self._spawn(run, "ari_app", ["-m", "ari_app.main"])
        if self.with_web:
            run.web = self._spawn(run, "web", ["-m", "web.main"])
        self._wait_ari_app(run)

    # ----------------------------------------------------------------- stop

    def close(self) -> None:
        for caller in self._callers:
            terminate(caller)
        for run in reversed(list(self.sites.values())):
            for proc in [*run.phones, run.web, run.ari_app]:
                if proc is not None:
                    terminate(proc)
            if run.asterisk is not None:
                if run.asterisk.running():
                    with contextlib.suppress(Exception):  # stopping anyway
                        run.asterisk.cli("channel request hangup all")
                run.asterisk.stop()
                for log in (run.asterisk.log_file, run.asterisk.full_log):
                    if not self.own_tmp and log.is_file():  # a kept folder keeps its logs
                        shutil.copy2(log, run.logdir / f"asterisk-{log.name}")
                shutil.rmtree(run.asterisk.host_dir, ignore_errors=True)
        if self.edge is not None:
            self.edge.stop()
        if self.redis_proc is not None:
            terminate(self.redis_proc)
        if self.own_tmp:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the edge and two sites on this "
                                     "machine (a failover drill); Ctrl-C stops them.")
    parser.add_argument("--site-file", default=str(PROJECT_ROOT / "tests" / "integration"
                                                   / "site-test.toml"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stack = SitesStack(Path(args.site_file), web=True, log=print)
    try:
        stack.start()
        for sid, run in stack.sites.items():
            print(f"site {sid}: SIP {run.ip}:{run.settings.asterisk.sip_port}, web "
                  f"{run.web_url}, redis prefix {run.settings.redis.prefix}")
        print(f"carrier: call the edge at {stack.edge_address} from {CARRIER_IP}; "
              f"lose a site with kill -9 of its Asterisk and ari_app (logs in "
              f"{stack.workdir})")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
