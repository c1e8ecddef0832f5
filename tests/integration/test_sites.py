"""The two-site form for real (docs/sites.md): Kamailio's edge in front of two sites,
each a real Asterisk 22 with its own ari_app on its own loopback address, sharing one
Redis and one SQLite database; SIPp as the carrier's callers and as the operators'
phones at both sites. A site is lost by SIGKILL of its Asterisk and ari_app.

One edge and two sites serve the whole module (they take ~15 s to start); the tests run
in order: routing while both are up, the loss of site A, then its failback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from common.db import make_engine, session_factory
from common.edge import fetch_routes
from common.models import Call, Callback, CallEvent
from common.models.accounts import AuditEntry
from stack.loopback import wait_until
from stack.sites import SitesStack
from web import create_app
from web.accounts import create_user, make_hasher
from web.db import resources

pytestmark = [pytest.mark.asterisk]

SITE_FILE = Path(__file__).resolve().parent / "site-test.toml"
DID = "0312345678"
QUEUE = "citizens"
FAST_ARGON2 = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
PASSWORD = "correct horse battery staple"
FAILBACK_SECONDS = 4


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SitesStack]:
    stack = SitesStack(SITE_FILE, tmp_path_factory.mktemp("sites"),
                       edge_overrides={"failback_seconds": FAILBACK_SECONDS,
                                       "takeover_seconds": 1.0})
    stack.start()
    try:
        stack.carrier_up()  # the cut callers, called back from B through the edge
        stack.phones_up("a", ["op01"])
        stack.login("a", ["op01"], QUEUE)
        stack.phones_up("b", ["op01", "op02"])
        stack.login("b", ["op01", "op02"], QUEUE)
        yield stack
    finally:
        stack.close()


def _calls(stack: SitesStack) -> dict[str, Call]:
    engine = make_engine(stack.database_url)
    try:
        with session_factory(engine)() as db:
            return {c.caller: c for c in db.scalars(select(Call))}
    finally:
        engine.dispose()


def _callbacks(stack: SitesStack) -> list[Callback]:
    engine = make_engine(stack.database_url)
    try:
        with session_factory(engine)() as db:
            return list(db.scalars(select(Callback)))
    finally:
        engine.dispose()


def _kinds(stack: SitesStack, call_id: str) -> list[str]:
    engine = make_engine(stack.database_url)
    try:
        with session_factory(engine)() as db:
            return list(db.scalars(select(CallEvent.kind).where(CallEvent.call_id == call_id)
                                   .order_by(CallEvent.at, CallEvent.id)))
    finally:
        engine.dispose()


def _answered_at(stack: SitesStack, caller: str, site: str, timeout: float = 30) -> Call:
    """Wait until ``caller``'s call is connected to an operator; it must be at ``site``."""
    call = wait_until(lambda: (c := _calls(stack).get(caller)) is not None
                      and c.agent_connected_at is not None and c, timeout,
                      f"the call of {caller} was not answered by an operator")
    assert call.site == site, f"{caller} was answered at site {call.site}, not {site}"
    return call


def _state(stack: SitesStack, site: str) -> str:
    return fetch_routes(stack.edge.settings)[site].state  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def web_b(sites: SitesStack) -> Iterator[Flask]:
    """Site B's web application (its settings: its Redis prefix, the shared database)."""
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2},
                     settings=sites.sites["b"].settings)
    with app.app_context():
        res = resources(app)
        with res.factory() as db:
            for name, role in (("sv-b", "supervisor"), ("admin-b", "administrator")):
                create_user(db, username=name, tenant_id="city", roles={role},
                            password=PASSWORD, hasher=make_hasher(FAST_ARGON2),
                            settings=res.settings, must_change_password=False)
            db.commit()
    yield app
    res = resources(app)
    res.session.remove()
    res.engine.dispose()
    res.redis.close()


def _client(app: Flask, username: str = "sv-b") -> FlaskClient:
    client = app.test_client()
    client.post("/auth/login", data={"username": username, "password": PASSWORD,
                                     "csrf_token": _token(client, "/auth/login")})
    return client


def _token(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return page.split('name="csrf_token" value="', 1)[1].split('"')[0]


def _page(app: Flask, path: str) -> str:
    return _client(app).get(path).get_data(as_text=True)


def test_new_calls_go_to_the_first_site_by_priority(sites: SitesStack) -> None:
    caller = sites.call("first", [(DID, "0311110001")], hold_ms=1000)
    call = _answered_at(sites, "0311110001", "a")
    assert call.id.startswith("a-"), "site A's calls carry its id (asterisk systemname)"
    assert caller.wait(60) == 0
    wait_until(lambda: _calls(sites)["0311110001"].status == "ended", 20,
               "the call did not end on the timeline")
    assert _state(sites, "a") == "up" and _state(sites, "b") == "up"


def test_operators_see_which_site_serves(sites: SitesStack, web_b: Flask) -> None:
    wait_until(lambda: "新しい通話の受付先：本庁舎" in _page(web_b, "/"), 15,
               "site B's pages do not name the serving site")
    page = _page(web_b, "/")
    assert "この拠点：北支所" in page
    assert 'data-site="a" data-state="up"' in page and 'data-site="b" data-state="up"' in page
    assert "停止しました" not in page


def test_losing_site_a(sites: SitesStack, web_b: Flask) -> None:
    """Site A is killed with a call talking and one waiting: a call arriving at once is
    re-routed to B, the edge marks A down, and A's two callers are listed at B as cut
    calls, first in line."""
    talking = sites.call("talking", [(DID, "0311110002")], hold_ms=120000)
    _answered_at(sites, "0311110002", "a")
    waiting = sites.call("waiting", [(DID, "0311110003")], hold_ms=120000)
    wait_until(lambda: (c := _calls(sites).get("0311110003")) is not None
               and c.queued_at is not None, 20, "the second caller did not queue at A")

    sites.kill_site("a")
    assert _state(sites, "a") == "up", "the edge cannot have noticed yet"
    during = sites.call("during", [(DID, "0311110004")], hold_ms=1000)
    _answered_at(sites, "0311110004", "b")
    assert during.wait(60) == 0, "the call placed during detection failed"
    wait_until(lambda: _state(sites, "a") == "down", 15, "the edge did not mark A down")
    after = sites.call("after", [(DID, "0311110005")], hold_ms=1000)
    _answered_at(sites, "0311110005", "b")
    assert after.wait(60) == 0

    def cut_listed() -> list[Callback]:
        rows = [cb for cb in _callbacks(sites) if cb.reason == "site_lost"]
        return rows if len(rows) == 2 else []

    cut = wait_until(cut_listed, 20, "A's cut calls were not listed as callbacks at B")
    assert {cb.number for cb in cut} == {"0311110002", "0311110003"}
    assert all(cb.site == "b" and cb.position == 1 for cb in cut)
    calls = _calls(sites)
    for number in ("0311110002", "0311110003"):
        assert calls[number].status == "ended" and calls[number].outcome == "site_lost"
        assert "site_lost" in _kinds(sites, calls[number].id)

    page = _page(web_b, "/supervisor/callbacks")
    assert page.count("切断された通話") >= 2
    first_rows = page.split("<tbody>", 1)[1].split("</tr>")[:2]
    assert all('data-reason="site_lost"' in row for row in first_rows), \
        "the cut calls are not first in the list"
    wait_until(lambda: "本庁舎が停止しました" in _page(web_b, "/"), 15,
               "site B shows no banner for the loss of A")
    for proc in (talking, waiting):  # the cut callers' SIPp: their calls are gone
        proc.kill()
        proc.wait(10)
    # B's operators call them back, through the edge to the carrier
    wait_until(lambda: all(cb.status == "completed" for cb in _callbacks(sites)
                           if cb.reason == "site_lost"), 60,
               "B did not call the cut callers back")


def test_an_administrator_gives_a_site_calls_again(sites: SitesStack, web_b: Flask) -> None:
    """The sites page shows what the edge sees; an administrator's failback reaches the
    edge at once and is audited -- and a site that still does not answer is marked down
    again by the probes."""
    page = _page(web_b, "/sites/")
    assert 'data-site="a" data-edge="down"' in page and "受付停止中" in page
    assert "振り分けを再開する" not in page, "only administrators change the routing"
    admin = _client(web_b, "admin-b")
    assert "振り分けを再開する" in admin.get("/sites/").get_data(as_text=True)
    reply = admin.post("/sites/a/failback", data={"csrf_token": _token(admin, "/sites/")})
    assert reply.status_code == 302
    assert _state(sites, "a") == "up", "the edge did not take the administrator's failback"
    wait_until(lambda: _state(sites, "a") == "down", 15,
               "the edge did not mark the still dead A down again")
    engine = make_engine(sites.database_url)
    try:
        with session_factory(engine)() as db:
            rows = list(db.scalars(select(AuditEntry).where(AuditEntry.action == "site.failback")))
    finally:
        engine.dispose()
    assert [(r.object_id, r.outcome, r.actor) for r in rows] == [("a", "ok", "admin-b")]
    supervisor = _client(web_b)
    assert supervisor.post("/sites/a/failback", data={
        "csrf_token": _token(supervisor, "/sites/")}).status_code == 403, \
        "a supervisor must not change the routing"
    assert _state(sites, "a") == "down"


def test_failback_only_after_the_site_stayed_healthy(sites: SitesStack) -> None:
    """A revived site A answers probes at once, but takes calls again only after
    ``edge.failback_seconds`` of answers (never flapping)."""
    sites.revive_site("a")  # returns once A's controller is connected again
    revived_at = time.monotonic()
    assert _state(sites, "a") == "down", "A took calls again before its failback time"
    wait_until(lambda: _state(sites, "a") == "up", FAILBACK_SECONDS + 10,
               "A did not come back after its failback time")
    # (A answered its first probes while its controller was connecting: up to ~2 s)
    assert time.monotonic() - revived_at >= FAILBACK_SECONDS - 2
    sites.phones_up("a", ["op02"])
    sites.login("a", ["op02"], QUEUE)
    back = sites.call("back", [(DID, "0311110006")], hold_ms=1000)
    _answered_at(sites, "0311110006", "a")
    assert back.wait(60) == 0
