"""The shared search index: built by the rq job, stored in Redis, loaded by every searcher.

Redis keys (prefix from settings, ``mado`` by default):

``{prefix}:faq:index:current``
    Integer: the generation number of the index to use.
``{prefix}:faq:index:{generation}``
    Hash with ``items`` (JSON list of IndexedItem dicts), ``emb`` (float16 matrix
    bytes, one row per item), ``dim``, ``encoder``, ``built_at``. Older generations
    expire an hour after being replaced.
``{prefix}:faq:emb:{encoder}``
    Hash: sha1 of an item's semantic text -> float16 vector bytes, so a rebuild only
    encodes items whose text changed.
``{prefix}:faq:index:lock``
    Short lock so that two workers do not build at once (the later one waits).

``FaqSearch`` is what the console, the live-transcript suggester and the kiosk hold: it
serves ``suggest`` from the index it has and swaps in a newer generation loaded in a
background thread, so a search never waits for a rebuild or a reload.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from faq.search import Encoder, IndexedItem, SearchIndex, Suggestion, limit_blas_threads

logger = logging.getLogger(__name__)

OLD_GENERATION_TTL = 3600
"""Seconds a replaced index generation stays readable for processes still loading it."""


class IndexKeys:
    def __init__(self, prefix: str = "mado") -> None:
        self.prefix = prefix

    @property
    def current(self) -> str:
        return f"{self.prefix}:faq:index:current"

    def generation(self, n: int) -> str:
        return f"{self.prefix}:faq:index:{n}"

    def embeddings(self, encoder: str) -> str:
        return f"{self.prefix}:faq:emb:{encoder}"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:faq:index:lock"

    @property
    def counter(self) -> str:
        return f"{self.prefix}:faq:index:seq"


def build_and_store(client: redis.Redis, items: Sequence[IndexedItem], encoder: Encoder | None,
                    prefix: str = "mado") -> tuple[int, SearchIndex]:
    """Build an index over ``items`` (reusing cached vectors) and make it current."""
    keys = IndexKeys(prefix)
    enc_name = encoder.name if encoder is not None else "none"
    with client.lock(keys.lock, timeout=600, blocking_timeout=600):
        cache: dict[str, np.ndarray] = {}
        if encoder is not None and items:
            wanted = sorted({it.semantic_key() for it in items})
            raw: list[Any] = client.hmget(keys.embeddings(enc_name), wanted)
            for key, blob in zip(wanted, raw, strict=True):
                if blob:
                    cache[key] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        before = set(cache)
        index = SearchIndex.build(items, encoder, cached=cache)
        new_vectors: dict[Any, Any] = {k: v.astype(np.float16).tobytes()
                                       for k, v in cache.items() if k not in before}
        generation = int(client.incr(keys.counter))
        emb = index.embeddings if index.embeddings is not None else np.zeros((0, 0))
        mapping: dict[Any, Any] = {
            "items": json.dumps([it.to_dict() for it in items], ensure_ascii=False),
            "emb": emb.astype(np.float16).tobytes(),
            "dim": str(emb.shape[1] if emb.ndim == 2 else 0),
            "encoder": enc_name,
            "built_at": datetime.now(UTC).isoformat(),
        }
        previous = client.get(keys.current)
        pipe = client.pipeline(transaction=True)
        if new_vectors:
            pipe.hset(keys.embeddings(enc_name), mapping=new_vectors)
        pipe.hset(keys.generation(generation), mapping=mapping)
        pipe.set(keys.current, generation)
        if previous is not None:
            pipe.expire(keys.generation(int(previous)), OLD_GENERATION_TTL)
        pipe.execute()
    index.generation = generation
    return generation, index


def current_generation(client: redis.Redis, prefix: str = "mado") -> int:
    value = client.get(IndexKeys(prefix).current)
    return int(value) if value is not None else 0


def load_index(client: redis.Redis, encoder: Encoder | None, prefix: str = "mado",
               generation: int | None = None) -> SearchIndex | None:
    """The stored index (current generation by default), or None if none was built."""
    keys = IndexKeys(prefix)
    gen = current_generation(client, prefix) if generation is None else generation
    if gen == 0:
        return None
    raw: list[Any] = client.hmget(keys.generation(gen), ["items", "emb", "dim", "encoder"])
    if raw[0] is None:
        return None
    items = [IndexedItem.from_dict(d) for d in json.loads(raw[0])]
    dim = int(raw[2] or 0)
    stored_encoder = raw[3].decode() if isinstance(raw[3], bytes) else str(raw[3])
    embeddings: np.ndarray | None = None
    use_encoder = encoder
    if encoder is not None and stored_encoder == encoder.name and dim:
        embeddings = np.frombuffer(raw[1], dtype=np.float16).astype(np.float32).reshape(-1, dim)
    elif encoder is not None:
        logger.warning("FAQ index generation %s was built with encoder %s, not %s: "
                       "searching lexically until the next rebuild", gen, stored_encoder,
                       encoder.name)
        use_encoder = None
    return SearchIndex(items, embeddings, use_encoder, generation=gen)


class FaqSearch:
    """A long-lived searcher for one process: non-blocking suggest, background reloads."""

    def __init__(self, client: redis.Redis, encoder: Encoder | None, prefix: str = "mado",
                 check_interval: float = 2.0, blas_threads: int | None = 1) -> None:
        if blas_threads is not None:
            limit_blas_threads(blas_threads)
        self._client = client
        self._encoder = encoder
        self._prefix = prefix
        self._check_interval = check_interval
        self._index: SearchIndex | None = None
        self._last_check = 0.0
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._index.generation if self._index is not None else 0

    def refresh(self, wait: bool = False) -> None:
        """Load a newer generation if there is one: in a background thread (default) or
        now (``wait=True``, for start-up and tests)."""
        if wait:
            self._load()
            return
        with self._lock:
            if self._loading is not None and self._loading.is_alive():
                return
            self._loading = threading.Thread(target=self._load_logged, name="faq-index-load",
                                             daemon=True)
            self._loading.start()

    def wait_loaded(self, timeout: float = 30.0) -> None:
        thread = self._loading
        if thread is not None:
            thread.join(timeout)

    def _load_logged(self) -> None:
        try:
            self._load()
        except Exception:  # a failed reload keeps serving the index we have
            logger.exception("loading the FAQ search index failed")

    def _load(self) -> None:
        gen = current_generation(self._client, self._prefix)
        if gen == 0 or gen == self.generation:
            return
        index = load_index(self._client, self._encoder, self._prefix, gen)
        if index is not None:
            self._index = index
            logger.info("FAQ search index generation %s loaded (%s items)", gen, len(index))

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now - self._last_check < self._check_interval:
            return
        self._last_check = now
        try:
            newer = current_generation(self._client, self._prefix) != self.generation
        except redis.RedisError as exc:
            logger.warning("cannot check the FAQ index generation: %s", exc)
            return
        if newer:
            self.refresh()

    def suggest(self, text: str, *, tenant: str, channel: str | None = None,
                k: int = 5) -> list[Suggestion]:
        """Ranked published items; empty until the first index generation is loaded."""
        self._maybe_refresh()
        index = self._index
        if index is None:
            return []
        return index.suggest(text, tenant=tenant, channel=channel, k=k)
