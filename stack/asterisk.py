"""Provide and run a real Asterisk 22.

Debian 12 has no Asterisk package. In "auto" mode the host's ``asterisk`` is used where
one is installed; otherwise a Debian sid root file system with Debian's ``asterisk``
package is built once with mmdebstrap into a git-ignored cache folder and Asterisk runs
chrooted in it (sharing the host's network). Several instances (the running system,
a test session) can run side by side: each has its own folder and ports.

    python -m stack.asterisk provide      # build the root file system if missing
    python -m stack.asterisk version
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess  # nosec B404 # runs Asterisk and mount tools, fixed argv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.settings import PROJECT_ROOT, Settings, SettingsError, load_settings
from stack.render import InstancePaths, build_voice, render

logger = logging.getLogger(__name__)

PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en-gsm",
            "asterisk-moh-opsound-gsm")


class AsteriskUnavailable(Exception):
    """Asterisk cannot be provided here; the message says what to install or change."""


class AsteriskStartError(Exception):
    """Asterisk did not start or did not become ready; carries the end of its log."""


@dataclass(frozen=True)
class AsteriskInstall:
    kind: str  # "host" | "rootfs"
    root: Path | None
    binary: str
    version: str
    moddir: str

    def command(self, *args: str) -> list[str]:
        if self.root is not None:
            return ["chroot", str(self.root), self.binary, *args]
        return [self.binary, *args]

    def host_path(self, inner: str) -> Path:
        if self.root is not None:
            return self.root / inner.lstrip("/")
        return Path(inner)


def _rootfs_path(settings: Settings) -> Path:
    path = Path(settings.asterisk.rootfs)
    return path if path.is_absolute() else PROJECT_ROOT / path


def debian_mirror() -> str:
    """The Debian archive URI this machine's apt sources already use."""
    candidates: list[str] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                candidates.extend(line.split()[1:])
            elif line.startswith("deb "):
                parts = [p for p in line.split() if not p.startswith("[")]
                if len(parts) > 1:
                    candidates.append(parts[1])
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    raise AsteriskUnavailable(
        "no Debian archive found in /etc/apt/sources.list*: the Asterisk root file system "
        "needs one (a URI ending in /debian)")


def build_rootfs(root: Path, suite: str = "sid") -> None:
    """Build the Debian root file system with Asterisk into ``root`` (atomically)."""
    if shutil.which("mmdebstrap") is None:
        raise AsteriskUnavailable(
            "Asterisk 22 is not installed and mmdebstrap is missing, so its root file "
            "system cannot be built: run `apt-get install mmdebstrap` (make setup does it)")
    mirror = debian_mirror()
    tmp = root.with_name(root.name + ".building")
    if tmp.exists():
        _unmount_proc(tmp)
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building the Asterisk root file system in %s (Debian %s, once)", root, suite)
    cmd = ["mmdebstrap", "--variant=minbase", "--aptopt=Acquire::Check-Valid-Until \"false\"",
           f"--include={','.join(PACKAGES)}", suite, str(tmp), mirror]
    result = subprocess.run(cmd, capture_output=True, text=True)  # nosec B603 # own argv, no shell
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise AsteriskUnavailable(f"mmdebstrap failed ({result.returncode}):\n{tail}")
    (tmp / "etc" / "hosts").write_text(f"127.0.0.1 localhost {os.uname().nodename}\n"
                                       "::1 localhost ip6-localhost\n")
    resolv = tmp / "etc" / "resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text("nameserver 127.0.0.1\n")
    tmp.rename(root)


def _version(install_cmd: list[str]) -> str:
    out = subprocess.run([*install_cmd, "-V"], capture_output=True, text=True, timeout=30)  # nosec B603 # own argv, no shell
    return out.stdout.strip() or out.stderr.strip()


def provide(settings: Settings, build: bool = True) -> AsteriskInstall:
    """Find or build Asterisk according to ``asterisk.mode``."""
    mode = settings.asterisk.mode
    if mode == "external":
        raise AsteriskUnavailable("asterisk.mode is 'external': Asterisk is managed elsewhere")
    host_bin = shutil.which("asterisk")
    if mode == "host" or (mode == "auto" and host_bin):
        if not host_bin:
            raise AsteriskUnavailable("asterisk.mode is 'host' but no asterisk binary is on "
                                      "PATH: install Asterisk 22 or use mode 'auto'")
        moddir = next((str(p) for p in Path("/usr/lib").glob("*/asterisk/modules")),
                      "/usr/lib/asterisk/modules")
        return AsteriskInstall("host", None, host_bin, _version([host_bin]), moddir)
    root = _rootfs_path(settings)
    if not (root / "usr" / "sbin" / "asterisk").exists():
        if not build:
            raise AsteriskUnavailable(
                f"no Asterisk in {root}: run `python -m stack.asterisk provide` "
                "(or `make setup`) to build its root file system")
        build_rootfs(root, settings.asterisk.rootfs_suite)
    moddirs = sorted((root / "usr" / "lib").glob("*/asterisk/modules"))
    if not moddirs:
        raise AsteriskUnavailable(f"{root} has no Asterisk modules folder: delete it and run "
                                  "`python -m stack.asterisk provide` again")
    moddir = "/" + str(moddirs[0].relative_to(root))
    version = _version(["chroot", str(root), "/usr/sbin/asterisk"])
    (root.parent / "asterisk-version.txt").write_text(version + "\n")
    return AsteriskInstall("rootfs", root, "/usr/sbin/asterisk", version, moddir)


def _is_mountpoint(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0  # nosec B603, B607 # fixed argv, tool on PATH


def _mount_proc(root: Path) -> None:
    proc = root / "proc"
    if not _is_mountpoint(proc):
        proc.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)  # nosec B603, B607 # fixed argv, tool on PATH


def _processes_in(root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == str(root):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _unmount_proc(root: Path) -> None:
    proc = root / "proc"
    if _is_mountpoint(proc) and not _processes_in(root):
        subprocess.run(["umount", "-l", str(proc)], check=False)  # nosec B603, B607 # fixed argv, tool on PATH


class AsteriskInstance:
    """One running Asterisk with its own folder, configuration and ports."""

    def __init__(self, install: AsteriskInstall, settings: Settings, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad instance name {name!r}")
        self.install = install
        self.settings = settings
        self.name = name
        if install.root is not None:
            inner = f"/srv/madoguchi/{name}"
        else:
            inner = str(settings.data_dir / "asterisk" / name)
        self.paths = InstancePaths(base=inner, moddir=install.moddir)
        self.host_dir = install.host_path(inner)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> str:
        return f"{self.paths.base}/etc/asterisk.conf"

    @property
    def log_file(self) -> Path:
        return self.host_dir / "log" / "console.log"

    @property
    def full_log(self) -> Path:
        return self.host_dir / "log" / "full.log"

    def render(self) -> None:
        if self.host_dir.exists():
            shutil.rmtree(self.host_dir)
        for sub in ("etc", "run", "log", "lib", "spool", "cache", "sounds"):
            (self.host_dir / sub).mkdir(parents=True, exist_ok=True)
        render(self.settings, self.host_dir / "etc", self.paths,
               host_sounds_dir=self.host_dir / "sounds", voice_dir=build_voice(self.settings),
               asterisk_root=self.install.root or Path("/"))

    def log_tail(self, lines: int = 25) -> str:
        text = ""
        for path in (self.log_file, self.full_log):
            if path.exists():
                text += f"--- {path}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def start(self, timeout: float | None = None) -> None:
        """Render the configuration, start Asterisk and wait until fully booted."""
        timeout = timeout or float(self.settings.asterisk.boot_timeout)
        if self.install.root is not None:
            _mount_proc(self.install.root)
        if self.responding():
            raise AsteriskStartError(
                f"an Asterisk is already running as instance {self.name!r} (control socket "
                f"{self.host_dir / 'run' / 'asterisk.ctl'}): stop it first (make down, or "
                f"{' '.join(self.install.command('-C', self.conf, '-rx', 'core stop now'))})")
        self.render()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # nosec B603 # own argv, no shell
                self.install.command("-C", self.conf, "-f", "-n", "-q"),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise AsteriskStartError(
                    f"Asterisk ({self.name}) exited during start-up with status {code}.\n"
                    f"{self.log_tail()}")
            ready = subprocess.run(  # nosec B603 # own argv, no shell
                self.install.command("-C", self.conf, "-rx", "core waitfullybooted"),
                capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
            if ready.returncode == 0 and "fully booted" in ready.stdout.lower():
                logger.info("Asterisk %s ready (%s)", self.name, self.install.version)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AsteriskStartError(
                    f"Asterisk ({self.name}) did not finish booting within {timeout:.0f} s "
                    f"(asterisk.boot_timeout).\n{self.log_tail()}")
            time.sleep(0.1)

    def cli(self, command: str, timeout: float = 10.0) -> str:
        # (a channel's fields may hold any bytes a SIP peer sent: never fail on them)
        out = subprocess.run(self.install.command("-C", self.conf, "-rx", command),  # nosec B603 # own argv, no shell
                             capture_output=True, text=True, errors="replace",
                             timeout=timeout)
        if out.returncode != 0:
            raise AsteriskStartError(f"asterisk -rx {command!r} failed: {out.stderr.strip()}")
        return out.stdout

    def responding(self) -> bool:
        """True when an Asterisk answers on this instance's control socket."""
        if not (self.host_dir / "run" / "asterisk.ctl").exists():
            return False
        out = subprocess.run(self.install.command("-C", self.conf, "-rx", "core show version"),  # nosec B603 # own argv, no shell
                             capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and "Asterisk" in out.stdout

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            subprocess.run(self.install.command("-C", self.conf, "-rx", "core stop now"),  # nosec B603 # own argv, no shell
                           capture_output=True, timeout=timeout)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self.install.root is not None:
            _unmount_proc(self.install.root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Provide Asterisk 22 for Madoguchi")
    parser.add_argument("action", choices=["provide", "version", "stop"])
    parser.add_argument("--instance", default="dev", help="instance to stop (default: dev)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load_settings()
        install = provide(settings, build=args.action == "provide")
    except (SettingsError, AsteriskUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "stop":
        instance = AsteriskInstance(install, settings, args.instance)
        if instance.responding():
            instance.cli("core stop now")
            print(f"stopped Asterisk instance {args.instance}")
        if install.root is not None:
            _unmount_proc(install.root)
        return 0
    print(install.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
