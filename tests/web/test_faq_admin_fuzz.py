"""Random input on the FAQ pages with real item ids and the pages' own field names.

``tests/web/test_fuzz.py`` already reaches these routes through the URL map (as an
administrator, with ids that rarely exist); this pass posts as a user who may both edit
and approve, to items that exist, with the form fields the pages read. No input may give
a 500 (``TESTING`` propagates exceptions).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faq import services
from faq.content import Actor, Content
from tests.web.conftest import MakeUser, csrf, login
from web.db import resources

FIELDS = ["title", "body", "category", "department", "procedures", "keywords", "channels",
          "manual_type", "reason", "requested_by_city", "shared", "kind", "version",
          "comment", "publish", "next", "section_heading", "section_body"]
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
tricky = st.sampled_from(["", " ", "\x00", "1", "2", "-1", "99999999999999999999", "both",
                          "kiosk", "fax", "operation", "manual", "faq", "queue", "<script>",
                          "[x](javascript:alert(1))", "[x](https://a.example)", "ｱ", "😀",
                          "あ" * 600])
value = st.one_of(text, tricky, st.lists(st.one_of(text, tricky), max_size=3))
form = st.dictionaries(st.sampled_from(FIELDS), value, max_size=9)
FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
ACTIONS = ["submit", "withdraw", "discard", "approve", "return", "publish", "edit"]


@pytest.fixture
def setup(app: Flask, make_user: MakeUser) -> tuple[FlaskClient, str, list[int]]:
    make_user("both", {"supervisor", "approver"}, sip_endpoint=None)
    client = app.test_client()
    assert login(client, "both").status_code == 302
    editor = Actor("other", frozenset({"supervisor"}), "city")
    ids = []
    with resources(app).factory() as db:
        for n in range(3):
            change = services.create_item(db, editor, Content.make(f"質問{n}", f"回答{n}"))
            ids.append(change.item.id)
        services.submit(db, editor, ids[1], expected_version=1)
        db.commit()
    return client, csrf(client, "/auth/account"), ids


@FUZZ
@given(data=st.data())
def test_random_workflow_posts(setup: tuple[FlaskClient, str, list[int]],
                               data: st.DataObject) -> None:
    client, token, ids = setup
    item_id = data.draw(st.sampled_from([*ids, 0, 999999]))
    action = data.draw(st.sampled_from(ACTIONS))
    fields: dict[str, Any] = data.draw(form)
    fields["csrf_token"] = token
    resp = client.post(f"/faq-admin/{item_id}/{action}", data=fields)
    assert resp.status_code < 500
    resp = client.post("/faq-admin/new", data=fields)
    assert resp.status_code < 500


@FUZZ
@given(data=st.data())
def test_random_uploads_and_queries(setup: tuple[FlaskClient, str, list[int]],
                                   data: st.DataObject) -> None:
    client, token, _ids = setup
    name = data.draw(st.sampled_from(["a.csv", "a.xlsx", "a.txt", "a", ""]))
    body = data.draw(st.one_of(st.binary(max_size=300),
                               text.map(lambda t: ("\ufeff質問,回答\r\n" + t).encode())))
    resp = client.post("/faq-admin/import", data={"csrf_token": token,
                                                  "file": (io.BytesIO(body), name)},
                       content_type="multipart/form-data")
    assert resp.status_code < 500
    params = data.draw(st.dictionaries(
        st.sampled_from(["kind", "status", "category", "department", "channel", "q",
                         "format", "scope", "lang"]), st.one_of(text, tricky), max_size=5))
    for path in ("/faq-admin/", "/faq-admin/export", "/faq-admin/new"):
        assert client.get(path, query_string=params).status_code < 500
