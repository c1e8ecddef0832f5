"""The callback list of the console (operator panel, supervisor page) and cancelling.

Callback rows are inserted directly, as the controller writes them; SQLite and
PostgreSQL through the fixtures, real Redis.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from common.models.accounts import User
from common.models.callbacks import Callback
from common.models.calls import CallEvent
from tests.web.conftest import MakeUser, audit_rows, csrf
from tests.web.test_console import FETCH, add_call, signed_in
from web.db import resources

NUMBER = "09087654321"
MASKED = "090****4321"


def add_callback(app: Flask, call_id: str = "c1", *, status: str = "pending",
                 tenant: str = "city", service: str = "citizens", number: str = NUMBER,
                 position: int = 3, attempts: int = 0, agent: str | None = None,
                 ago: timedelta = timedelta(minutes=5), last_result: str | None = None,
                 completed_ago: timedelta | None = None) -> int:
    now = datetime.now(UTC)
    with resources(app).factory() as db:
        row = Callback(call_id=call_id, tenant_id=tenant, service_id=service,
                       queue="citizens", number=number, position=position, status=status,
                       attempts=attempts, max_attempts=3, requested_at=now - ago,
                       next_attempt_at=now + timedelta(minutes=2) if status == "pending"
                       else None,
                       completed_at=now - completed_ago if completed_ago is not None
                       else None,
                       agent=agent, last_result=last_result,
                       placeholder="cb-1-1" if status == "placed" else None)
        db.add(row)
        db.commit()
        return row.id


def status_of(app: Flask, callback_id: int) -> tuple[str, str | None]:
    with resources(app).factory() as db:
        row = db.get(Callback, callback_id)
        assert row is not None
        return row.status, row.last_result


@pytest.fixture
def people(make_user: MakeUser) -> dict[str, User]:
    return {
        "op": make_user("op1", {"operator"}, sip_endpoint="op01"),
        "op2": make_user("op2", {"operator"}, sip_endpoint="op02"),
        "staff": make_user("staff1", {"staff"}, extension="2001"),
        "sup": make_user("sup1", {"supervisor"}),
        "admin": make_user("admin", {"administrator"}),
        "townop": make_user("townop", {"operator"}, tenant_id="town", sip_endpoint="op04"),
    }


def token(client: FlaskClient) -> str:
    return csrf(client, "/auth/account")


def listed(page: str, call_id: str) -> bool:
    """Whether the list has a row for the call: its id as the text of the call cell. A
    bare substring test of a short id also matches inside the page's random CSRF tokens
    (a 2-character id does in about 1 page in 100)."""
    return f">{call_id}</a>" in page or f">{call_id}</span>" in page


# ------------------------------------------------------------------ roles, tenants


@pytest.mark.parametrize("path", ["/operator/callbacks", "/operator/callbacks?partial=1",
                                  "/supervisor/callbacks", "/supervisor/callbacks?partial=1"])
def test_only_operators_and_supervisors_see_the_list(app: Flask, people: dict[str, User],
                                                     path: str) -> None:
    add_callback(app)
    allowed = "op1" if path.startswith("/operator") else "sup1"
    assert signed_in(app, allowed).get(path).status_code == 200
    for other in ("op1", "staff1", "sup1", "admin"):
        if other != allowed:
            assert signed_in(app, other).get(path).status_code == 403, (path, other)
    assert app.test_client().get(path).status_code in (302, 401)


def test_list_shows_the_own_tenant_open_first_with_japanese_labels(
        app: Flask, people: dict[str, User]) -> None:
    old_open = add_callback(app, "c-old", status="placed", ago=timedelta(minutes=50))
    new_open = add_callback(app, "c-new", status="pending", ago=timedelta(minutes=1),
                            attempts=1, last_result="busy")
    done = add_callback(app, "c-done", status="completed", ago=timedelta(minutes=30),
                        attempts=1, last_result="answered", completed_ago=timedelta(0))
    failed = add_callback(app, "c-fail", status="failed", ago=timedelta(minutes=40),
                          attempts=3, last_result="no_answer", completed_ago=timedelta(0))
    add_callback(app, "c-conn", status="connecting", ago=timedelta(minutes=20), attempts=1)
    add_callback(app, "c-yesterday", status="completed", ago=timedelta(days=2),
                 completed_ago=timedelta(days=2))
    add_callback(app, "t1", tenant="town", number="0611112222")
    page = signed_in(app, "sup1").get("/supervisor/callbacks?partial=1").get_data(
        as_text=True)
    order = [page.index(f'data-callback="{i}"') for i in (old_open, new_open, done, failed)]
    assert order == sorted(order)  # open (oldest first), then closed (newest first)
    for label in ("順番待ち", "待機中", "発信中", "完了", "不成立", "話中", "応答あり"):
        assert label in page, label
    assert "1/3" in page and "3/3" in page
    assert not listed(page, "c-yesterday") and not listed(page, "t1")
    assert "0611112222" not in page
    english = signed_in(app, "sup1").get("/supervisor/callbacks?lang=en").get_data(
        as_text=True)
    assert "Waiting its turn" in english and "Line busy" in english
    # the operator's console carries the panel and the URL the script refreshes it from
    console = signed_in(app, "op1").get("/operator/").get_data(as_text=True)
    assert 'id="callbacks"' in console and "/operator/callbacks?partial=1" in console
    assert listed(console, "c-old") and "<script>" not in console


def test_service_filter_and_bad_input(app: Flask, people: dict[str, User]) -> None:
    add_callback(app, "c1", service="citizens")
    add_callback(app, "k1", service="remote-window")
    sup = signed_in(app, "sup1")
    page = sup.get("/supervisor/callbacks?service=remote-window&partial=1").get_data(
        as_text=True)
    assert listed(page, "k1") and not listed(page, "c1")
    for bad in ("nope", "x" * 500, "\x00", "citizens'--"):
        assert sup.get("/supervisor/callbacks", query_string={"service": bad}
                       ).status_code == 400
    assert sup.get("/supervisor/callbacks?partial=2&service=").status_code == 200
    # cancelling: ids that are not numbers or too large for the column, unknown ids
    t = token(sup)
    for path in ("/supervisor/callbacks/abc/cancel", "/supervisor/callbacks/-1/cancel",
                 f"/supervisor/callbacks/{2**63}/cancel", "/supervisor/callbacks/999/cancel"):
        assert sup.post(path, data={"csrf_token": t}).status_code == 404, path


# ----------------------------------------------------------------------- masking


def test_number_is_masked_for_operators_except_the_one_handling_it(
        app: Flask, people: dict[str, User]) -> None:
    waiting = add_callback(app, "c1", status="placed")
    mine = add_callback(app, "c2", status="connecting", attempts=1, number="0312340000")
    theirs = add_callback(app, "c3", status="connecting", attempts=1, agent="op02",
                          number="0455556666")
    # the controller's timeline names the operator when the callback reached them
    add_call(app, "c2", agent=None, status="ended", outcome="callback")
    with resources(app).factory() as db:
        db.add(CallEvent(call_id="c2", at=datetime.now(UTC), kind="callback_agent_connect",
                         source="ami", dedup_key="cbac:c2", data={"agent": "op01"}))
        db.commit()
    page = signed_in(app, "op1").get("/operator/callbacks?partial=1").get_data(as_text=True)
    assert NUMBER not in page and MASKED in page
    assert "0312340000" in page  # op1 is on the line for c2
    assert "0455556666" not in page and "045***6666" in page
    assert [int(r.object_id) for r in audit_rows(app, action="callback.view")] == [mine]
    page = signed_in(app, "op2").get("/operator/callbacks?partial=1").get_data(as_text=True)
    assert "0455556666" in page and "0312340000" not in page
    # supervisors see every number; each view is audited, never the number itself
    sup = signed_in(app, "sup1")
    page = sup.get("/supervisor/callbacks").get_data(as_text=True)
    assert NUMBER in page and "0312340000" in page and "0455556666" in page
    sup_views = [r for r in audit_rows(app, action="callback.view") if r.actor == "sup1"]
    assert sorted(int(r.object_id) for r in sup_views) == sorted([waiting, mine, theirs])
    # live refreshes within a few minutes do not write the same entry again
    sup.get("/supervisor/callbacks?partial=1")
    assert len([r for r in audit_rows(app, action="callback.view")
                if r.actor == "sup1"]) == 3
    for row in audit_rows(app):
        for number in (NUMBER, "0312340000", "0455556666"):
            assert number not in f"{row.object_id} {row.reason} {row.action}"
    # short or odd numbers are masked entirely
    add_callback(app, "c4", number="110")
    assert "***" in signed_in(app, "op1").get("/operator/callbacks?partial=1").get_data(
        as_text=True)


def test_case_link_only_where_the_viewer_may_open_the_case(
        app: Flask, people: dict[str, User]) -> None:
    add_call(app, "own", agent="op01", status="ended")
    add_call(app, "other", agent="op02", status="ended")
    add_callback(app, "own")
    add_callback(app, "other")
    page = signed_in(app, "op1").get("/operator/callbacks?partial=1").get_data(as_text=True)
    assert 'href="/calls/own"' in page and 'href="/calls/other"' not in page
    assert "cancel" not in page  # operators cannot cancel
    page = signed_in(app, "sup1").get("/supervisor/callbacks?partial=1").get_data(
        as_text=True)
    assert 'href="/calls/own"' in page and 'href="/calls/other"' in page


# ------------------------------------------------------------------------ cancel


def test_supervisor_cancels_an_open_callback_with_csrf(app: Flask,
                                                      people: dict[str, User]) -> None:
    pending = add_callback(app, "c1", status="pending")
    placed = add_callback(app, "c2", status="placed")
    sup = signed_in(app, "sup1")
    page = sup.get("/supervisor/callbacks").get_data(as_text=True)
    assert f"/supervisor/callbacks/{pending}/cancel" in page
    # no token: refused, nothing changes
    assert sup.post(f"/supervisor/callbacks/{pending}/cancel").status_code == 400
    assert status_of(app, pending) == ("pending", None)
    t = token(sup)
    resp = sup.post(f"/supervisor/callbacks/{pending}/cancel", data={"csrf_token": t})
    assert resp.status_code == 303
    assert status_of(app, pending) == ("failed", "cancelled")
    resp = sup.post(f"/supervisor/callbacks/{placed}/cancel", data={"csrf_token": t},
                    headers={**FETCH, "X-CSRF-Token": t})
    assert resp.status_code == 200 and resp.get_json()["ok"] is True
    assert status_of(app, placed) == ("failed", "cancelled")
    with resources(app).factory() as db:
        assert db.scalars(select(Callback.completed_at).where(Callback.id == placed)).one()
    cancels = audit_rows(app, action="callback.cancel")
    assert sorted(int(r.object_id) for r in cancels) == sorted([pending, placed])
    # again: already closed
    resp = sup.post(f"/supervisor/callbacks/{pending}/cancel", data={"csrf_token": t},
                    headers=FETCH)
    assert resp.status_code == 409 and "終了" in resp.get_json()["message"]
    page = sup.get("/supervisor/callbacks?partial=1").get_data(as_text=True)
    assert "取消" in page and f"/supervisor/callbacks/{pending}/cancel" not in page


def test_cancel_is_refused_while_dialling_for_operators_and_other_tenants(
        app: Flask, people: dict[str, User], make_user: MakeUser) -> None:
    dialling = add_callback(app, "c1", status="connecting", attempts=1)
    done = add_callback(app, "c2", status="completed", completed_ago=timedelta(0))
    town = add_callback(app, "t1", tenant="town")
    sup = signed_in(app, "sup1")
    t = token(sup)
    resp = sup.post(f"/supervisor/callbacks/{dialling}/cancel", data={"csrf_token": t},
                    headers=FETCH)
    assert resp.status_code == 409 and resp.get_json()["ok"] is False
    assert status_of(app, dialling) == ("connecting", None)
    assert sup.post(f"/supervisor/callbacks/{done}/cancel",
                    data={"csrf_token": t}).status_code == 303  # flashed, no change
    assert status_of(app, done) == ("completed", None)
    assert sup.post(f"/supervisor/callbacks/{town}/cancel",
                    data={"csrf_token": t}).status_code == 404
    assert status_of(app, town) == ("pending", None)
    denied = audit_rows(app, action="access.denied", object_type="callback")
    assert [r.reason for r in denied] == ["tenant"]
    op = signed_in(app, "op1")
    pending = add_callback(app, "c3")
    assert op.post(f"/supervisor/callbacks/{pending}/cancel",
                   data={"csrf_token": token(op)}).status_code == 403
    assert status_of(app, pending) == ("pending", None)
    make_user("townsup", {"supervisor"}, tenant_id="town")
    page = signed_in(app, "townsup").get("/supervisor/callbacks?partial=1").get_data(
        as_text=True)
    assert listed(page, "t1") and not listed(page, "c3")
