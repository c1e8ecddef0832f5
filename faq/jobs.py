"""rq jobs of the FAQ base and the hook that queues them.

``reindex`` is a module-level function taking ids only (rq runs it in a worker that
imports this module). It reads the published items from SQL, builds the search index
and stores it in Redis as a new generation (``faq.store``); searchers pick it up in the
background, so a search never waits for a rebuild.

After committing a workflow change, the caller hands the returned events to
``after_commit``: they are published on the event bus, and a published revision
queues ``reindex``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from sqlalchemy.orm import Session

from common.bus import publish as bus_publish
from common.db import make_engine, session_factory
from common.events import Event
from common.faq_events import FaqIndexRebuilt, FaqPublished
from common.keys import Keys
from common.settings import load_settings
from faq import services, store
from faq.search import DEFAULT_ENCODER, Encoder, IndexedItem, make_encoder

logger = logging.getLogger(__name__)

QUEUE = "default"
"""rq queue the re-index job goes to (one of worker.queues in the settings)."""

_encoder_lock = threading.Lock()
_encoders: dict[str, Encoder | None] = {}


def _encoder(name: str) -> Encoder | None:
    # Kept per worker process: loading the model costs about a second, a job is shorter.
    with _encoder_lock:
        if name not in _encoders:
            _encoders[name] = make_encoder(name)
        return _encoders[name]


def published_index_items(session: Session) -> list[IndexedItem]:
    """Every published item of every tenant (tenant filtering happens at query time)."""
    return [IndexedItem.from_published(p.id, p.revision_id, p.tenant, p.kind, p.content)
            for p in services.list_published(session)]


def rebuild(session: Session, client: redis.Redis, *, prefix: str = "mado",
            encoder: Encoder | None = None) -> FaqIndexRebuilt:
    """Build and store a new index generation; returns the event announcing it."""
    started = time.perf_counter()
    items = published_index_items(session)
    generation, _index = store.build_and_store(client, items, encoder, prefix)
    seconds = time.perf_counter() - started
    logger.info("FAQ index generation %s built: %s items in %.2f s", generation, len(items),
                seconds)
    return FaqIndexRebuilt(generation=generation, items=len(items), seconds=f"{seconds:.3f}")


def reindex(revision_id: int | None = None, encoder_name: str = DEFAULT_ENCODER) -> dict[str, Any]:
    """rq job: rebuild the FAQ search index (``revision_id`` is the published revision
    that triggered it, for the log)."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        with session_factory(engine)() as session:
            event = rebuild(session, client, prefix=settings.redis.prefix,
                            encoder=_encoder(encoder_name))
        bus_publish(client, Keys(settings.redis.prefix), event,
                    maxlen=settings.redis.event_stream_maxlen)
        logger.info("re-index after revision %s done", revision_id)
        return {"generation": event.generation, "items": event.items, "seconds": event.seconds}
    finally:
        client.close()
        engine.dispose()


def after_commit(client: redis.Redis, keys: Keys, events: Iterable[Event],
                 queue: Any | None = None) -> str | None:
    """Publish the events of a committed change; queue ``reindex`` if one was published.

    ``queue`` is an ``rq.Queue`` (``Queue(QUEUE, connection=client)``); returns the id
    of the queued job, if any.
    """
    job_id: str | None = None
    for event in events:
        bus_publish(client, keys, event)
        if isinstance(event, FaqPublished) and queue is not None and job_id is None:
            job = queue.enqueue(reindex, event.revision_id, job_timeout=600)
            job_id = str(job.id)
    return job_id
