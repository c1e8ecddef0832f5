"""The two-site form's bar on every page (web/sites.py): it shows what this site's
controller last wrote to ``Keys.sites`` (real Redis), says "unknown" when that is stale
or missing, and is absent in the single-site form."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from common.keys import Keys
from common.settings import Settings, Site
from tests.web.conftest import FAST_ARGON2, MakeUser, login
from web import create_app
from web.db import resources

SITES = (Site(id="a", name="本庁舎", name_en="City hall", sip="127.0.0.11:5060",
              web="http://127.0.0.11:8000/", priority=20),
         Site(id="b", name="北支所", name_en="North branch", sip="127.0.0.12:5060",
              web="http://127.0.0.12:8000/", priority=10))


@pytest.fixture
def site_b_app(web_settings: Settings) -> Iterator[Flask]:
    settings = dataclasses.replace(web_settings, sites=SITES,
                                   site=dataclasses.replace(web_settings.site, id="b"))
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2}, settings=settings)
    yield app
    res = resources(app)
    res.session.remove()
    res.engine.dispose()
    res.redis.close()


def _write(settings: Settings, states: dict[str, str], serving: str,
           checked: float | None = None) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    key = Keys(settings.redis.prefix).sites
    client.delete(key)
    client.hset(key, mapping={
        **{sid: json.dumps({"site": sid, "state": st, "serving": sid == serving})
           for sid, st in states.items()},
        "_serving": serving, "_checked": f"{checked if checked is not None else time.time()}"})
    client.close()


def _home(app: Flask, make_user: MakeUser) -> str:
    make_user("op-b", {"operator"})
    client: FlaskClient = app.test_client()
    login(client, "op-b")
    return client.get("/").get_data(as_text=True)


def test_both_up(site_b_app: Flask, make_user: MakeUser, web_settings: Settings) -> None:
    _write(web_settings, {"a": "up", "b": "up"}, "a")
    page = _home(site_b_app, make_user)
    assert "この拠点：北支所" in page and "新しい通話の受付先：本庁舎" in page
    assert 'data-site="a" data-state="up"' in page
    assert 'role="alert"' not in page.split('id="site-bar"', 1)[1].split("</div>", 1)[0]


def test_calls_arrive_here_after_the_first_site_is_lost(
        site_b_app: Flask, make_user: MakeUser, web_settings: Settings) -> None:
    _write(web_settings, {"a": "down", "b": "up"}, "b")
    page = _home(site_b_app, make_user)
    assert 'class="site-bar bad"' in page
    assert "本庁舎が停止しました。新しい通話はこの拠点（北支所）に届いています。" in page
    assert 'data-site="a" data-state="down"' in page and "停止" in page


def test_stale_state_is_unknown_not_repeated(
        site_b_app: Flask, make_user: MakeUser, web_settings: Settings) -> None:
    _write(web_settings, {"a": "up", "b": "up"}, "a", checked=time.time() - 60)
    page = _home(site_b_app, make_user)
    assert "拠点の状態が不明です" in page
    assert 'data-state="up"' not in page
    assert "新しい通話の受付先" not in page


def test_no_bar_in_the_single_site_form(app: Flask, make_user: MakeUser) -> None:
    page = _home(app, make_user)
    assert 'id="site-bar"' not in page
    client = app.test_client()
    login(client, "op-b")
    assert client.get("/sites/bar").status_code == 404


def test_health_page_shows_the_sites_without_failing_on_another_site(
        site_b_app: Flask, web_settings: Settings) -> None:
    client = site_b_app.test_client()
    _write(web_settings, {"a": "down", "b": "up"}, "b")
    sites = client.get("/health.json").get_json()["components"]["sites"]
    assert sites["ok"] is False and "a down" in sites["detail"]
    assert "new calls go to b" in sites["detail"]
    page = client.get("/health").get_data(as_text=True)
    assert "拠点と振り分け装置" in page
    _write(web_settings, {"a": "up", "b": "up"}, "a", checked=time.time() - 60)
    sites = client.get("/health.json").get_json()["components"]["sites"]
    assert sites["ok"] is False and sites["detail"].startswith("unknown")
    _write(web_settings, {"a": "up", "b": "up"}, "a")
    assert client.get("/health.json").get_json()["components"]["sites"]["ok"] is True
