"""kiosk_bridge entry point: ``python -m kiosk_bridge.main``.

Loads the settings, runs the bridge (``kiosk_bridge.bridge``: WebRTC with the kiosks, RTP
with Asterisk, requests from web over Redis, heartbeat for the health page) and stops
cleanly on SIGTERM/SIGINT, closing every session (each is purged, its Asterisk leg
ended).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from common.process import run_process
from common.settings import Settings
from kiosk_bridge.bridge import Bridge

logger = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    bridge = Bridge(settings)
    logger.info("kiosk_bridge started (instance %s, RTP on %s, %d ICE server(s))",
                bridge.instance, settings.kiosk_bridge.bind,
                len(settings.kiosk_bridge.ice_servers))
    await bridge.run(stop)
    logger.info("kiosk_bridge stopped")
    return 0


def main() -> int:
    return run_process("kiosk_bridge", serve)


if __name__ == "__main__":
    sys.exit(main())
