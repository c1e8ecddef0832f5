"""Transcriber entry point: ``python -m transcriber.main``.

Loads the settings, starts the service (docs/transcription.md) and stops cleanly on
SIGTERM/SIGINT. A missing or wrong model is not fatal: the process stays up, reports
``unavailable`` with the reason in its heartbeat, and calls go on without transcription.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from common.process import run_process
from common.settings import Settings
from transcriber.service import TranscriberService

logger = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event) -> int:
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
    return run_process("transcriber", serve)


if __name__ == "__main__":
    sys.exit(main())
