"""kiosk_bridge for the loopback-only tests: aioice never offers 127.0.0.1 as a host
candidate (ENVIRONMENT.md), so the tests' bridge offers exactly that. Production runs
``python -m kiosk_bridge.main`` unpatched."""

from __future__ import annotations

import sys

import aioice.ice

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # type: ignore[assignment]

from kiosk_bridge.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
