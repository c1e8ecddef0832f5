"""ari_app entry point: ``python -m ari_app.main``."""

from __future__ import annotations

import asyncio
import logging
import sys

from ari_app.controller import Controller
from common.db import DatabaseUnavailable
from common.process import run_process
from common.settings import Settings

logger = logging.getLogger(__name__)

# Database writes run in worker threads (ari_app.timeline.Recorder) while the event loop
# routes calls. With CPython's default 5 ms switch interval a loop woken by an ARI event
# can wait that long for the GIL behind a write; 0.5 ms keeps routing latency low at the
# cost of a few more thread switches.
GIL_SWITCH_INTERVAL_S = 0.0005


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    try:
        controller = Controller(settings)
    except DatabaseUnavailable as exc:
        logger.error("%s", exc)
        return 2
    stopper = asyncio.create_task(stop.wait(), name="stop")
    stopper.add_done_callback(lambda _task: controller.request_stop())
    logger.info("ari_app %s starting: ARI %s (app %s), AMI %s:%s", controller.instance,
                settings.asterisk.ari_url, settings.asterisk.ari_app, settings.asterisk.host,
                settings.asterisk.ami_port)
    try:
        await controller.run()
    finally:
        stopper.cancel()
        await controller.close()
    logger.info("ari_app stopped")
    return 0


def main() -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return run_process("ari_app", serve)


if __name__ == "__main__":
    sys.exit(main())
