"""Integration fixtures: a real Asterisk 22 (session scope, free ports, configuration
rendered from the same templates as production), ari_app / rq worker / rq cron as real
processes, and SIPp as the caller."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from common.keys import Keys
from common.settings import Settings, load_settings, settings_override, to_environ
from stack.asterisk import AsteriskInstance, AsteriskUnavailable, provide
from stack.testphones import wait_reachable
from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SIPP_DIR = ROOT / "tests" / "sipp"
CALLER_IP = "127.0.0.2"  # the development trunk's address (trunk.match)
SITE_FILE = Path(__file__).resolve().parent / "site-test.toml"


def _free_udp_range(size: int) -> int:
    import socket

    for _ in range(50):
        start = free_port(socket.SOCK_DGRAM)
        start -= start % 2
        ok = True
        for port in range(start, start + size):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return start
    raise RuntimeError("no free UDP port range")


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the test stack: its own data dir (secrets) and free ports."""
    data = tmp_path_factory.mktemp("stack")
    base = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(data),
                          "MADOGUCHI_CONFIG": str(SITE_FILE)})
    rtp = _free_udp_range(200)
    import socket as _socket

    citizen = free_port(_socket.SOCK_DGRAM)  # the "public network" behind the trunk
    base = settings_override(base, trunk={"contact": f"sip:127.0.0.2:{citizen}",
                                          "qualify_seconds": 0})
    return settings_override(base, asterisk={
        "sip_port": free_port(), "http_port": free_port(), "ami_port": free_port(),
        "rtp_start": rtp, "rtp_end": rtp + 199, "ari_app": f"mado-test-{os.getpid()}",
    })


@pytest.fixture(scope="session")
def asterisk(stack_settings: Settings) -> Iterator[AsteriskInstance]:
    """A real Asterisk 22 for the whole session."""
    try:
        install = provide(stack_settings, build=True)
    except AsteriskUnavailable as exc:
        pytest.fail(f"Asterisk 22 is not available: {exc}")
    instance = AsteriskInstance(install, stack_settings, f"test-{os.getpid()}")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def call_settings(asterisk: AsteriskInstance, settings: Settings) -> Settings:
    """Per-test settings: the session's Asterisk, this test's Redis and database."""
    stack = asterisk.settings
    return settings_override(stack, redis={"url": settings.redis.url},
                             database={"url": settings.database_url})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every integration module runs on one SQL engine it names (docs/testing.md,
    "Matrix"): the call flows are the same on both, and both engines still see each
    path because the modules that share a path name different engines."""
    if config.getoption("--engines") != "marked":
        return
    here = Path(__file__).resolve().parent
    unmarked = sorted({item.nodeid.split("::")[0] for item in items
                       if Path(str(item.fspath)).resolve().parent == here
                       and "db_url" in getattr(item, "fixturenames", ())
                       and len(getattr(item.get_closest_marker("engine"), "args", ())) != 1})
    if unmarked:
        raise pytest.UsageError(
            "integration modules must name the one SQL engine they run on, e.g. "
            "pytestmark = [pytest.mark.asterisk, pytest.mark.engine(\"postgresql\")]: "
            + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def _reset_asterisk(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared Asterisk: hang up every channel, destroy every bridge,
    remove the operators a test logged in (wazo's reset_ari()); then check that Asterisk
    is really empty, and fail loudly naming what was left, so no test starts on another's
    leftovers."""
    yield
    if "asterisk" not in request.fixturenames:
        return
    instance: AsteriskInstance = request.getfixturevalue("asterisk")
    if not instance.running():
        return
    instance.cli("channel request hangup all")
    # bridges a killed controller could not destroy (Asterisk keeps empty ones)
    _destroy_bridges(instance.settings)
    queues = [svc.queue for svc in instance.settings.services]
    for queue in queues:
        for member in _dynamic_members(instance, queue):
            instance.cli(f"queue remove member {member} from {queue}")

    def emptied() -> bool:
        left = _leftovers(instance, queues)
        if "bridges" in left:  # one a late hang-up left behind just now
            _destroy_bridges(instance.settings)
        return not left

    try:
        wait_until(emptied, 15, "Asterisk is not empty after the test's reset")
    except AssertionError as exc:
        pytest.fail(f"{exc}: {_leftovers(instance, queues)}")


def _dynamic_members(instance: AsteriskInstance, queue: str) -> list[str]:
    members = []
    for line in instance.cli(f"queue show {queue}").splitlines():
        found = re.search(r"\((PJSIP/[^)\s]+)\)", line)
        if found and "dynamic" in line:
            members.append(found.group(1))
    return members


def _leftovers(instance: AsteriskInstance, queues: list[str]) -> dict[str, object]:
    """What is still in Asterisk: channels, bridges (ARI) and dynamic queue members."""
    left: dict[str, object] = {}
    channels = [ln.split("!")[0] for ln in
                instance.cli("core show channels concise").splitlines() if "!" in ln]
    if channels:
        left["channels"] = channels
    ast = instance.settings.asterisk
    bridges = httpx.get(f"{ast.ari_url}/bridges", auth=(ast.ari_user, ast.ari_password),
                        timeout=5).json()
    if bridges:
        left["bridges"] = [b["id"] for b in bridges]
    members = {q: m for q in queues if (m := _dynamic_members(instance, q))}
    if members:
        left["queue members"] = members
    return left


#: SIPp processes a test started in the background; reaped after every test, so one
#: that failed before waiting for its callers leaves none running into the next test.
_BACKGROUND: list[subprocess.Popen[str]] = []
# where each background SIPp listens for SIP (pid -> address, port), for hang_up
_SIGNALLING: dict[int, tuple[str, int]] = {}


@pytest.fixture(autouse=True)
def _reap_background_sipp() -> Iterator[None]:
    yield
    while _BACKGROUND:
        proc = _BACKGROUND.pop()
        _SIGNALLING.pop(proc.pid, None)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _destroy_bridges(settings: Settings) -> None:
    ast = settings.asterisk
    auth = (ast.ari_user, ast.ari_password)
    try:
        for bridge in httpx.get(f"{ast.ari_url}/bridges", auth=auth, timeout=5).json():
            httpx.delete(f"{ast.ari_url}/bridges/{bridge['id']}", auth=auth, timeout=5)
    except httpx.HTTPError:
        pass  # Asterisk is going away; the next test's fixture starts afresh


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


class Processes:
    """Starts project processes (python -m ...) on given settings; stops them all."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []

    def start(self, name: str, module: str, settings: Settings, *args: str,
              extra_env: dict[str, str] | None = None) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
        env.update(to_environ(settings))
        env["MADOGUCHI_CONFIG"] = str(SITE_FILE)
        env.update(extra_env or {})
        env["PYTHONUNBUFFERED"] = "1"
        log = self.logdir / f"{name}-{len(self.procs)}.log"
        fh = log.open("wb")
        popen = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                 stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        fh.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def ari_app_heartbeat(settings: Settings) -> dict[str, str]:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        keys = list(client.scan_iter(Keys(settings.redis.prefix).health_pattern("ari_app")))
        return client.hgetall(keys[0]) if keys else {}  # type: ignore[return-value]
    finally:
        client.close()


@pytest.fixture
def ari_app(processes: Processes, call_settings: Settings) -> Proc:
    """A running ari_app process, connected to ARI and AMI."""
    proc = processes.start("ari_app", "ari_app.main", call_settings)

    def ready() -> bool:
        assert proc.alive(), f"ari_app exited:\n{proc.output()}"
        beat = ari_app_heartbeat(call_settings)
        return beat.get("ari") == "up" and beat.get("ami") == "up"

    wait_until(ready, 20, "ari_app did not connect to ARI and AMI")
    return proc


# ----------------------------------------------------------------------------- SIPp


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stats: dict[str, int]

    @property
    def successful(self) -> int:
        return self.stats.get("SuccessfulCall(C)", 0)

    @property
    def failed(self) -> int:
        return self.stats.get("FailedCall(C)", 0)


def run_sipp(settings: Settings, scenario: str, service: str, workdir: Path, *,
             calls: int = 1, rate: float = 1.0, keys: dict[str, str] | None = None,
             timeout: float = 60.0, local_ip: str = CALLER_IP,
             duration_ms: int | None = None,
             background: bool = False) -> SippResult | subprocess.Popen[str]:
    """Run a SIPp scenario from tests/sipp against the test Asterisk.

    A scenario that holds the call for ``[hold_ms]`` (uac_hangup_on_cue.xml) holds it for
    ``duration_ms`` or until ``hang_up`` cues it."""
    port = free_port(socket.SOCK_DGRAM)
    media = free_port(socket.SOCK_DGRAM)
    workdir.mkdir(parents=True, exist_ok=True)
    path = SIPP_DIR / scenario
    text = path.read_text()
    if "[hold_ms]" in text:
        if duration_ms is None:
            raise ValueError(f"{scenario} holds the call for [hold_ms]: give duration_ms")
        path = workdir / f"{path.stem}.{port}.xml"
        path.write_text(text.replace("[hold_ms]", str(duration_ms)))
    cmd = ["sipp", f"127.0.0.1:{settings.asterisk.sip_port}", "-sf", str(path),
           "-s", service, "-i", local_ip, "-mi", local_ip, "-p", str(port), "-mp", str(media),
           "-m", str(calls), "-r", str(rate), "-l", str(max(calls, 1)),
           "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
           "-trace_stat", "-stf", str(workdir / f"{scenario}.stat.csv"),
           "-trace_err", "-error_file", str(workdir / f"{scenario}.errors.log")]
    if duration_ms is not None:
        cmd += ["-d", str(duration_ms)]
    for key, value in (keys or {}).items():
        cmd += ["-key", key, value]
    if background:
        # SIPp redraws its screen continuously: send it to a file, never to a pipe
        # nobody reads (a full pipe would block SIPp).
        with (workdir / f"{scenario}.out").open("w") as out:
            proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    text=True)
        _BACKGROUND.append(proc)
        _SIGNALLING[proc.pid] = (local_ip, port)
        return proc
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    return SippResult(out.returncode, out.stdout + out.stderr,
                      parse_sipp_stats(workdir / f"{scenario}.stat.csv"))


def hang_up(caller: subprocess.Popen[str]) -> None:
    """Cue a background caller of uac_hangup_on_cue.xml (its first call) to hang up now,
    as a citizen puts the phone down: a SIP INFO on the caller's dialog, after which the
    caller sends its BYE. The cue is not answered (the scenario's own signal), so the
    test sees it work by the caller ending: ``caller.wait(...) == 0``."""
    ip, port = _SIGNALLING[caller.pid]
    call_id = f"1-{caller.pid}@{ip}"  # SIPp's Call-ID of call 1: [call_number]-[pid]@[local_ip]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        here = sock.getsockname()
        info = (f"INFO sip:caller@{ip}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {here[0]}:{here[1]};branch=z9hG4bK-cue-{caller.pid}\r\n"
                f"From: <sip:test@{here[0]}:{here[1]}>;tag=cue\r\n"
                f"To: <sip:caller@{ip}:{port}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")
        sock.sendto(info.encode(), (ip, port))


def parse_sipp_stats(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    last = lines[-1].split(";")
    out = {}
    for name, value in zip(header, last, strict=False):
        if re.fullmatch(r"\d+", value.strip()):
            out[name.strip()] = int(value)
    return out


def wait_process_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


# ----------------------------------------------------------------------------- phones


@dataclass
class Phones:
    """Auto-answering SIPp phones registered (digest auth) as the given endpoints."""

    endpoints: list[str]
    port: int
    uas: subprocess.Popen[str]
    workdir: Path

    def stop(self) -> str:
        if self.uas.poll() is None:
            self.uas.terminate()
        try:
            self.uas.wait(5)
        except subprocess.TimeoutExpired:
            self.uas.kill()
            self.uas.wait(5)
        return (self.workdir / "uas_phone.out").read_text(errors="replace")


def start_phones(settings: Settings, endpoints: list[str], workdir: Path,
                 scenario: str = "uas_phone.xml",
                 keys: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> Phones:
    import socket as _socket

    from stack.render import phones as all_phones

    workdir.mkdir(parents=True, exist_ok=True)
    passwords = {p.id: p.password for p in all_phones(settings)}
    port = free_port(_socket.SOCK_DGRAM)
    for ep in endpoints:
        reg = subprocess.run(
            ["sipp", f"127.0.0.1:{settings.asterisk.sip_port}", "-sf",
             str(SIPP_DIR / "register_auth.xml"), "-s", ep, "-au", ep, "-ap", passwords[ep],
             "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "10s",
             "-timeout_error", "-nostdin"],
            cwd=workdir, capture_output=True, text=True, timeout=30)
        assert reg.returncode == 0, f"{ep} did not register:\n{reg.stdout}\n{reg.stderr}"
    media = free_port(_socket.SOCK_DGRAM)
    with (workdir / "uas_phone.out").open("w") as out:
        extra = [arg for key, value in (keys or {}).items() for arg in ("-key", key, value)]
        uas = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / scenario), "-i", "127.0.0.1", "-mi",
             "127.0.0.1", "-p", str(port), "-mp", str(media), "-nostdin", *extra,
             *extra_args],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, text=True)
    wait_reachable(settings, endpoints)
    return Phones(endpoints, port, uas, workdir)



def send(settings: Settings, command) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Send a console command to ari_app and wait for its ``command.result``."""
    from common.bus import read_events
    from common.commands import send_command
    from common.events import decode

    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.prefix)
    try:
        send_command(client, keys, command)

        def result() -> dict | None:  # type: ignore[type-arg]
            for _sid, body in read_events(client, keys):
                event = decode(body)
                if event.type == "command.result" and \
                        event.command_id == command.id:  # type: ignore[attr-defined]
                    return event.to_dict()["data"]  # type: ignore[no-any-return]
            return None

        return wait_until(result, 15, f"no result for {command.type}")  # type: ignore[no-any-return]
    finally:
        client.close()


# ------------------------------------------------------- controller in this process


class ThreadedController:
    """ari_app's Controller on its own event loop in a thread of the test process, so a
    test can inject the clock (service hours "at" any time) while ARI, AMI, Asterisk,
    Redis and the database stay real."""

    def __init__(self, settings: Settings, clock) -> None:  # type: ignore[no-untyped-def]
        import asyncio
        import threading

        from ari_app.controller import Controller

        self.loop = asyncio.new_event_loop()
        self.controller: Controller | None = None
        ready = threading.Event()

        async def main() -> None:
            self.controller = Controller(settings, instance="in-test", clock=clock)
            ready.set()
            try:
                await self.controller.run()
            finally:
                await self.controller.close()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),),
                                       daemon=True)
        self.thread.start()
        assert ready.wait(10), "controller did not start"

    def stop(self) -> None:
        if self.controller is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.controller.request_stop)
        self.thread.join(20)
        if self.thread.is_alive():  # say what it is stuck in, not "cannot close"
            import asyncio
            import io

            stacks = io.StringIO()
            for task in asyncio.all_tasks(self.loop):
                task.print_stack(file=stacks)
            raise AssertionError(f"the in-test controller did not stop:\n{stacks.getvalue()}")
        self.loop.close()
