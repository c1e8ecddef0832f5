"""Random input on every console form and JSON route, as each console role: no 500.

The general fuzz pass (test_fuzz.py) signs in as an administrator, who is refused by the
console routes before any input is read; here an operator, a staff member and a
supervisor who may use the routes post random forms, JSON and bytes, with the CSRF
token, against a real call they are allowed to see. ``TESTING`` propagates exceptions.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import MakeUser, csrf, login
from tests.web.test_console import add_call, add_transfer

CONSOLE = ("operator.", "staff.", "supervisor.", "cases.", "sse.")
FIELDS = ["action", "reason", "paused", "text", "notes", "disposition", "faq_items", "kind",
          "target", "note", "mode", "q", "partial", "csrf_token"]
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
tricky = st.sampled_from(["", " ", "\x00", "login", "pause", "ready", "logout", "break",
                          "after_call_work", "resolved_faq", "other", "attended", "blind",
                          "2001", "koseki", "3001", "listen", "barge", "1, 2, 3", "1、2",
                          "9" * 12, "-1", "あ" * 2100, "<script>", "😀", "1"])
value = st.one_of(text, tricky, st.lists(st.one_of(text, tricky), max_size=3))
form = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text.filter(bool)), value,
                       max_size=6)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), text),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), inner,
                                            max_size=4)),
    max_leaves=10)
FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _routes(app: Flask, method: str, call_id: str) -> list[str]:
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(CONSOLE) or method not in (rule.methods or ()):
            continue
        if rule.endpoint == "sse.stream":  # a stream never ends by itself; tested apart
            continue
        out.append(rule.rule.replace("<call_id>", call_id))
    return sorted(out)


@pytest.fixture
def clients(app: Flask, make_user: MakeUser) -> list[tuple[FlaskClient, str]]:
    app.config["FAQ_ENCODER"] = "none"
    make_user("op1", {"operator"}, sip_endpoint="op01")
    make_user("staff1", {"staff"}, extension="2001")
    make_user("sup1", {"supervisor"})
    add_call(app, "c1")
    add_transfer(app, "c1")
    out = []
    for name in ("op1", "staff1", "sup1"):
        client = app.test_client()
        assert login(client, name).status_code == 302
        out.append((client, csrf(client, "/auth/account")))
    return out


def _check(resp: Any) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    resp.close()


def test_route_lists_cover_the_console(app: Flask,
                                       clients: list[tuple[FlaskClient, str]]) -> None:
    posts = _routes(app, "POST", "c1")
    assert "/operator/calls/c1/wrapup" in posts and "/supervisor/calls/c1/listen" in posts
    assert "/staff/calls/c1/outcome" in posts and "/calls/c1/notes" in posts
    assert "/operator/faq" in _routes(app, "GET", "c1")


@FUZZ
@given(data=st.data())
def test_random_console_forms(app: Flask, clients: list[tuple[FlaskClient, str]],
                              data: st.DataObject) -> None:
    client, token = data.draw(st.sampled_from(clients))
    call_id = data.draw(st.sampled_from(["c1", "c1", "nope", "%00", "x" * 70]))
    path = data.draw(st.sampled_from(_routes(app, "POST", call_id)))
    fields = data.draw(form)
    fields["csrf_token"] = token
    headers = {"X-Requested-With": "fetch"} if data.draw(st.booleans()) else {}
    _check(client.post(path, data=fields, headers=headers))


@FUZZ
@given(data=st.data())
def test_random_console_json_and_bytes(app: Flask, clients: list[tuple[FlaskClient, str]],
                                       data: st.DataObject) -> None:
    client, token = data.draw(st.sampled_from(clients))
    path = data.draw(st.sampled_from(_routes(app, "POST", "c1")))
    headers = {"X-CSRF-Token": token}
    _check(client.post(path, json=data.draw(json_value), headers=headers))
    kind = data.draw(st.sampled_from(["application/x-www-form-urlencoded",
                                      "multipart/form-data; boundary=x", "application/json",
                                      "text/plain"]))
    _check(client.post(path, data=data.draw(st.binary(max_size=200)), content_type=kind,
                       headers=headers))


@FUZZ
@given(data=st.data())
def test_random_console_queries(app: Flask, clients: list[tuple[FlaskClient, str]],
                                data: st.DataObject) -> None:
    client, _token = data.draw(st.sampled_from(clients))
    path = data.draw(st.sampled_from(_routes(app, "GET", "c1")))
    params = data.draw(st.dictionaries(st.sampled_from(["q", "partial", "lang", "last_id"]),
                                       st.one_of(text, tricky), max_size=3))
    _check(client.get(path, query_string=params))
