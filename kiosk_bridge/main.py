"""kiosk_bridge entry point: ``python -m kiosk_bridge.main``.

Loads the settings, runs the bridge (``kiosk_bridge.bridge``: WebRTC with the kiosks, RTP
with Asterisk, requests from web over Redis, heartbeat for the health page) and stops
cleanly on SIGTERM/SIGINT, closing every session (each is purged, its Asterisk leg
ended).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from common.logging_ import set_level, setup_logging
from common.settings import SettingsError, load_settings

logger = logging.getLogger(__name__)


async def _serve() -> int:
    from kiosk_bridge.bridge import Bridge

    settings = load_settings()
    set_level(settings.site.log_level)
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(settings)
    logger.info("kiosk_bridge started (instance %s, RTP on %s, %d ICE server(s))",
                bridge.instance, settings.kiosk_bridge.bind,
                len(settings.kiosk_bridge.ice_servers))
    await bridge.run(stop)
    logger.info("kiosk_bridge stopped")
    return 0


def main() -> int:
    setup_logging("kiosk_bridge")
    try:
        return asyncio.run(_serve())
    except SettingsError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
