"""ari_app entry point: ``python -m ari_app.main``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from ari_app.controller import Controller
from common.db import DatabaseUnavailable
from common.logging_ import set_level, setup_logging
from common.settings import SettingsError, load_settings

logger = logging.getLogger(__name__)

# Database writes run in worker threads (ari_app.timeline.Recorder) while the event loop
# routes calls. With CPython's default 5 ms switch interval a loop woken by an ARI event
# can wait that long for the GIL behind a write; 0.5 ms keeps routing latency low at the
# cost of a few more thread switches.
GIL_SWITCH_INTERVAL_S = 0.0005


async def _serve() -> int:
    settings = load_settings()
    set_level(settings.site.log_level)
    try:
        controller = Controller(settings)
    except DatabaseUnavailable as exc:
        logger.error("%s", exc)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.request_stop)
    logger.info("ari_app %s starting: ARI %s (app %s), AMI %s:%s", controller.instance,
                settings.asterisk.ari_url, settings.asterisk.ari_app, settings.asterisk.host,
                settings.asterisk.ami_port)
    try:
        await controller.run()
    finally:
        await controller.close()
    logger.info("ari_app stopped")
    return 0


def main() -> int:
    setup_logging("ari_app")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        return asyncio.run(_serve())
    except SettingsError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
