"""``python -m kiosk_agent [--config FILE] [--port N] ...``: run the card agent."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from .card import PcscCardReader
from .server import CardAgentServer
from .settings import AgentSettings, SettingsError, load_settings, read_file

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> AgentSettings:
    parser = argparse.ArgumentParser(prog="kiosk_agent",
                                     description="My Number card agent for the kiosk page")
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument("--bind", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--allowed-origin", dest="allowed_origin")
    parser.add_argument("--reader", help="reader name or prefix")
    parser.add_argument("--log-level", dest="log_level")
    args = parser.parse_args(argv)
    data: dict[str, Any] = read_file(args.config) if args.config else {}
    for key in ("bind", "port", "allowed_origin", "reader", "log_level"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    return load_settings(data)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
    except (SettingsError, OSError) as exc:
        print(f"kiosk_agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = CardAgentServer(settings, PcscCardReader(settings.reader))
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            logger.info("signal %d: stopping", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("card agent on http://%s:%d for origin %s", settings.bind, server.port,
                settings.allowed_origin)
    # The port line on stdout lets a supervisor (or a test) learn a port chosen with 0.
    print(f"listening {settings.bind}:{server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
