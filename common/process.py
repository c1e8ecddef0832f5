"""The start of every process's ``main()``, and the whole skeleton of the asyncio ones
(ari_app, kiosk_bridge, transcriber; the rq worker uses ``start_process``).

One place for what each of them did alike: logging before the settings load (so a
settings error is logged), ``site.log_level``, SIGTERM/SIGINT setting one stop event, and
the exit codes: 0 after a clean stop, 2 for configuration the operator must fix (the
message says what).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from common.logging_ import set_level, setup_logging
from common.settings import CONFIG_FILE_VAR, Settings, SettingsError, load_settings

logger = logging.getLogger(__name__)

Serve = Callable[[Settings, asyncio.Event], Awaitable[int]]
"""A process's body: runs until the stop event is set and returns the exit code."""


def start_process(name: str) -> Settings | None:
    """Set up logging as ``name`` and load the settings; None (the error logged) when they
    cannot be used. The rq worker's ``main()`` starts with this too."""
    setup_logging(name)
    try:
        settings = load_settings()
    except SettingsError as exc:
        logger.error("%s", exc)
        return None
    set_level(settings.site.log_level)
    log_settings(name, settings)
    return settings


def log_settings(name: str, settings: Settings) -> None:
    """Which settings this process runs on: the site file and their fingerprint, the same
    in every process that ``make run`` (or a deployment) started from one configuration."""
    site_file = os.environ.get(CONFIG_FILE_VAR, "")
    logger.info("%s: settings %s (%s; %d services, %d departments, %d kiosks)", name,
                settings.fingerprint(), f"site file {site_file}" if site_file else
                "embedded defaults", len(settings.services), len(settings.departments),
                len(settings.kiosks))


def run_process(name: str, serve: Serve) -> int:
    """``start_process``, then run ``serve`` in a new event loop until it returns; SIGTERM
    and SIGINT set its stop event."""
    settings = start_process(name)
    if settings is None:
        return 2
    return asyncio.run(_serve(settings, serve))


async def _serve(settings: Settings, serve: Serve) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await serve(settings, stop)


async def cancel_tasks(tasks: list[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait until they have ended, cancelling again those that go on.

    A cancellation can be lost inside a library: on Python 3.11 an ``asyncio.timeout``
    that expires as the cancellation arrives turns it into a ``TimeoutError`` (redis-py
    raises it as its own), and a loop that retries Redis errors then runs on, so one
    ``cancel()`` and ``gather`` could wait for ever. Tasks still running after
    ``timeout`` seconds are logged and left.
    """
    pending = {task for task in tasks if not task.done()}
    deadline = asyncio.get_running_loop().time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            logging.getLogger(__name__).error(
                "tasks still running after %g s of cancelling: %s", timeout,
                ", ".join(sorted(task.get_name() for task in pending)))
            return
        _done, pending = await asyncio.wait(pending, timeout=min(0.5, left))
