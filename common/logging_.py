"""Logging set-up for every process's main(): one format, noisy libraries quieted."""

from __future__ import annotations

import logging
import os

QUIET = ("httpx", "httpcore", "websockets", "panoramisk", "urllib3", "aioice", "aiortc")


def setup_logging(process: str, level: str | None = None) -> None:
    # The process's own log level may be raised for debugging with MADOGUCHI_LOG_LEVEL;
    # this is the one environment read outside common.settings (logging starts before
    # settings load so that settings errors are logged).
    chosen = (level or os.environ.get("MADOGUCHI_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=chosen,
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
