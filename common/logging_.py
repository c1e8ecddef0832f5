"""Logging set-up for every process's main(): one format, noisy libraries quieted."""

from __future__ import annotations

import logging

QUIET = ("httpx", "httpcore", "websockets", "panoramisk", "urllib3", "aioice", "aiortc")


def setup_logging(process: str, level: str = "INFO") -> None:
    """Logging starts before the settings load (so that settings errors are logged);
    ``set_level`` then applies ``site.log_level``."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
