"""The two-site form (docs/sites.md): every site as this site's controller sees it, and
the takeover of a lost site's cut calls.

Two facts make a site's state, each from the part that knows it:

- the edge's dispatcher (Kamailio, ``common.edge``): whether the site answers the SIP
  probes, i.e. whether new calls go there;
- the site's own controller (its ari_app heartbeat in the shared Redis, under the
  site's prefix): whether it is connected to its Asterisk over ARI.

A site is ``up`` when both say so, ``down`` when either says it is not, ``unknown``
while the edge does not answer and the controller alone cannot tell. Every change is
written to ``Keys.sites`` (the consoles read it when a page is drawn) and published as a
``site.state`` event (they update as it happens).

A site is *lost* when the edge has marked it down and its controller has not reported
ARI up for ``edge.takeover_seconds``. Then this site, if it is itself up, closes the
lost site's calls that were still open -- callers who were waiting or talking there are
cut from SIP -- with the outcome ``site_lost``, and lists each phone caller with a
number as a callback at the front of its queue here (``Callback.reason = site_lost``:
"切断された通話" on the consoles); the lost site's own open callbacks move here too.
Each call is claimed by one conditional update, so two survivors never both take it. A
site that is only cut off from the edge but still has its controller and Asterisk keeps
its calls: they may well still be talking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ari_app.callbacks import NUMBER
from ari_app.timeline import TimelineStore
from common.db import transaction
from common.edge import EdgeUnreachable, SiteRoute, afetch_routes
from common.events import Event, SiteState, SiteTakeover
from common.keys import Keys
from common.models import Call, Callback
from common.settings import Settings, Site

logger = logging.getLogger(__name__)

LOST_OUTCOME = "site_lost"
OPEN_CALLBACKS = ("pending", "placed", "connecting")

Fetch = Callable[[Settings, httpx.AsyncClient], Awaitable[dict[str, SiteRoute]]]


@dataclass(frozen=True)
class SiteView:
    site: str
    state: str  # up | down | unknown
    edge: str  # up | down | probing | unreachable | unknown
    controller: str  # up | down
    since: float  # epoch seconds of the last change of ``state``


def combine(edge: str, controller: str) -> str:
    """``probing``: the site missed a probe but still takes calls (not down yet)."""
    if edge in ("up", "probing") and controller == "up":
        return "up"
    if edge == "down" or controller == "down":
        return "down"
    return "unknown"


class SiteWatch:
    def __init__(self, settings: Settings, client: aioredis.Redis, keys: Keys,
                 publish: Callable[[Event], Awaitable[None]],
                 factory: sessionmaker[Session], store: TimelineStore,
                 fetch: Fetch | None = None, interval: float = 1.0) -> None:
        self.settings = settings
        self.redis = client
        self.keys = keys
        self.publish = publish
        self.factory = factory
        self.store = store
        self.own = settings.site.id
        self.fetch: Fetch = fetch or (lambda s, c: afetch_routes(s, c, timeout=1.0))
        self.interval = interval
        self.views: dict[str, SiteView] = {}
        self.serving = ""
        self._lost_since: dict[str, float] = {}
        self._taken: set[str] = set()  # lost sites taken over (until seen again)

    async def run(self) -> None:
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    await self.check(http)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the next round tries again
                    logger.exception("site check failed")
                await asyncio.sleep(self.interval)

    async def check(self, http: httpx.AsyncClient) -> None:
        """One round: the edge's routes and every site's controller; publish what
        changed; take over a lost site's calls."""
        now = time.time()
        try:
            routes = await self.fetch(self.settings, http)
            reachable = True
        except EdgeUnreachable as exc:
            routes, reachable = {}, False
            if self.views.get(self.own, None) is None or \
                    self.views[self.own].edge != "unreachable":
                logger.warning("the SIP edge does not answer: %s", exc)
        ordered = sorted(self.settings.sites, key=lambda s: -s.priority)
        serving = next((s.id for s in ordered
                        if routes.get(s.id) and routes[s.id].state in ("up", "probing")), "")
        changed: list[SiteView] = []
        for site in self.settings.sites:
            edge = routes[site.id].state if site.id in routes else (
                "unknown" if reachable else "unreachable")
            controller = await self.controller(site, now)
            state = combine(edge, controller)
            old = self.views.get(site.id)
            since = old.since if old is not None and old.state == state else now
            view = SiteView(site.id, state, edge, controller, since)
            if old is None or (old.state, old.edge, old.controller) != \
                    (state, edge, controller):
                changed.append(view)
                if old is not None and old.state != state:
                    logger.warning("site %s is %s now (edge: %s, controller: %s)", site.id,
                                   state, edge, controller)
            self.views[site.id] = view
        if changed or serving != self.serving:
            self.serving = serving
            await self._write(changed)
        else:  # the same states, checked again now (the pages call older ones unknown)
            try:
                await self.redis.hset(self.keys.sites, "_checked", f"{time.time():.3f}")
            except RedisError as exc:
                logger.warning("site states not written (Redis: %s)", exc)
        await self._takeovers(now)

    async def controller(self, site: Site, now: float) -> str:
        """``up`` when one of the site's ari_app processes beat recently with ARI up."""
        prefix = self.settings.site_prefix(site)
        keys = Keys(prefix)
        try:
            async for key in self.redis.scan_iter(keys.health_pattern("ari_app")):
                beat = {k.decode() if isinstance(k, bytes) else k:
                        v.decode() if isinstance(v, bytes) else v
                        for k, v in (await self.redis.hgetall(key)).items()}
                try:
                    age = now - float(beat.get("updated_at", 0))
                    fresh = age <= 1.5 * float(beat.get("interval", 2)) + 0.5
                except ValueError:
                    continue
                if fresh and beat.get("ari") == "up":
                    return "up"
        except RedisError as exc:
            logger.warning("site %s: its controller's heartbeat cannot be read (Redis: %s)",
                           site.id, exc)
        return "down"

    async def _write(self, changed: list[SiteView]) -> None:
        mapping: dict[Any, Any] = {sid: json.dumps({**asdict(v), "serving": self.serving == sid})
                   for sid, v in self.views.items()}
        try:
            async with self.redis.pipeline() as pipe:
                pipe.delete(self.keys.sites)
                pipe.hset(self.keys.sites, mapping=mapping)
                pipe.hset(self.keys.sites, "_serving", self.serving)
                pipe.hset(self.keys.sites, "_checked", f"{time.time():.3f}")
                await pipe.execute()
        except RedisError as exc:
            logger.warning("site states not written (Redis: %s)", exc)
        for view in changed:
            await self.publish(SiteState(site=view.site, state=view.state, edge=view.edge,
                                         controller=view.controller, seen_by=self.own,
                                         serving=self.serving))

    async def _takeovers(self, now: float) -> None:
        me = self.views.get(self.own)
        for site in self.settings.sites:
            view = self.views.get(site.id)
            lost = (site.id != self.own and view is not None and view.edge == "down"
                    and view.controller == "down")
            if not lost:
                self._lost_since.pop(site.id, None)
                self._taken.discard(site.id)
                continue
            if site.id in self._taken:
                continue  # a lost site takes no new calls: nothing more to take
            first = self._lost_since.setdefault(site.id, now)
            if now - first < self.settings.edge.takeover_seconds:
                continue
            if me is None or me.state != "up":
                continue  # not serving either: nothing to take the calls to
            calls, callbacks = await asyncio.to_thread(
                take_over, self.factory, self.store, self.settings, site.id, self.own,
                datetime.now(UTC))
            self._taken.add(site.id)
            if calls or callbacks:
                logger.warning("site %s lost: %d cut call(s) closed, %d callback(s) listed "
                               "here", site.id, calls, callbacks)
                await self.publish(SiteTakeover(lost=site.id, by=self.own, calls=calls,
                                                callbacks=callbacks))


def take_over(factory: sessionmaker[Session], store: TimelineStore, settings: Settings,
              lost: str, by: str, at: datetime) -> tuple[int, int]:
    """Close the lost site's open calls as ``site_lost`` and list the phone callers as
    callbacks here, first in line; move its open callbacks here. (closed calls, callbacks
    listed or moved)."""
    closed = listed = 0
    with factory() as db:
        open_calls = list(db.scalars(select(Call).where(Call.site == lost,
                                                        Call.status == "active")))
    for call in open_calls:
        with transaction(factory) as db:
            claimed: Any = db.execute(
                update(Call).where(Call.id == call.id, Call.status == "active")
                .values(status="ended", ended_at=at, outcome=LOST_OUTCOME))
            if not claimed.rowcount:
                continue  # another site took it, or it ended meanwhile
            closed += 1
            number = call.caller or ""
            listed_here = call.channel == "phone" and bool(NUMBER.fullmatch(number))
            store.insert_event(db, call.id, "site_lost", at,
                               {"site": lost, "by": by, "callback": listed_here})
            store.insert_event(db, call.id, "ended", at,
                               {"cause": None, "cause_txt": "site lost"})
            if not listed_here:
                continue
            service = settings.service(call.service_id) if call.service_id else None
            queue = call.queue or (service.queue if service else "")
            if not queue:
                continue
            db.add(Callback(call_id=call.id, tenant_id=call.tenant_id,
                            service_id=call.service_id or "", queue=queue, number=number,
                            position=1, status="pending", attempts=0,
                            max_attempts=service.callback_max_attempts if service else 3,
                            requested_at=at, next_attempt_at=at, reason=LOST_OUTCOME,
                            site=by))
            listed += 1
    with transaction(factory) as db:
        moved: Any = db.execute(
            update(Callback).where(Callback.site == lost,
                                   Callback.status.in_(OPEN_CALLBACKS))
            .values(site=by, status="pending", next_attempt_at=at, placeholder=None))
        listed += moved.rowcount or 0
    return closed, listed
