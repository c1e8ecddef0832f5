"""The My Number card flow in web (issue 6): the operator's request, the citizen's consent
and the steps reported by the kiosk page, the four items for this call only, who may see
them (audited), and the purge. Real Redis and SQL; the kiosk page and the card agent are
played by the test's requests (tests/integration/test_kiosk_card.py has the real ones).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from common.bus import read_events
from common.events import decode
from common.keys import Keys
from common.kiosk import KioskKeys, purge_session
from common.models.calls import Call, CallEvent
from common.settings import Settings
from tests.web.conftest import MakeUser, audit_rows, csrf, login
from tests.web.test_console import add_call, add_transfer
from web.contacts import citizen_ref_for_card
from web.db import resources

SID = "c" * 32
TOKEN = "kiosk-session-token-for-the-card-tests-0123456789"
ITEMS = {"name": "番号 花子", "address": "東京都サンプル市中央一丁目2番3号 サンプルハイツ101号室",
         "birth": "1985-04-01", "sex": "2"}


@pytest.fixture
def kk(web_settings: Settings) -> KioskKeys:
    return KioskKeys(Keys(web_settings.redis.prefix))


@pytest.fixture
def session(app: Flask, rds: redis.Redis, kk: KioskKeys, make_user: MakeUser
            ) -> str:
    """A kiosk session in a call answered by op01 (what ari_app and the bridge leave)."""
    rds.hset(kk.session(SID), mapping={
        "kiosk": "k01", "tenant": "city", "location": "中央公民館", "state": "connected",
        "agent": "op01", "call_id": SID, "token": hashlib.sha256(TOKEN.encode()).hexdigest()})
    rds.set(kk.call_session(SID), SID)
    add_call(app, SID, agent="op01", caller="k01", channel="kiosk", service="remote-window")
    make_user("op1", {"operator"}, sip_endpoint="op01")
    return SID


def page(client: FlaskClient, state: str, **body: Any) -> Any:
    """What the kiosk page sends (session token only: no cookie, no CSRF)."""
    return client.post(f"/kiosk/api/session/{SID}/card", json={"state": state, **body},
                       headers={"X-Kiosk-Session": TOKEN})


def operator(app: Flask, name: str = "op1") -> tuple[FlaskClient, str]:
    c = app.test_client()
    assert login(c, name).status_code == 302
    return c, csrf(c, "/operator/" if name.startswith("op") else "/")


def timeline(app: Flask) -> list[CallEvent]:
    with resources(app).factory() as db:
        return list(db.scalars(select(CallEvent).where(CallEvent.call_id == SID,
                                                       CallEvent.kind == "kiosk_card")
                               .order_by(CallEvent.id)))


def card_events(rds: redis.Redis, settings: Settings) -> list[Any]:
    return [e for _sid, body in read_events(rds, Keys(settings.redis.prefix))
            if (e := decode(body)).type == "kiosk.card"]


def test_the_operator_asks_the_citizen_agrees_and_the_four_items_reach_the_case_card(
        app: Flask, session: str, rds: redis.Redis, kk: KioskKeys,
        web_settings: Settings) -> None:
    kiosk = app.test_client()
    op, token = operator(app)
    assert op.get(f"/console/kiosk/{SID}/card").get_json()["state"] == ""

    # the operator asks; the page gets the request with its next poll
    resp = op.post(f"/console/kiosk/{SID}/card-request", headers={"X-CSRF-Token": token})
    assert resp.status_code == 200, resp.get_json()
    assert kiosk.get(f"/kiosk/api/session/{SID}",
                     headers={"X-Kiosk-Session": TOKEN}).get_json()["requests"] == ["card"]
    assert op.get(f"/console/kiosk/{SID}/card").get_json()["state"] == "requested"

    # consent, the card, a wrong PIN (the agent's notice goes to the operator), the read
    for state in ("consented", "waiting_card", "pin", "reading"):
        assert page(kiosk, state).status_code == 200, state
    resp = page(kiosk, "error", error="wrong-pin", tries_left=2,
                operator_notice_ja="暗証番号が一致しませんでした(残り2回)。",
                operator_notice_en="The PIN did not match (2 tries left).",
                detail="VERIFY answered 63C2")
    assert resp.status_code == 200
    status = op.get(f"/console/kiosk/{SID}/card").get_json()
    assert status["state"] == "error" and status["error"] == "wrong-pin"
    assert status["tries_left"] == 2
    assert status["notice"] == "暗証番号が一致しませんでした(残り2回)。"
    assert status["detail"] == "VERIFY answered 63C2" and status["has_data"] is False
    english = op.get(f"/console/kiosk/{SID}/card?lang=en").get_json()
    assert english["notice"] == "The PIN did not match (2 tries left)."
    assert page(kiosk, "pin").status_code == 200
    assert page(kiosk, "reading").status_code == 200
    assert page(kiosk, "read", items={**ITEMS, "sex_ja": "女", "sex_en": "female"}
                ).status_code == 200

    status = op.get(f"/console/kiosk/{SID}/card").get_json()
    assert status["state"] == "read" and status["has_data"] is True
    assert "番号" not in json.dumps(status, ensure_ascii=False)  # the status carries no data
    data = op.get(f"/console/kiosk/{SID}/card/data")
    assert data.status_code == 200 and "no-store" in data.headers["Cache-Control"]
    items = data.get_json()["items"]
    assert {k: items[k] for k in ITEMS} == ITEMS
    assert items["sex_ja"] == "女" and items["sex_en"] == "female"
    assert items["birth_ja"] == "1985年4月1日（昭和60年）"

    # the trail: who asked, that the kiosk read the card, who viewed it; never the data
    assert [r.actor for r in audit_rows(app, action="kiosk_card.request")] == ["op1"]
    reads = audit_rows(app, action="kiosk_card.read")
    assert [(r.actor, r.object_id) for r in reads] == [("kiosk:k01", SID)]
    assert [r.actor for r in audit_rows(app, action="kiosk_card.view")] == ["op1"]
    rows = timeline(app)
    assert [r.data["state"] for r in rows] == [
        "requested", "consented", "waiting_card", "pin", "reading", "error", "pin", "reading",
        "read"]
    assert rows[5].data == {"state": "error", "error": "wrong-pin", "tries_left": 2}
    events = card_events(rds, web_settings)
    assert [e.state for e in events] == [r.data["state"] for r in rows]
    written = json.dumps([r.data for r in rows] + [e.to_dict() for e in events] +
                         [r.reason for r in audit_rows(app)], ensure_ascii=False)
    for value in (ITEMS["name"], ITEMS["address"], ITEMS["birth"], "19850401"):
        assert value not in written

    # who the citizen is, for their earlier contacts: a keyed pseudonym, not the items
    secret = web_settings.web.secret_key
    with resources(app).factory() as db:
        ref = db.get(Call, SID).citizen_ref
    assert ref is not None and re.fullmatch(r"card:[0-9a-f]{40}", ref)
    assert ref == citizen_ref_for_card(secret, "番号　花子", "1985-04-01")  # spacing aside
    assert ref != citizen_ref_for_card(secret, "番号 花子", "1985-04-02")
    add_call(app, "visit-before", caller="k02", channel="kiosk", agent="op02",
             ago=timedelta(days=5), status="ended", service="remote-window", citizen_ref=ref)
    add_call(app, "same-kiosk", caller="k01", channel="kiosk", agent="op02",
             ago=timedelta(days=1), status="ended", service="remote-window")
    card = op.get(f"/calls/{SID}?partial=1").get_data(as_text=True)
    assert card.count("<tr><td>") == 1  # the visit at k02, not k01's other citizen

    # the purge at the end of the session takes the card data and lists it
    deleted = purge_session(web_settings, rds, SID, "kiosk_hangup", resources(app).factory)
    assert deleted is not None and "card data" in deleted
    assert not rds.exists(kk.card(SID))
    assert op.get(f"/console/kiosk/{SID}/card/data").status_code == 404


def test_staff_after_a_transfer_see_the_card_data_other_operators_do_not(
        app: Flask, session: str, make_user: MakeUser) -> None:
    kiosk = app.test_client()
    op, token = operator(app)
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 200
    for state in ("consented", "pin", "reading"):
        assert page(kiosk, state).status_code == 200
    assert page(kiosk, "read", items=ITEMS).status_code == 200
    add_transfer(app, SID, target="2001")
    make_user("koseki", {"staff"}, sip_endpoint=None, extension="2001")
    make_user("zeimu", {"staff"}, sip_endpoint=None, extension="2002")
    make_user("op2", {"operator"}, sip_endpoint="op02")
    for name, status in {"koseki": 200, "zeimu": 403, "op2": 403}.items():
        c = app.test_client()
        assert login(c, name).status_code == 302
        assert c.get(f"/console/kiosk/{SID}/card/data").status_code == status, name
        assert c.get(f"/console/kiosk/{SID}/card").status_code == status, name
    assert [r.actor for r in audit_rows(app, action="kiosk_card.view")] == ["koseki"]
    denied = audit_rows(app, action="kiosk_session.view", outcome="denied")
    assert sorted({r.actor for r in denied}) == ["op2", "zeimu"]


def test_nothing_is_read_without_the_operator_s_request_and_the_citizen_s_consent(
        app: Flask, session: str, rds: redis.Redis, kk: KioskKeys) -> None:
    kiosk = app.test_client()
    # no request yet: no consent, no steps, no data
    assert page(kiosk, "consented").get_json()["code"] == "not_requested"
    resp = page(kiosk, "read", items=ITEMS)
    assert resp.status_code == 409 and resp.get_json()["code"] == "no_consent"
    assert page(kiosk, "pin").status_code == 409
    # requested, then declined: still nothing can be read
    op, token = operator(app)
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 200
    assert page(kiosk, "read", items=ITEMS).get_json()["code"] == "no_consent"
    assert page(kiosk, "declined").status_code == 200
    assert page(kiosk, "read", items=ITEMS).status_code == 409
    assert page(kiosk, "consented").status_code == 409  # a new request first
    assert not rds.exists(kk.card(SID))
    assert op.get(f"/console/kiosk/{SID}/card").get_json()["state"] == "declined"
    # the console's request needs its CSRF token; a read under way cannot be asked again
    assert op.post(f"/console/kiosk/{SID}/card-request").status_code == 400
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 200
    assert page(kiosk, "consented").status_code == 200
    resp = op.post(f"/console/kiosk/{SID}/card-request", headers={"X-CSRF-Token": token})
    assert resp.status_code == 409 and resp.get_json()["code"] == "card_in_progress"
    # once the citizen stops, nothing more is accepted until the next request
    assert page(kiosk, "cancelled").status_code == 200
    assert page(kiosk, "read", items=ITEMS).status_code == 409
    assert audit_rows(app, action="kiosk_card.read") == []


def test_a_card_agent_that_does_not_answer_is_reported_before_consent_and_shown_at_once(
        app: Flask, session: str, rds: redis.Redis, kk: KioskKeys,
        web_settings: Settings) -> None:
    """The page checks the card agent when the operator asks, before it asks the citizen
    to agree: a read that cannot happen is said at once, on the kiosk and in the console,
    and still nothing can be read without consent."""
    kiosk = app.test_client()
    op, token = operator(app)
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 200
    notice = {"operator_notice_ja": "キオスク端末のカード読取プログラムが応答しません。",
              "operator_notice_en": "The card agent on the kiosk PC does not answer.",
              "detail": "not reachable"}
    # only the reader's state may come before consent, not a card's
    resp = page(kiosk, "error", error="wrong-pin", tries_left=2)
    assert resp.status_code == 409 and resp.get_json()["code"] == "no_consent"
    assert page(kiosk, "error", error="agent-unavailable", **notice).status_code == 200
    status = op.get(f"/console/kiosk/{SID}/card").get_json()
    assert (status["state"], status["error"]) == ("error", "agent-unavailable")
    assert status["notice"] == notice["operator_notice_ja"]
    assert [e.error for e in card_events(rds, web_settings)] == ["", "agent-unavailable"]
    # no consent: nothing goes on from the error
    for state in ("waiting_card", "pin", "reading"):
        assert page(kiosk, state).get_json()["code"] == "no_consent", state
    assert page(kiosk, "read", items=ITEMS).status_code == 409
    assert page(kiosk, "error", error="no-reader").status_code == 200  # tried again
    # the agent is back: the citizen is asked, agrees, and the read goes on as usual
    assert page(kiosk, "consented").status_code == 200
    for state in ("waiting_card", "pin", "reading"):
        assert page(kiosk, state).status_code == 200, state
    assert page(kiosk, "error", error="wrong-pin", tries_left=2).status_code == 200
    assert page(kiosk, "pin").status_code == 200
    assert not rds.exists(kk.card(SID))
    # the console's panel tells the operator what it means and what to do
    panel = op.get(f"/calls/{SID}?partial=1").get_data(as_text=True)
    assert 'data-msg-error-agent-unavailable="キオスク端末のカード読み取りソフトが起動して' \
        'いないため' in panel


@pytest.mark.parametrize(("body", "code"), [
    ({"state": "read", "items": {**ITEMS, "birth": "1985/04/01"}}, "bad_items"),
    ({"state": "read", "items": {**ITEMS, "birth": "1985-02-30"}}, "bad_items"),
    ({"state": "read", "items": {**ITEMS, "sex": "3"}}, "bad_items"),
    ({"state": "read", "items": {**ITEMS, "name": ""}}, "bad_items"),
    ({"state": "read", "items": {**ITEMS, "name": "山田\n太郎"}}, "bad_items"),
    ({"state": "read", "items": {**ITEMS, "address": "あ" * 401}}, "bad_items"),
    ({"state": "read", "items": {**ITEMS, "number": "123456789012"}}, "bad_items"),
    ({"state": "read", "items": ["番号 花子"]}, "bad_items"),
    ({"state": "read"}, "bad_items"),
    ({"state": "pin", "pin": "1234"}, "pin_refused"),
    ({"state": "read", "items": ITEMS, "pin": "1234"}, "pin_refused"),
    ({"state": "requested"}, "bad_state"),
    ({"state": "hacked"}, "bad_state"),
    ({"state": "error", "error": "rm -rf"}, "bad_error"),
    ({"state": "error", "error": "wrong-pin", "tries_left": "two"}, "bad_tries"),
    ({"state": "error", "error": "wrong-pin", "tries_left": True}, "bad_tries"),
    ({"state": "error", "error": "wrong-pin", "operator_notice_ja": "x" * 301}, "bad_notice"),
    ({"state": "error", "error": "wrong-pin", "detail": "a\x00b"}, "bad_notice"),
])
def test_bad_input_from_the_page_gets_a_clear_error_and_changes_nothing(
        app: Flask, session: str, rds: redis.Redis, kk: KioskKeys,
        body: dict[str, Any], code: str) -> None:
    kiosk = app.test_client()
    op, token = operator(app)
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 200
    assert page(kiosk, "consented").status_code == 200
    resp = kiosk.post(f"/kiosk/api/session/{SID}/card", json=body,
                      headers={"X-Kiosk-Session": TOKEN})
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["code"] == code and resp.get_json()["error"]
    assert not rds.exists(kk.card(SID))
    assert op.get(f"/console/kiosk/{SID}/card").get_json()["state"] == "consented"


def test_the_card_api_needs_the_session_token_and_a_connected_call(
        app: Flask, session: str, rds: redis.Redis, kk: KioskKeys) -> None:
    kiosk = app.test_client()
    for headers in ({}, {"X-Kiosk-Session": TOKEN[:-1] + "x"}):
        resp = kiosk.post(f"/kiosk/api/session/{SID}/card", json={"state": "consented"},
                          headers=headers)
        assert resp.status_code == 404
    assert kiosk.post(f"/kiosk/api/session/{SID}/card", data="no json",
                      headers={"X-Kiosk-Session": TOKEN}).status_code == 400
    # still waiting in the queue: nobody to read the card for
    rds.hdel(kk.session(SID), "agent")
    op, token = operator(app)
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 403  # not their call yet
    rds.hset(kk.session(SID), "card_state", "requested")
    assert page(kiosk, "consented").get_json()["code"] == "not_connected"
    # a console user without a login cannot ask either
    anon = app.test_client()
    assert anon.post(f"/console/kiosk/{SID}/card-request").status_code in (302, 400, 401)


def test_the_card_event_reaches_consoles_of_the_tenant_without_data() -> None:
    from common.kiosk import KioskCardState
    from web.sse import Viewer, project

    ev = KioskCardState(call_id=SID, tenant="city", state="error", error="wrong-pin")
    for roles in ({"operator"}, {"staff"}, {"supervisor"}):
        viewer: Any = Viewer(user_id=1, tenant="city", roles=frozenset(roles),
                             endpoint="op01", extension="2001")
        assert project(ev, viewer, {}, lambda _i: None) == \
            {"call_id": SID, "state": "error", "error": "wrong-pin"}
    for tenant, roles in (("town", {"operator"}), ("city", {"administrator"})):
        other: Any = Viewer(user_id=2, tenant=tenant, roles=frozenset(roles), endpoint="",
                            extension="")
        assert project(ev, other, {}, lambda _i: None) is None


def test_nothing_is_written_into_a_session_being_purged(
        app: Flask, session: str, rds: redis.Redis, kk: KioskKeys) -> None:
    """A read, a still or a request arriving while the purge runs (it has claimed the
    session, not yet deleted it) must not leave data behind the purge."""
    kiosk = app.test_client()
    op, token = operator(app)
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 200
    assert page(kiosk, "consented").status_code == 200
    rds.delete(kk.requests(SID))
    rds.hset(kk.session(SID), "purged", "kiosk_hangup")  # the purge's claim
    assert page(kiosk, "read", items=ITEMS).status_code == 404
    resp = kiosk.post(f"/kiosk/api/session/{SID}/still", data=bytes.fromhex("ffd8ffd9"),
                      headers={"X-Kiosk-Session": TOKEN})
    assert resp.status_code == 404
    assert op.post(f"/console/kiosk/{SID}/card-request",
                   headers={"X-CSRF-Token": token}).status_code == 409
    assert op.post(f"/console/kiosk/{SID}/still-request",
                   headers={"X-CSRF-Token": token}).status_code == 409
    for key in (kk.card(SID), kk.stills(SID), kk.requests(SID)):
        assert not rds.exists(key), key
    assert audit_rows(app, action="kiosk_card.read") == []
