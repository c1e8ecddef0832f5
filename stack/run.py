"""Start the whole system on its embedded defaults and keep it running (``make run``).

Asterisk 22 (host package or the cached Debian root file system), Redis (the configured
one, or a private redis-server when none answers on the default local address), the
database schema, then ari_app, kiosk_bridge, transcriber, web, an rq worker and the rq cron
scheduler as child processes. A child that dies is restarted with backoff. Ctrl-C (or
SIGTERM) stops everything in reverse order.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess  # nosec B404 # starts the system's own processes, fixed argv
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis
from sqlalchemy import Engine

from common.db import DatabaseUnavailable, init_schema, make_engine
from common.health import DOWN, collect
from common.keys import Keys
from common.kiosk import dev_secret
from common.logging_ import setup_logging
from common.settings import (
    CONFIG_FILE_VAR,
    ENV_PREFIX,
    PROJECT_ROOT,
    Settings,
    SettingsError,
    load_settings,
    to_environ,
)
from stack.asterisk import AsteriskInstance, AsteriskStartError, AsteriskUnavailable, provide
from stack.render import phones

logger = logging.getLogger("stack")

CHILDREN = (
    ("ari_app", ["-m", "ari_app.main"]),
    ("kiosk_bridge", ["-m", "kiosk_bridge.main"]),
    ("transcriber", ["-m", "transcriber.main"]),
    ("web", ["-m", "web.main"]),
    ("worker", ["-m", "reports.worker"]),
    ("cron", ["-m", "reports.worker", "cron"]),
)


def child_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of each child process, so that every child reads exactly the
    settings this process resolved: the scalar sections as variables (with the generated
    development secrets), the lists (tenants, services, departments, kiosks) from the
    same site file, named by an absolute path since the children run in the project's
    folder."""
    env = {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(to_environ(settings))
    site_file = environ.get(CONFIG_FILE_VAR)
    if site_file:
        env[CONFIG_FILE_VAR] = str(Path(site_file).resolve())
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        fh = self.log.open("ab")
        self.popen = subprocess.Popen([sys.executable, *self.args], cwd=PROJECT_ROOT,  # nosec B603 # own interpreter and argv
                                      env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        fh.close()
        self.started_at = time.monotonic()

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class Stop(Exception):
    """Ctrl-C or SIGTERM."""


def _raise_stop(_signum: int, _frame: object) -> None:
    # once: a second Ctrl-C (or timeout's forwarded signal) must not cut the orderly stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop


def redis_data_dir(settings: Settings) -> Path:
    """The private Redis's folder: its append-only file lives there."""
    return settings.data_dir / "redis"


def redis_command(binary: str, port: int, datadir: Path, logfile: Path) -> list[str]:
    """The private redis-server: loopback only, every write in the append-only file
    (fsync once a second), so that sessions, live state and the rq queues survive a
    restart or a crash of Redis; no RDB snapshots beside it."""
    return [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(datadir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", str(logfile)]


def ensure_redis(settings: Settings, logdir: Path) -> subprocess.Popen[bytes] | None:
    """Use the configured Redis; start a private one if it is local and not running
    (``redis_command``, its data in ``redis_data_dir``)."""
    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=2)
    try:
        client.ping()
        return None
    except redis.RedisError:
        pass
    finally:
        client.close()
    url = urlparse(settings.redis.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"Redis at {settings.redis.url} does not answer; start it or fix "
                         "redis.url (MADOGUCHI_REDIS__URL)")
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: run `make setup`")
    port = url.port or 6379
    datadir = redis_data_dir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    logger.info("starting redis-server on 127.0.0.1:%d (data in %s)", port, datadir)
    proc = subprocess.Popen(  # nosec B603 # redis-server resolved by shutil.which, no shell
        redis_command(binary, port, datadir, logdir / "redis.log"), stdin=subprocess.DEVNULL)
    client = redis.Redis.from_url(settings.redis.url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            client.close()
            return proc
        except redis.RedisError:
            time.sleep(0.1)
    raise SystemExit(f"redis-server did not start; see {logdir / 'redis.log'}")


#: What must really be up before ``make run`` says it is running: ari_app connected to
#: Asterisk over ARI and AMI (its heartbeat), Redis and the database.
READY = ("asterisk", "ari", "ami", "ari_app", "redis", "database")
READY_TIMEOUT = 90.0


def not_ready(settings: Settings, client: redis.Redis, engine: Engine) -> list[str]:
    """What is not up yet, each as ``name: detail`` (empty when the system is ready):
    the parts of ``READY`` as the health page sees them, and the web answering."""
    health = {c.component: c for c in collect(client, Keys(settings.redis.prefix), engine,
                                               settings)}
    out = [f"{name}: {health[name].detail}" for name in READY
           if name not in health or health[name].state == DOWN]
    url = f"http://{settings.web.bind}:{settings.web.port}/health.json"
    try:
        urllib.request.urlopen(url, timeout=2).close()  # nosec B310 # own http URL on loopback
    except urllib.error.HTTPError:
        pass  # it answers (503 while a part is down: listed above)
    except OSError as exc:
        out.append(f"web: {url} does not answer ({exc})")
    return out


def wait_ready(settings: Settings, tick: Callable[[], None],
               timeout: float = READY_TIMEOUT) -> list[str]:
    """Wait until ``not_ready`` is empty, or the time is over: what is still not up.
    ``tick`` runs between the checks (the children are supervised meanwhile)."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(settings.redis.url, socket_timeout=2)
    engine = make_engine(settings.database_url)
    try:
        while True:
            pending = not_ready(settings, client, engine)
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(0.25)
            tick()
    finally:
        client.close()
        engine.dispose()


def seed_first_run(env: Mapping[str, str]) -> str:
    """Development's first start: a user for each role (``web.cli seed-dev --first-run``,
    which does nothing once there are users); what it printed, for the banner."""
    proc = subprocess.run([sys.executable, "-m", "web.cli", "seed-dev", "--first-run"],  # nosec B603 # own interpreter and argv
                          env=dict(env), cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        logger.error("could not create the development users: %s", proc.stderr.strip()[-500:])
        return ""
    return proc.stdout


def banner(settings: Settings, asterisk: AsteriskInstance | None, *, users: str = "",
           pending: list[str] | None = None) -> str:
    ast = settings.asterisk
    web = f"http://{settings.web.bind}:{settings.web.port}/"
    if pending:
        lines = ["", f"Madoguchi started, but after {READY_TIMEOUT:.0f} s these parts are not "
                 "up (the health page shows each as it is now):"]
        lines += [f"  NOT READY  {item}" for item in pending]
        lines.append("")
    else:
        lines = ["", "Madoguchi is running: Asterisk, ARI and AMI are connected. Ctrl-C stops "
                 "everything.", ""]
    lines.append(f"  Web console and health page: {web}  (health: /health)")
    if users:
        lines.append("  First start: log in with these users (shown this once; make seed-dev "
                     "adds one for a role nobody holds):")
        lines += [f"  {line}" for line in users.splitlines()[1:] if line.strip()]
    lines.append(f"  Softphones: SIP/UDP {ast.sip_bind}:{ast.sip_port}, codec G.711; "
                 "register as one of:")
    for phone in phones(settings)[:3]:
        lines.append(f"    {phone.kind:<8} user {phone.id:<10} extension {phone.extension}"
                     f"  password {phone.password}")
    lines.append("    ... all phones: make phones")
    dids = ", ".join(d for s in settings.services for d in s.dids)
    lines.append(f"  Test call: make test-call  (a caller from the trunk address "
                 f"{settings.trunk.match[0] if settings.trunk.match else '-'} to a DID: {dids};"
                 " it waits in the queue, is answered by a logged-in operator's phone, hangs "
                 "up after 20 s)")
    if settings.kiosks and not settings.production:
        kiosk = settings.kiosks[0]
        lines.append(f"  Kiosk page ({kiosk.id}, {kiosk.location}): {web}kiosk/#{kiosk.id}:"
                     f"{dev_secret(settings, kiosk.id)}")
        lines.append("    other kiosks: make kiosk-url KIOSK=<kiosk id>")
    if settings.transcription.enabled and not settings.transcription.model_path:
        lines.append("  Live transcription: off until transcription.model_path names a Vosk "
                     "model folder (README: Vosk model)")
    if asterisk is not None:
        cli = " ".join(asterisk.install.command("-C", asterisk.conf, "-r"))
        lines.append(f"  Asterisk CLI: {cli}")
    site_file = os.environ.get(CONFIG_FILE_VAR, "")
    lines.append(f"  Settings: {settings.fingerprint()} "
                 f"({'site file ' + site_file if site_file else 'embedded defaults'}; every "
                 "process logs its own at start)")
    lines.append(f"  Logs: {settings.data_dir / 'log'}")
    return "\n".join(lines) + "\n"


@dataclass
class System:
    """What ``make run`` started, stopped in reverse order."""

    settings: Settings
    logdir: Path
    instance: str = "dev"
    redis_proc: subprocess.Popen[bytes] | None = None
    asterisk: AsteriskInstance | None = None
    children: list[Child] = field(default_factory=list)

    def start(self) -> None:
        """Redis, the database schema, Asterisk, then the product's processes."""
        self.redis_proc = ensure_redis(self.settings, self.logdir)
        engine = make_engine(self.settings.database_url)
        try:
            init_schema(engine)
        finally:
            engine.dispose()
        if self.settings.asterisk.mode != "external":
            install = provide(self.settings, build=True)
            logger.info("Asterisk: %s (%s)", install.version, install.kind)
            self.asterisk = AsteriskInstance(install, self.settings, self.instance)
            self.asterisk.start()
        env = child_environ(self.settings, os.environ)
        for name, args in CHILDREN:
            child = Child(name, args, self.logdir / f"{name}.log", env)
            child.start()
            self.children.append(child)

    def supervise(self) -> None:
        """Restart a child that exited, with backoff (1 s doubling to 30 s; a child that
        ran a minute starts over at 1 s). Returns only by ``Stop``."""
        while True:
            time.sleep(0.5)
            self.check_children()

    def check_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            assert child.popen is not None  # nosec B101 # type narrowing, not a check
            code = child.popen.poll()
            if code is None:
                if now - child.started_at > 60:
                    child.restarts = 0
                continue
            if child.next_start == 0.0:
                delay = min(30.0, 1.0 * 2 ** child.restarts)
                logger.error("%s exited with status %s; restarting in %.0f s (log: %s)",
                             child.name, code, delay, child.log)
                child.next_start = now + delay
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.asterisk is not None:
            self.asterisk.stop()
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            self.redis_proc.wait(10)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start the whole system (make run).")
    parser.add_argument("--instance", default="dev",
                        help="name of the Asterisk instance (its folder; default dev)")
    args = parser.parse_args(argv)
    setup_logging("stack")
    try:
        settings = load_settings()
    except SettingsError as exc:
        logger.error("%s", exc)
        return 2
    logdir = settings.data_dir / "log"
    logdir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    system = System(settings, logdir, instance=args.instance)
    try:
        system.start()
        users = "" if settings.production else seed_first_run(child_environ(settings,
                                                                             os.environ))
        pending = wait_ready(settings, system.check_children)
        print(banner(settings, system.asterisk, users=users, pending=pending), flush=True)
        system.supervise()
    except Stop:
        logger.info("stopping")
        return 0
    except (DatabaseUnavailable, AsteriskUnavailable, AsteriskStartError) as exc:
        logger.error("%s", exc)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        system.stop()
        logger.info("stopped")
    return 0  # not reached: supervise() returns only by Stop


if __name__ == "__main__":
    sys.exit(run())
