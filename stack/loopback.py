"""Helpers for running the system's processes side by side on one machine (the tests'
and benchmarks' stacks, the two-site drill): free loopback ports, waiting on a
condition, stopping a child process."""

from __future__ import annotations

import socket
import subprocess  # nosec B404 # only waits on and stops processes started elsewhere
import time
from collections.abc import Callable
from typing import Any


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (TCP, or UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_range(size: int, host: str = "127.0.0.1") -> int:
    """The even first port of ``size`` consecutive UDP ports free on ``host`` (RTP)."""
    for _ in range(50):
        start = free_port(socket.SOCK_DGRAM, host)
        if start + size > 65535:  # a wide range: below the ephemeral ones
            start = 20000 + (start * 7919) % max(1, 65535 - size - 20000)
        start -= start % 2
        try:
            for port in range(start, start + size):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return start
    raise RuntimeError("no free UDP port range")


def wait_until(predicate: Callable[[], Any], timeout: float, message: str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true (that value); after
    ``timeout`` seconds raise TimeoutError with ``message`` and the last exception the
    predicate raised."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{message} (waited {timeout:.0f} s; last error: {last!r})")


def terminate(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
