"""Fixtures for the card agent through a real PC/SC stack.

A private ``pcscd -f`` (own mount namespace, own reader.conf.d with vsmartcard's vpcd
on a free port) runs for the session; this process's pyscard talks to it through
``PCSCLITE_CSOCK_NAME``. Cards are emulated (kiosk_agent/testing/emulator.py) and
inserted into vpcd's slot over loopback. Nothing here mocks pcscd, vpcd or pyscard.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kiosk_agent.card import PcscCardReader
from kiosk_agent.server import CardAgentServer
from kiosk_agent.settings import load_settings
from kiosk_agent.testing.emulator import CardProfile, VirtualMyNumberCard, VpcdCard
from kiosk_agent.testing.pcsc_stack import PrivatePcscd, missing_prerequisites

ORIGIN = "http://127.0.0.1:8000"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pcsc() -> Iterator[PrivatePcscd]:
    problem = missing_prerequisites()
    if problem:
        pytest.fail(f"card tests need a real PC/SC stack: {problem}")
    stack = PrivatePcscd().start()
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    # libpcsclite reads this once, at this process's first PC/SC call.
    os.environ["PCSCLITE_CSOCK_NAME"] = stack.socket_path
    yield stack
    stack.stop()
    if previous is None:
        os.environ.pop("PCSCLITE_CSOCK_NAME", None)
    else:
        os.environ["PCSCLITE_CSOCK_NAME"] = previous


@pytest.fixture
def reader(pcsc: PrivatePcscd) -> PcscCardReader:
    return PcscCardReader(pcsc.reader(0))


def wait_for_card(reader: PcscCardReader, present: bool, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reader.status(wait_for_card=0.2 if present else 0).card == present:
            return
        if not present:
            time.sleep(0.05)
    raise AssertionError(f"card {'insertion' if present else 'removal'} not seen by pcscd")


@dataclass
class Slot:
    """Inserts emulated cards into vpcd slot 0; removes them at teardown."""

    pcsc: PrivatePcscd
    reader: PcscCardReader
    inserted: list[VpcdCard] = field(default_factory=list)

    def insert(self, profile: CardProfile | None = None,
               remove_when: Callable[[bytes, int], bool] | None = None) -> VirtualMyNumberCard:
        card = VirtualMyNumberCard(profile or CardProfile())
        vpcd_card = VpcdCard(card, self.pcsc.vpcd_port, remove_when=remove_when).insert()
        self.inserted.append(vpcd_card)
        wait_for_card(self.reader, True)
        return card

    def remove(self) -> None:
        for vpcd_card in self.inserted:
            vpcd_card.remove()
        wait_for_card(self.reader, False)


@pytest.fixture
def slot(pcsc: PrivatePcscd, reader: PcscCardReader) -> Iterator[Slot]:
    s = Slot(pcsc, reader)
    wait_for_card(reader, False)
    yield s
    s.remove()
    # Whatever the test did: the individual-number EF was never selected or read.
    for vpcd_card in s.inserted:
        assert not vpcd_card.card.touched_individual_number()


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class AgentClient:
    port: int

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 15.0) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"Origin": ORIGIN}
            if body is not None:
                all_headers["Content-Type"] = "application/json"
            all_headers.update(headers or {})
            conn.request(method, path, body=body, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read()
            data = json.loads(raw) if raw else {}
            return Response(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def read(self, pin: str, **kw: Any) -> Response:
        return self.request("POST", "/read", body=json.dumps({"pin": pin}).encode(), **kw)


@pytest.fixture
def agent(pcsc: PrivatePcscd) -> Iterator[AgentClient]:
    """The agent's HTTP server in this process (port chosen by the OS)."""
    settings = load_settings({"port": 0, "allowed_origin": ORIGIN, "reader": pcsc.reader(0)})
    server = CardAgentServer(settings, PcscCardReader(settings.reader))
    thread = server.start_in_thread()
    yield AgentClient(server.port)
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class AgentProcess:
    """``python -m kiosk_agent`` as the kiosk runs it, against a given pcscd socket."""

    proc: subprocess.Popen[str]
    client: AgentClient
    log: Path

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.log.read_text()


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(socket_path: str, *args: str) -> AgentProcess:
        env = dict(os.environ, PCSCLITE_CSOCK_NAME=socket_path)
        log = tmp_path / f"agent-{len(started)}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kiosk_agent", "--port", "0",
                 "--allowed-origin", ORIGIN, "--log-level", "DEBUG", *args],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            proc.kill()
            raise AssertionError(f"agent did not start: {line!r} {log.read_text()}")
        running = AgentProcess(proc, AgentClient(int(line.rsplit(":", 1)[1])), log)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
