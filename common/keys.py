"""Redis key and channel names, built from the configured prefix.

Every process derives names from one ``Keys`` object so that producers and consumers
never disagree. Live state here is rebuildable; durable records live in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "mado"

    @property
    def events(self) -> str:
        """Stream of every cross-process event (XADD, MAXLEN ~); SSE resumes from its ids."""
        return f"{self.prefix}:events"

    @property
    def events_live(self) -> str:
        """Pub/sub channel that mirrors ``events`` for live listeners."""
        return f"{self.prefix}:events:live"

    @property
    def commands(self) -> str:
        """Stream of commands to ari_app (consumer group ``ari_app``)."""
        return f"{self.prefix}:commands"

    def health(self, component: str, instance: str) -> str:
        """Hash with one process's heartbeat; expires when the process stops reporting."""
        return f"{self.prefix}:health:{component}:{instance}"

    def health_pattern(self, component: str = "*") -> str:
        return f"{self.prefix}:health:{component}:*"

    def health_seen(self, component: str) -> str:
        """Sorted set instance -> time of its last heartbeat, kept after the hash expires
        (an instance that stops cleanly leaves it): since when a silent one is silent.
        Outside ``health_pattern`` on purpose: it is not a heartbeat hash."""
        return f"{self.prefix}:health-seen:{component}"

    @property
    def sites(self) -> str:
        """Hash site id -> JSON state of every site as this site's controller sees it
        (the two-site form, ari_app.sites)."""
        return f"{self.prefix}:sites"

    def call(self, call_id: str) -> str:
        """Hash with the live state of one call."""
        return f"{self.prefix}:call:{call_id}"

    @property
    def active_calls(self) -> str:
        """Set of ids of calls in progress."""
        return f"{self.prefix}:calls:active"

    def queue_members(self, queue: str) -> str:
        """Hash endpoint -> JSON state of each operator line in ``queue`` (from AMI)."""
        return f"{self.prefix}:queue:{queue}:members"

    def queue_callers(self, queue: str) -> str:
        """Hash call id -> JSON {position, joined_at} of callers waiting in ``queue``."""
        return f"{self.prefix}:queue:{queue}:callers"
