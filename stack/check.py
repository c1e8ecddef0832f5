"""Container health check: ``python -m stack.check COMPONENT`` exits 0 when the component
reports healthy (the same view as the web health page), 1 otherwise."""

from __future__ import annotations

import sys

import redis

from common.db import make_engine
from common.health import COMPONENTS, collect
from common.keys import Keys
from common.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in COMPONENTS:
        print(f"usage: python -m stack.check {{{','.join(COMPONENTS)}}}", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=2)
    engine = make_engine(settings.database_url)
    try:
        for item in collect(client, Keys(settings.redis.prefix), engine, settings):
            if item.component == argv[0]:
                print(f"{item.component}: {'ok' if item.ok else 'DOWN'} ({item.detail})")
                return 0 if item.ok else 1
    finally:
        client.close()
        engine.dispose()
    return 1


if __name__ == "__main__":
    sys.exit(main())
