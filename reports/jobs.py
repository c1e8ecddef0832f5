"""rq job functions. Module-level, taking ids/dates only, loading their own settings
(rq: "global variables are evil"; the worker imports this module by name)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis

from common.db import init_schema, make_engine, session_factory, transaction
from common.health import collect
from common.keys import Keys
from common.models import HealthSample
from common.settings import load_settings

logger = logging.getLogger(__name__)


def health_rollup() -> dict[str, Any]:
    """Sample every component's health into the database (the incident history)."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        init_schema(engine)
        results = collect(client, Keys(settings.redis.prefix), engine)
        at = datetime.now(UTC)
        with transaction(session_factory(engine)) as session:
            for item in results:
                session.add(HealthSample(at=at, component=item.component, ok=item.ok,
                                         detail=item.detail[:2000]))
        down = [r.component for r in results if not r.ok]
        if down:
            logger.warning("health roll-up: down: %s", ", ".join(down))
        return {"at": at.isoformat(), "components": len(results), "down": down}
    finally:
        client.close()
        engine.dispose()
