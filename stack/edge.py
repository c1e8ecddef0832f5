"""Render and run the SIP edge of the two-site form: Kamailio 5.6 (Debian's package) in
front of the operator sites (``[edge]``, ``[[sites]]``; edge/kamailio.cfg.j2).

    python -m stack.edge run [--workdir DIR]  # run the edge until Ctrl-C / SIGTERM
    python -m stack.edge render OUT_DIR       # kamailio.cfg and dispatcher.list
    python -m stack.edge check                # render, then `kamailio -c` checks it
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import shutil
import signal
import socket
import subprocess  # nosec B404 # runs Kamailio, fixed argv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jinja2

from common.edge import EdgeError, rpc_call, rpc_url, site_uri
from common.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

TEMPLATE_DIR = PROJECT_ROOT / "edge"
TEMPLATE = "kamailio.cfg.j2"
KAMAILIO_PATHS = ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio")
#: After the first provisional reply a caller may wait this long for the answer (the
#: greeting, a queue with early media); then tm gives up with 408.
RINGING_TIMEOUT_MS = 120_000
#: Wait for the first reply to a request inside a call (BYE, re-INVITE, REFER, ...)
IN_DIALOG_TIMEOUT_MS = 10_000
#: Wait for the carrier's first reply to a call a site places
CARRIER_TIMEOUT_MS = 10_000
#: OPTIONS replies that prove a site alive (2xx always does): every answer a live SIP
#: stack may give, but not 408 (what tm makes up when a probe times out), 500 or 503
#: (a site overloaded or shutting down), nor 502/504 (a proxy on the way).
PING_REPLY_CODES = (
    ["class=3"]
    + [f"code={c}" for c in (400, 401, 402, 403, 404, 405, 406, 407, 410, 413, 414, 415,
                             416, 420, 421, 423, 480, 481, 482, 483, 484, 485, 486, 487,
                             488, 489, 491, 493, 494, 501, 505, 513)]
    + ["class=6"])
LOG_LEVELS = {"DEBUG": 3, "INFO": 1, "WARNING": 0, "ERROR": -1}  # Kamailio debug= (1: notice)


class EdgeUnavailable(Exception):
    """Kamailio is not installed here; the message says how to install it."""


class EdgeStartError(Exception):
    """Kamailio did not start or its RPC did not answer; carries the end of its log."""


def failback_probes(settings: Settings) -> int:
    """Answered probes in a row that bring a lost site back (ds_inactive_threshold): one
    more than fit in ``failback_seconds``, so that the site has answered for the whole
    time (the first answer starts it)."""
    edge = settings.edge
    return math.ceil(edge.failback_seconds / edge.probe_interval) + 1


def dispatcher_list(settings: Settings) -> str:
    """Dispatcher set 1: the sites, ``setid uri flags priority attrs``."""
    lines = ["# set destination flags priority attributes (rendered by stack/edge.py)"]
    for site in sorted(settings.sites, key=lambda s: -s.priority):
        lines.append(f"1 {site_uri(site)} 0 {site.priority} duid={site.id}")
    return "\n".join(lines) + "\n"


def _carrier_hostport(carrier: str) -> str:
    rest = carrier.removeprefix("sip:")
    return rest.rpartition("@")[2]


def render_config(settings: Settings, list_path: Path) -> str:
    """The text of kamailio.cfg for ``settings`` with the dispatcher list at
    ``list_path``."""
    if not settings.sites:
        raise SettingsError("sites", "the SIP edge needs the sites of the two-site form: "
                            "add two or more [[sites]] entries to the site file")
    env = jinja2.Environment(  # nosec B701 # renders Kamailio configuration, not HTML
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    edge = settings.edge
    return env.get_template(TEMPLATE).render(
        edge=edge,
        debug_level=LOG_LEVELS.get(settings.site.log_level.upper(), 1),
        # one SIP worker: messages leave in the order they came in (with two, a 183 sent
        # 1 ms before the 200 could be relayed after it, and a CANCEL overtake its
        # INVITE); one worker relays thousands of messages a second
        children=1,
        dispatcher_list=str(list_path),
        inactive_threshold=failback_probes(settings),
        ping_reply_codes=";".join(PING_REPLY_CODES),
        ringing_timeout_ms=RINGING_TIMEOUT_MS,
        in_dialog_timeout_ms=IN_DIALOG_TIMEOUT_MS,
        carrier=edge.carrier,
        carrier_hostport=_carrier_hostport(edge.carrier),
        carrier_timeout_ms=CARRIER_TIMEOUT_MS,
    )


def render_edge(settings: Settings, out_dir: Path) -> Path:
    """Write kamailio.cfg and dispatcher.list into ``out_dir`` (and create its runtime
    folder ``run``); returns the path of kamailio.cfg."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run").mkdir(exist_ok=True)
    list_path = out_dir / "dispatcher.list"
    cfg = out_dir / "kamailio.cfg"
    text = render_config(settings, list_path)
    list_path.write_text(dispatcher_list(settings))
    cfg.write_text(text)
    return cfg


def kamailio_binary() -> str:
    found = shutil.which("kamailio")
    if found:
        return found
    for path in KAMAILIO_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise EdgeUnavailable("kamailio is not installed: run `scripts/setup.sh test` (or "
                          "`apt-get install kamailio`): the SIP edge of the two-site form "
                          "is Debian's Kamailio 5.6")


def check_config(cfg: Path) -> tuple[bool, str]:
    """Kamailio's own check of a rendered configuration (``kamailio -c``): (ok, output)."""
    out = subprocess.run([kamailio_binary(), "-c", "-f", str(cfg)],  # nosec B603 # own argv
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0, (out.stdout + out.stderr).strip()


class Edge:
    """One Kamailio edge in ``workdir``: its rendered configuration, runtime folder, pid
    file and log (kamailio.log)."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where the last start's lines begin in kamailio.log

    @property
    def log_file(self) -> Path:
        return self.workdir / "kamailio.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "run" / "kamailio.pid"

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines Kamailio logged since it was last started."""
        if not self.log_file.exists():
            return "(no log)"
        with self.log_file.open("rb") as log:
            log.seek(self._log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rpc(self, method: str, *params: Any, timeout: float = 2.0) -> Any:
        """A JSON-RPC 2.0 request over HTTP; raises common.edge.EdgeUnreachable or
        EdgeRpcError (EdgeError) with what went wrong."""
        return rpc_call(self.settings, method, *params, timeout=timeout)

    def _ports_free(self) -> None:
        """Refuse to start over another process: the JSON-RPC would answer for it (and
        Kamailio's UDP socket may share its port)."""
        edge = self.settings.edge
        host = rpc_url(self.settings).split("//", 1)[1].split(":", 1)[0]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, edge.rpc_port)) == 0:
                raise EdgeStartError(f"something already listens on {host}:{edge.rpc_port} "
                                     "(edge.rpc_port): another edge still running?")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((edge.bind, edge.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise EdgeStartError(f"UDP {edge.bind}:{edge.port} (edge.port) is "
                                         "already in use: another edge still running?"
                                         ) from None
                # any other reason (an address not on this host, ...) Kamailio reports

    def _answering(self) -> bool:
        """True once the RPC answers from this Kamailio (its main process is listed)."""
        if self.process is None:
            return False
        pid = self.process.pid
        processes = self.rpc("core.psx", timeout=0.5)
        return any(isinstance(p, dict) and p.get("PID") == pid for p in processes or [])

    def start(self, timeout: float = 15) -> None:
        """Render the configuration, start Kamailio in the foreground (its own process
        group) and wait until its RPC answers."""
        if self.running():
            raise EdgeStartError("this edge is already running")
        binary = kamailio_binary()
        self._ports_free()
        cfg = render_edge(self.settings, self.workdir)
        cmd = [binary, "-DD", "-E", "-f", str(cfg), "-Y", str(self.workdir / "run"),
               "-P", str(self.pid_file), "-m", "64", "-M", "8"]
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # nosec B603 # own argv, no shell
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise EdgeStartError(f"kamailio exited during start-up with status {code} "
                                     f"({' '.join(cmd)}):\n{self.log_tail()}")
            try:
                if self._answering():
                    return
            except EdgeError as exc:
                last = exc
            if time.monotonic() > deadline:
                self.kill()
                raise EdgeStartError(f"kamailio's RPC did not answer within {timeout:.0f} s "
                                     f"({last}):\n{self.log_tail()}")
            time.sleep(0.05)

    def _signal(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to Kamailio's main process (it stops its children), SIGKILL to the
        whole group after ``timeout`` seconds or for anything left behind."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL below
                self.process.wait(timeout)
        self._signal(signal.SIGKILL)
        self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (tests: a crashed edge)."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(5)
        self.process = None


def run(settings: Settings, workdir: Path) -> int:
    """Run the edge in the foreground, its log copied to stdout, until SIGINT or SIGTERM
    (then Kamailio is stopped); 1 when Kamailio ends by itself."""
    stopping: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    edge = Edge(settings, workdir)
    offset = edge.log_file.stat().st_size if edge.log_file.exists() else 0
    edge.start()
    e = settings.edge
    print(f"edge: SIP udp:{e.bind}:{e.port}, JSON-RPC {rpc_url(settings)}, "
          f"{len(settings.sites)} sites; log {edge.log_file}", flush=True)
    try:
        while not stopping:
            with edge.log_file.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            if not edge.running():
                print(f"error: kamailio ended by itself:\n{edge.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        edge.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The SIP edge (Kamailio) of the two-site "
                                     "form")
    sub = parser.add_subparsers(dest="action", required=True)
    run_p = sub.add_parser("run", help="run the edge in the foreground until Ctrl-C")
    run_p.add_argument("--workdir", type=Path, default=None,
                       help="its configuration, runtime files and log (default: "
                       "<site.data_dir>/edge)")
    render_p = sub.add_parser("render", help="write kamailio.cfg and dispatcher.list")
    render_p.add_argument("out_dir", type=Path)
    sub.add_parser("check", help="render into a temporary folder and run `kamailio -c`")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.action == "run":
            return run(settings, args.workdir or settings.data_dir / "edge")
        if args.action == "render":
            cfg = render_edge(settings, args.out_dir)
            print(f"wrote {cfg} and {cfg.parent / 'dispatcher.list'}")
            return 0
        with tempfile.TemporaryDirectory(prefix="madoguchi-edge-") as tmp:
            ok, output = check_config(render_edge(settings, Path(tmp)))
    except (SettingsError, EdgeUnavailable, EdgeStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ok:
        print(f"error: kamailio rejects the rendered configuration:\n{output}",
              file=sys.stderr)
        return 1
    print("the edge configuration is valid (kamailio -c)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
