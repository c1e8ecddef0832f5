"""Events of the FAQ and manual base (see docs/faq.md).

Producers: faq.services (returned to the caller, who publishes them after its commit)
and faq.jobs (index rebuilt). Consumers: the web console (refresh lists), the
suggesters (reload the index), the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.events import Event, event


@event("faq.revision")
@dataclass(frozen=True, kw_only=True)
class FaqRevisionChanged(Event):
    """A revision was created or moved in the workflow (submitted, approved, returned...)."""

    item_id: int
    revision_id: int
    tenant: str  # "" = shared by every tenant
    action: str  # created | submitted | approved | returned | discarded | acknowledged
    actor: str
    status: str


@event("faq.published")
@dataclass(frozen=True, kw_only=True)
class FaqPublished(Event):
    """A revision went live (change="edit") or took an item off the air ("withdraw")."""

    item_id: int
    revision_id: int
    tenant: str
    change: str
    actor: str


@event("faq.index_rebuilt")
@dataclass(frozen=True, kw_only=True)
class FaqIndexRebuilt(Event):
    """The rq job stored a new search index generation in Redis."""

    generation: int
    items: int
    seconds: str  # build time, decimal text


__all__ = ["FaqIndexRebuilt", "FaqPublished", "FaqRevisionChanged"]
