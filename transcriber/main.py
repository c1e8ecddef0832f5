"""Transcriber entry point: ``python -m transcriber.main``.

Loads the settings, starts the service (docs/transcription.md) and stops cleanly on
SIGTERM/SIGINT. A missing or wrong model is not fatal: the process stays up, reports
``unavailable`` with the reason in its heartbeat, and calls go on without transcription.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from common.logging_ import set_level, setup_logging
from common.settings import SettingsError, load_settings
from transcriber.service import TranscriberService

logger = logging.getLogger(__name__)


async def _serve() -> int:
    settings = load_settings()
    set_level(settings.site.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = TranscriberService(settings)
    try:
        await service.run(stop)
    except OSError as exc:
        cfg = settings.transcription
        logger.error("cannot receive audio on %s:%d (%s): fix transcription.rtp_bind / "
                     "rtp_port", cfg.rtp_bind, cfg.rtp_port, exc)
        return 2
    finally:
        await service.close()
    logger.info("transcriber stopped")
    return 0


def main() -> int:
    setup_logging("transcriber")
    try:
        return asyncio.run(_serve())
    except SettingsError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
