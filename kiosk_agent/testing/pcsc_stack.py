"""A private pcscd (with or without vsmartcard's vpcd reader) for tests and the bench.

pcscd's socket and pid file paths are compiled in (``/run/pcscd``), so two daemons
cannot normally coexist and a test run would collide with a system pcscd (or with
another test run). Each :class:`PrivatePcscd` therefore runs ``pcscd -f`` in its own
mount namespace (``unshare -m``) with a temporary folder bound over ``/run/pcscd``
and its own ``reader.conf.d`` folder; clients reach it by setting
``PCSCLITE_CSOCK_NAME`` to the socket inside that folder (libpcsclite reads it once,
at the first PC/SC call of a process). vpcd is configured on a free port chosen at
start, so no fixed port is needed either.

Never start pcscd with ``-a``: APDU logging would write the PIN to the log.

Needs root (``unshare -m`` and ``mount --bind``), as pcscd itself does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess  # nosec B404 # starts the test pcscd, fixed argv
import tempfile
import time
from pathlib import Path

PCSCD = "/usr/sbin/pcscd"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
VPCD_READER_PREFIX = "Virtual PCD 00 0"


class StackError(RuntimeError):
    pass


def _free_port_pair() -> int:
    """A port p such that p and p+1 (vpcd's two slots) are both free on all addresses."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))  # nosec B104 # probe only; vpcd listens on all
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("0.0.0.0", port + 1))  # nosec B104 # probe only; vpcd listens on all
        except OSError:
            continue
        return port
    raise StackError("no free port pair for vpcd")


def _listening(port: int) -> bool:
    """Is something listening on TCP ``port``? (Read /proc: connecting would insert a card.)"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def missing_prerequisites(with_vpcd: bool = True) -> str | None:
    """Why a private stack cannot be started here, or None."""
    if not Path(PCSCD).exists():
        return "pcscd is not installed (Debian package pcscd; see scripts/packages-test.txt)"
    if with_vpcd and not Path(VPCD_DRIVER).exists():
        return "vpcd is not installed (Debian package vsmartcard-vpcd)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not available"
    if os.geteuid() != 0:
        return "a private pcscd needs root (unshare -m, mount --bind)"
    return None


class PrivatePcscd:
    """``pcscd -f`` in its own mount namespace; vpcd on :attr:`vpcd_port` if enabled."""

    def __init__(self, with_vpcd: bool = True) -> None:
        self.with_vpcd = with_vpcd
        self.vpcd_port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        assert self._dir is not None, "not started"  # nosec B101 # a test helper's usage check
        return str(self._dir / "run" / "pcscd.comm")

    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "not started"  # nosec B101 # a test helper's usage check
        return self._dir / "pcscd.log"

    def reader(self, slot: int = 0) -> str:
        return f"{VPCD_READER_PREFIX}{slot}"

    def start(self, timeout: float = 10.0) -> PrivatePcscd:
        problem = missing_prerequisites(self.with_vpcd)
        if problem:
            raise StackError(problem)
        self._dir = Path(tempfile.mkdtemp(prefix="mado-pcscd-"))
        run = self._dir / "run"
        conf = self._dir / "reader.conf.d"
        run.mkdir()
        conf.mkdir()
        if self.with_vpcd:
            self.vpcd_port = _free_port_pair()
            (conf / "vpcd").write_text(
                'FRIENDLYNAME "Virtual PCD"\n'
                f"DEVICENAME   /dev/null:0x{self.vpcd_port:04X}\n"
                f"LIBPATH      {VPCD_DRIVER}\n"
                f"CHANNELID    0x{self.vpcd_port:04X}\n")
        script = ('mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && '
                  'exec "$2" --foreground --error --config "$3"')
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(  # nosec B603, B607 # fixed argv, tools on PATH
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                 "sh", str(run), PCSCD, str(conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            ready = Path(self.socket_path).exists() and (
                not self.with_vpcd or (_listening(self.vpcd_port)
                                       and _listening(self.vpcd_port + 1)))
            if ready:
                return self
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise StackError(f"private pcscd did not start: {log_text}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> PrivatePcscd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
