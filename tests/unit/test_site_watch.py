"""ari_app.sites on real Redis and SQL: the site states a controller publishes, and the
takeover of a lost site's cut calls (each claimed once, phone callers with a number listed
first in line, the lost site's callbacks moved). The edge's answers are given by a stub
here; tests/integration/test_sites.py runs the same against a real Kamailio."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import redis
from redis import asyncio as aioredis
from sqlalchemy import select

from ari_app.sites import SiteWatch, combine, take_over
from ari_app.timeline import NewCall, TimelineStore
from common.db import init_schema, make_engine, session_factory
from common.edge import EdgeUnreachable, SiteRoute
from common.events import Event
from common.health import write_heartbeat
from common.keys import Keys
from common.models import Call, Callback
from common.settings import Settings, Site

SITES = (Site(id="a", name="本庁舎", sip="127.0.0.11:5060", web="http://127.0.0.11/",
              priority=20, redis_prefix="t-site-a"),
         Site(id="b", name="北支所", sip="127.0.0.12:5060", web="http://127.0.0.12/",
              priority=10, redis_prefix="t-site-b"))


@pytest.fixture
def two_sites(settings: Settings) -> Iterator[Settings]:
    s = dataclasses.replace(settings, sites=SITES,
                            site=dataclasses.replace(settings.site, id="b"),
                            redis=dataclasses.replace(settings.redis, prefix="t-site-b"),
                            edge=dataclasses.replace(settings.edge, takeover_seconds=0.0))
    client = redis.Redis.from_url(s.redis.url)
    for key in client.scan_iter("t-site-*"):
        client.delete(key)
    yield s
    for key in client.scan_iter("t-site-*"):
        client.delete(key)
    client.close()


def _store(s: Settings, site: str) -> tuple[TimelineStore, object]:
    engine = make_engine(s.database_url)
    init_schema(engine)
    return TimelineStore(session_factory(engine), site), engine


def _arrive(store: TimelineStore, call_id: str, caller: str, channel: str = "phone") -> None:
    store.call_arrived(NewCall(call_id, "city", "citizens", channel, "0312345678", caller,
                               "", datetime.now(UTC)), {})


def test_combine() -> None:
    assert combine("up", "up") == "up"
    assert combine("down", "up") == "down" and combine("up", "down") == "down"
    assert combine("unreachable", "up") == "unknown"


def test_take_over_claims_each_call_once(two_sites: Settings) -> None:
    store_a, engine = _store(two_sites, "a")
    store_b = TimelineStore(store_a._factory, "b")
    _arrive(store_a, "a-1.1", "0311112222")  # talking or waiting at A
    _arrive(store_a, "a-1.2", "anonymous")  # no number to call back
    _arrive(store_a, "a-1.3", "kiosk-01", channel="kiosk")
    _arrive(store_b, "b-1.1", "0311113333")  # B's own call: never touched
    assert store_b.active_call_ids() == ["b-1.1"], "a site reconciles only its own calls"
    factory = store_a._factory
    with factory() as db, db.begin():
        db.add(Callback(call_id="a-0.9", tenant_id="city", service_id="citizens",
                        queue="citizens", number="0311114444", position=3, status="placed",
                        attempts=0, max_attempts=3, requested_at=datetime.now(UTC),
                        placeholder="cb-1-1", site="a"))
    now = datetime.now(UTC)
    closed, listed = take_over(factory, store_b, two_sites, "a", "b", now)
    assert (closed, listed) == (3, 2)
    assert take_over(factory, store_b, two_sites, "a", "b", now) == (0, 0), "claimed twice"
    with factory() as db:
        calls = {c.id: c for c in db.scalars(select(Call))}
        callbacks = {cb.call_id: cb for cb in db.scalars(select(Callback))}
    assert {cid for cid, c in calls.items() if c.outcome == "site_lost"} == \
        {"a-1.1", "a-1.2", "a-1.3"}
    assert calls["b-1.1"].status == "active"
    cut = callbacks["a-1.1"]
    assert (cut.reason, cut.site, cut.position, cut.status, cut.number) == \
        ("site_lost", "b", 1, "pending", "0311112222")
    moved = callbacks["a-0.9"]
    assert (moved.site, moved.status, moved.placeholder) == ("b", "pending", None)
    engine.dispose()  # type: ignore[attr-defined]


def test_watch_publishes_states_and_takes_over(two_sites: Settings) -> None:
    store_a, engine = _store(two_sites, "a")
    _arrive(store_a, "a-2.1", "0311115555")
    store_b = TimelineStore(store_a._factory, "b")
    published: list[Event] = []
    edge = {"a": "up", "b": "up"}

    async def fetch(_s: Settings, _c: httpx.AsyncClient) -> dict[str, SiteRoute]:
        if edge.get("gone"):
            raise EdgeUnreachable("no answer")
        return {sid: SiteRoute(site_id=sid, uri="", priority=0, state=st, flags="")
                for sid, st in edge.items()}

    async def publish(event: Event) -> None:
        published.append(event)

    sync = redis.Redis.from_url(two_sites.redis.url)

    def beat(prefix: str) -> None:
        write_heartbeat(sync, Keys(prefix), "ari_app", "x", {"ari": "up", "ami": "up"}, 6)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(two_sites.redis.url)
        watch = SiteWatch(two_sites, client, Keys("t-site-b"), publish, store_a._factory,
                          store_b, fetch=fetch)
        async with httpx.AsyncClient() as http:
            beat("t-site-a")
            beat("t-site-b")
            await watch.check(http)
            assert {e.site: e.state for e in published} == {"a": "up", "b": "up"}  # type: ignore[attr-defined]
            stored = json.loads(sync.hget("t-site-b:sites", "a") or b"{}")
            assert stored["state"] == "up" and stored["serving"] is True
            published.clear()
            first = float(sync.hget("t-site-b:sites", "_checked") or 0)
            await asyncio.sleep(0.01)
            await watch.check(http)
            assert published == [], "nothing changed, nothing published"
            assert float(sync.hget("t-site-b:sites", "_checked") or 0) > first, \
                "an unchanged round must still say the states are current"

            edge["a"] = "down"  # A killed: the edge marks it down, its beat goes away
            sync.delete(*sync.keys("t-site-a:health:*"))
            await watch.check(http)
            kinds = [e.type for e in published]
            assert "site.state" in kinds and "site.takeover" in kinds
            assert sync.hget("t-site-b:sites", "_serving") == b"b"

            edge["gone"] = "1"  # the edge stops answering: unknown, never "up"
            await watch.check(http)
            stored = json.loads(sync.hget("t-site-b:sites", "a") or b"{}")
            assert stored["edge"] == "unreachable" and stored["state"] == "down"
            assert json.loads(sync.hget("t-site-b:sites", "b") or b"{}")["state"] == "unknown"
        await client.aclose()

    asyncio.run(scenario())
    with store_a._factory() as db:
        assert db.get(Call, "a-2.1").outcome == "site_lost"  # type: ignore[union-attr]
    sync.close()
    engine.dispose()  # type: ignore[attr-defined]
