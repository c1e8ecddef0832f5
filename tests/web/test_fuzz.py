"""Random input on every form and JSON route: the app answers, it never fails (no 500).

A logged-in administrator (valid CSRF token) and an anonymous client send random form
fields, random JSON bodies, raw bytes and random query strings to every route in the
URL map. ``TESTING`` propagates exceptions, so any unhandled error fails the test.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from common.models.accounts import User
from tests.web.conftest import MakeUser, csrf, login
from web.db import resources

FIELDS = ["username", "password", "display_name", "roles", "sip_endpoint", "extension",
          "code", "current_password", "new_password", "new_password2", "session", "next",
          "lang", "csrf_token"]
SKIP = {"static", "auth.logout"}  # logout is covered elsewhere; it would end the run's session

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)
tricky = st.sampled_from(["", " ", "\x00", "admin", "op01", "2001", "operator", "staff",
                          "administrator", "1" * 70, "../../etc", "<script>", "ｱｲｳ", "😀",
                          "-1", "0", "2026-02-30", "%00", "\\\\x", "//evil.invalid"])
value = st.one_of(text, tricky, st.lists(st.one_of(text, tricky), max_size=3))
form = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text.filter(bool)), value,
                       max_size=8)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(text, inner, max_size=4)),
    max_leaves=12)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _routes(app: Flask, user_id: int, method: str) -> list[str]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP or method not in (rule.methods or ()):
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<int:{arg}>", str(user_id)).replace(f"<{arg}>", "city")
        out.append(path)
    return sorted(out)


class Session:
    """An administrator's browser that logs in again when the fuzzing ended its session."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.token = ""
        self.relogin()

    def relogin(self) -> None:
        res = resources(self.app)
        with res.factory() as db:
            db.execute(update(User).where(User.username == "admin")
                       .values(locked_until=None, failed_logins=0, must_change_password=False,
                               active=True))
            db.commit()
        client = redis.Redis.from_url(res.settings.redis.url)
        for key in client.scan_iter(match="mado:login_fail:*"):
            client.delete(key)
        client.close()
        self.client = self.app.test_client()
        assert login(self.client, "admin").status_code == 302
        self.token = csrf(self.client)

    def ensure(self) -> FlaskClient:
        if self.client.get("/auth/account").status_code != 200:
            self.relogin()
        return self.client


def _check(resp: Any, path: str = "") -> None:
    healthy_503 = path.startswith("/health") and resp.status_code == 503  # no ari_app here
    assert resp.status_code < 500 or healthy_503, resp.get_data(as_text=True)[:500]
    resp.close()


@pytest.fixture
def fuzz_setup(app: Flask, make_user: MakeUser) -> tuple[Session, list[str], list[str]]:
    make_user("admin", {"administrator"})
    target = make_user("target", {"operator"})
    return (Session(app), _routes(app, target.id, "POST"), _routes(app, target.id, "GET"))


def test_route_lists_cover_the_forms(fuzz_setup: tuple[Session, list[str], list[str]]) -> None:
    _session, posts, gets = fuzz_setup
    assert "/auth/login" in posts and "/admin/users/new" in posts and "/health.json" in gets
    assert any(p.endswith("/sessions/end") for p in posts)


@FUZZ
@given(data=st.data())
def test_random_forms(fuzz_setup: tuple[Session, list[str], list[str]], app: Flask,
                      data: st.DataObject) -> None:
    session, posts, _gets = fuzz_setup
    path = data.draw(st.sampled_from(posts))
    fields = data.draw(form)
    client = session.ensure()
    if data.draw(st.booleans()):
        fields["csrf_token"] = session.token
    _check(client.post(path, data=fields))
    _check(app.test_client().post(path, data=fields))  # anonymous


@FUZZ
@given(data=st.data())
def test_random_json_and_bytes(fuzz_setup: tuple[Session, list[str], list[str]],
                               data: st.DataObject) -> None:
    session, posts, _gets = fuzz_setup
    path = data.draw(st.sampled_from(posts))
    client = session.ensure()
    headers = {"X-CSRF-Token": session.token} if data.draw(st.booleans()) else {}
    _check(client.post(path, json=data.draw(json_value), headers=headers))
    raw = data.draw(st.binary(max_size=200))
    kind = data.draw(st.sampled_from(["application/x-www-form-urlencoded",
                                      "multipart/form-data; boundary=x", "application/json",
                                      "text/plain"]))
    _check(client.post(path, data=raw, content_type=kind, headers=headers))


@FUZZ
@given(data=st.data())
def test_random_query_strings(fuzz_setup: tuple[Session, list[str], list[str]],
                              data: st.DataObject) -> None:
    session, _posts, gets = fuzz_setup
    path = data.draw(st.sampled_from(gets))
    params = data.draw(st.dictionaries(
        st.one_of(st.sampled_from(["actor", "action", "object_type", "object_id", "outcome",
                                   "since", "until", "page", "lang", "next"]), text),
        st.one_of(text, tricky), max_size=6))
    client = session.ensure()
    _check(client.get(path, query_string=params), path)
