"""The live console: operator, staff and supervisor pages, case cards, commands, events.

Real Redis (the queue mirror and the command/event streams) and real SQLite/PostgreSQL;
the controller is not running, so commands are read back from the command stream and
its events are written to the event stream as ari_app writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from common import bus
from common.commands import AgentLogin, CommandResult
from common.console_events import CaseNote, presence_key, transcript_key
from common.events import (
    CallArrived,
    CallEnded,
    CallTransferState,
    QueueCallerState,
    QueueMemberState,
    decode,
)
from common.keys import Keys
from common.models.accounts import User
from common.models.calls import Call, CallEvent
from common.models.faq import FaqItem, FaqRevision, FaqUsage
from tests.web.conftest import MakeUser, audit_rows, csrf, login
from web.db import resources
from web.sessions import session_key
from web.sse import Viewer, project

CALLER = "09012345678"
FETCH = {"X-Requested-With": "fetch"}


@pytest.fixture
def keys(web_settings: Any) -> Keys:
    return Keys(web_settings.redis.prefix)


@pytest.fixture
def people(make_user: MakeUser) -> dict[str, User]:
    return {
        "op": make_user("op1", {"operator"}, sip_endpoint="op01", display_name="青木"),
        "op2": make_user("op2", {"operator"}, sip_endpoint="op02"),
        "nophone": make_user("op3", {"operator"}, sip_endpoint="none"),
        "staff": make_user("staff1", {"staff"}, extension="2001", display_name="佐藤"),
        "staff2": make_user("staff2", {"staff"}, extension="2002"),
        "sup": make_user("sup1", {"supervisor"}, sip_endpoint=None),  # no phone yet
        "admin": make_user("admin", {"administrator"}),
        "townop": make_user("townop", {"operator"}, tenant_id="town", sip_endpoint="op04"),
    }


def signed_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def add_call(app: Flask, call_id: str, *, caller: str = CALLER, agent: str | None = "op01",
             status: str = "active", tenant: str = "city", ago: timedelta = timedelta(0),
             wait: int | None = 12, outcome: str | None = None,
             service: str = "citizens", channel: str = "phone",
             citizen_ref: str | None = None) -> None:
    now = datetime.now(UTC) - ago
    with resources(app).factory() as db:
        db.add(Call(id=call_id, tenant_id=tenant, service_id=service, channel=channel,
                    citizen_ref=citizen_ref,
                    did="0312345678", caller=caller, arrived_at=now, status=status,
                    queue="citizens", queued_at=now, agent=agent,
                    agent_connected_at=now + timedelta(seconds=wait or 0) if agent else None,
                    wait_seconds=wait if agent else None, outcome=outcome))
        db.commit()


def add_transfer(app: Flask, call_id: str, target: str = "2001", note: str = "戸籍の件です",
                 result: str = "ringing") -> None:
    with resources(app).factory() as db:
        db.add(CallEvent(call_id=call_id, at=datetime.now(UTC), kind="transfer", source="ari",
                         dedup_key=f"transfer:{target}:{result}",
                         data={"kind": "attended", "target": target, "department": "koseki",
                               "operator": "op01", "result": result, "reason": "",
                               "note": note}))
        db.commit()


def commands(rds: redis.Redis, keys: Keys) -> list[Any]:
    return [decode(fields[b"c"]) for _id, fields in rds.xrange(keys.commands)]


def stream_events(rds: redis.Redis, keys: Keys) -> list[Any]:
    return [decode(body) for _sid, body in bus.read_events(rds, keys)]


def published_faq(app: Flask, title: str = "住民票の写しの取り方",
                  tenant: str | None = None) -> int:
    now = datetime.now(UTC)
    with resources(app).factory() as db:
        item = FaqItem(kind="faq", tenant_id=tenant, created_at=now, created_by="t")
        db.add(item)
        db.flush()
        rev = FaqRevision(item_id=item.id, number=1, status="published", author="t",
                          created_at=now, title=title, body="窓口で申請します。")
        db.add(rev)
        db.flush()
        item.head_revision_id = rev.id
        item.published_revision_id = rev.id
        db.commit()
        return item.id


# ------------------------------------------------------------------ roles, tenants


ROUTES_GET = ["/operator/", "/operator/state", "/operator/faq", "/staff/",
              "/supervisor/wallboard", "/supervisor/wallboard.json"]
ALLOWED = {"/operator/": "op1", "/operator/state": "op1", "/operator/faq": "op1",
           "/staff/": "staff1", "/supervisor/wallboard": "sup1",
           "/supervisor/wallboard.json": "sup1"}


@pytest.mark.parametrize("path", ROUTES_GET)
def test_each_page_admits_its_role_only(app: Flask, people: dict[str, User], path: str) -> None:
    allowed = ALLOWED[path]
    assert signed_in(app, allowed).get(path).status_code == 200
    for other in ("op1", "staff1", "sup1", "admin"):
        if other != allowed:
            assert signed_in(app, other).get(path).status_code == 403, (path, other)
    anon = app.test_client().get(path)
    assert anon.status_code in (302, 401)
    assert audit_rows(app, action="access.denied")


def test_anonymous_json_and_event_stream_get_401(app: Flask, people: dict[str, User]) -> None:
    client = app.test_client()
    assert client.get("/supervisor/wallboard.json",
                      headers={"Accept": "application/json"}).status_code == 401
    assert client.get("/console/events", headers={"Accept": "application/json"}
                      ).status_code == 401
    assert client.get("/console/events").status_code == 302  # browser: to the log-in page


def test_operator_console_in_japanese_with_empty_states(app: Flask,
                                                        people: dict[str, User]) -> None:
    page = signed_in(app, "op1").get("/operator/").get_data(as_text=True)
    assert "オペレーター画面" in page and "受付にログイン" in page
    assert "現在通話はありません" in page and 'data-console="operator"' in page
    assert "<script>" not in page and " onclick=" not in page  # CSP: no inline scripts
    english = signed_in(app, "op1").get("/operator/?lang=en").get_data(as_text=True)
    assert "Log in to the queue" in english


# --------------------------------------------------------------------- case card


def test_case_card_shows_the_call_earlier_contacts_and_is_audited(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys) -> None:
    add_call(app, "c1")
    add_call(app, "old1", agent="op02", ago=timedelta(days=3), status="ended")
    add_call(app, "old2", agent="op02", ago=timedelta(days=200), status="ended")
    add_call(app, "other", caller="0311112222", agent="op02", ago=timedelta(days=1),
             status="ended")
    add_call(app, "town1", tenant="town", agent="op04", ago=timedelta(days=1),
             status="ended", service="citizens")
    client = signed_in(app, "op1")
    page = client.get("/operator/").get_data(as_text=True)
    assert CALLER in page and "案件カード" in page and "12秒" in page
    assert "過去の問い合わせ（直近90日）" in page
    card = client.get("/calls/c1?partial=1").get_data(as_text=True)
    assert card.count("<tr><td>") == 1  # only old1: not 200 days ago, other number, town
    assert "音声認識が動き始めると" in card and "FAQ候補" in card
    views = audit_rows(app, action="case.view")
    assert [v.object_id for v in views] == ["c1", "c1"]
    assert all(CALLER not in (v.reason + v.object_id) for v in audit_rows(app))
    # a transcript in Redis is shown in order
    for i in range(3):
        rds.rpush(transcript_key(keys, "c1"), json.dumps(
            {"at": 0, "speaker": "caller" if i % 2 == 0 else "operator",
             "text": f"発話{i}"}))
    card = client.get("/calls/c1?partial=1").get_data(as_text=True)
    assert card.index("発話0") < card.index("発話1") < card.index("発話2")


def test_a_kiosk_call_s_earlier_contacts_are_the_citizen_s_never_the_kiosk_s(
        app: Flask, people: dict[str, User]) -> None:
    # k01 is shared: another citizen's session there yesterday is not this citizen's history
    add_call(app, "other-citizen", caller="k01", channel="kiosk", agent="op02",
             ago=timedelta(days=1), status="ended", service="remote-window")
    add_call(app, "phoned", caller="09011112222", agent="op02", ago=timedelta(days=2),
             status="ended", outcome="out_of_hours")
    add_call(app, "k1", caller="k01", channel="kiosk", service="remote-window")
    op = signed_in(app, "op1")
    card = op.get("/calls/k1?partial=1").get_data(as_text=True)
    assert card.count("<tr><td>") == 0 and "カードを読み取るか" in card
    assert "相談者の電話番号" in card  # the operator may ask for the number
    token = csrf(op, "/operator/")

    def give(number: str, consent: bool = True) -> Any:
        data = {"number": number, "csrf_token": token, **({"consent": "yes"} if consent else {})}
        return op.post("/calls/k1/citizen-phone", data=data, headers=FETCH)

    no_consent = give("09011112222", consent=False)
    assert no_consent.status_code == 400 and "同意" in no_consent.get_json()["message"]
    bad = give("0901111")
    assert bad.status_code == 400 and "10～15桁" in bad.get_json()["message"]
    ok = give("０９０-１１１１-２２２２")  # as typed: full-width digits and hyphens
    assert ok.status_code == 200 and ok.get_json()["refresh_card"]
    card = op.get("/calls/k1?partial=1").get_data(as_text=True)
    assert card.count("<tr><td>") == 1 and "受付時間外" in card and "電話" in card
    assert "out_of_hours" not in card
    # the citizen's next phone call finds the kiosk visit; the audit keeps no number
    add_call(app, "later", caller="09011112222", agent="op01", ago=timedelta(seconds=-5))
    card = op.get("/calls/later?partial=1").get_data(as_text=True)
    assert card.count("<tr><td>") == 2 and "リモート窓口" in card
    entries = audit_rows(app, action="case.citizen_phone")
    assert [e.object_id for e in entries] == ["k1"]
    assert all("1111" not in (e.reason + e.object_id) for e in audit_rows(app))
    # only the operator of a kiosk call may give a number
    add_call(app, "c1")
    assert op.post("/calls/c1/citizen-phone", data={"number": "09011112222", "consent": "yes",
                                                    "csrf_token": token},
                   headers=FETCH).status_code == 409


def test_the_transfer_panel_offers_only_what_the_transfer_s_step_allows(
        app: Flask, people: dict[str, User]) -> None:
    add_call(app, "c1")
    op = signed_in(app, "op1")

    def panel() -> str:
        card = op.get("/calls/c1?partial=1").get_data(as_text=True)
        return card[card.index('class="transfer-panel"'):]

    before = panel()
    assert "btn-transfer-complete" not in before and "btn-transfer-cancel" not in before
    assert "btn-transfer" in before and "戸籍係（空いている職員）" in before
    add_transfer(app, "c1", result="ringing")
    ringing = panel()
    assert "btn-transfer-cancel" in ringing and "btn-transfer-complete" not in ringing
    assert 'id="btn-transfer"' not in ringing  # one transfer at a time
    add_transfer(app, "c1", result="consulting")
    assert "btn-transfer-complete" in panel()
    add_transfer(app, "c1", result="answered")
    card = op.get("/calls/c1?partial=1").get_data(as_text=True)
    assert "職員に引き継ぎ済み" in card and "通話中</span>" not in card
    assert "btn-transfer-complete" not in card and "相談者は職員と通話中です" in card
    assert "answered" not in card.split('class="transfer-steps"')[1].split("</ol>")[0]


def test_staff_recent_transfers_are_a_part_the_page_refreshes(
        app: Flask, people: dict[str, User]) -> None:
    staff = signed_in(app, "staff1")
    empty = staff.get("/staff/?partial=transfers").get_data(as_text=True)
    assert 'id="staff-transfers"' in empty and "<tbody>" not in empty
    add_call(app, "c1")
    add_transfer(app, "c1", target="2001")
    part = staff.get("/staff/?partial=transfers").get_data(as_text=True)
    assert 'data-call="c1"' in part and CALLER in part and "呼び出し中" in part
    assert "<html" not in part and not audit_rows(app, action="case.view")


def test_case_card_is_refused_to_others(app: Flask, people: dict[str, User]) -> None:
    add_call(app, "c1")
    add_call(app, "t1", tenant="town", agent="op04")
    assert signed_in(app, "op2").get("/calls/c1").status_code == 404
    assert signed_in(app, "staff1").get("/calls/c1").status_code == 404
    assert signed_in(app, "op1").get("/calls/t1").status_code == 404
    assert signed_in(app, "op1").get("/calls/nope").status_code == 404
    assert signed_in(app, "op1").get("/calls/" + "x" * 200).status_code == 404
    assert signed_in(app, "admin").get("/calls/c1").status_code == 403
    assert signed_in(app, "sup1").get("/calls/c1").status_code == 200
    reasons = {r.reason for r in audit_rows(app, action="access.denied")}
    assert {"not_assigned", "tenant", "role"} <= reasons


def test_staff_sees_a_transferred_case_with_the_escalation_note(
        app: Flask, people: dict[str, User]) -> None:
    add_call(app, "c1")
    add_transfer(app, "c1", target="2001", note="戸籍謄本の郵送請求について")
    staff = signed_in(app, "staff1")
    page = staff.get("/staff/").get_data(as_text=True)
    assert "あなたへの最近の転送" in page and "/calls/c1" in page
    # the transfer is ringing now: the card is on the page at once (e.g. after a reload)
    assert 'id="case-card"' in page and "戸籍謄本の郵送請求について" in page
    assert 'data-call="c1"' in page
    card = staff.get("/calls/c1").get_data(as_text=True)
    assert "戸籍謄本の郵送請求について" in card and CALLER in card and "結果を保存" in card
    assert "後処理を保存" not in card  # the operator's wrap-up is not the staff's form
    assert signed_in(app, "staff2").get("/calls/c1").status_code == 404


# ------------------------------------------------------------------------ notes


def test_notes_are_shared_live_without_their_text_on_the_bus(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys) -> None:
    add_call(app, "c1")
    add_transfer(app, "c1")
    op = signed_in(app, "op1")
    staff = signed_in(app, "staff1")
    token = csrf(op, "/operator/")
    resp = op.post("/calls/c1/notes", data={"text": "住所変更の相談", "csrf_token": token},
                   headers=FETCH)
    assert resp.status_code == 200 and resp.get_json()["ok"]
    resp = staff.post("/calls/c1/notes", data={"text": "折り返し連絡します",
                                               "csrf_token": csrf(staff, "/staff/")})
    assert resp.status_code == 303
    notes = op.get("/calls/c1/notes").get_data(as_text=True)
    assert "住所変更の相談" in notes and "折り返し連絡します" in notes and "佐藤" in notes
    events = [e for e in stream_events(rds, keys) if isinstance(e, CaseNote)]
    assert [e.author_role for e in events] == ["operator", "staff"]
    raw = b"".join(fields[b"e"] for _i, fields in rds.xrange(keys.events))
    assert "住所変更".encode() not in raw and "折り返し".encode() not in raw


@pytest.mark.parametrize(("text", "message"), [
    ("", "メモを入力してください。"),
    ("あ" * 2001, "メモは2000文字以内で入力してください。"),
    ("a\x07b", "保存できない文字"),
])
def test_bad_notes_get_japanese_messages(app: Flask, people: dict[str, User], text: str,
                                         message: str) -> None:
    add_call(app, "c1")
    op = signed_in(app, "op1")
    resp = op.post("/calls/c1/notes", data={"text": text, "csrf_token": csrf(op, "/operator/")},
                   headers=FETCH)
    assert resp.status_code == 400 and message in resp.get_json()["error"]
    resp = op.post("/calls/c1/notes", data={"text": text,
                                            "csrf_token": csrf(op, "/operator/")},
                   follow_redirects=True)
    assert message in resp.get_data(as_text=True)


def test_posts_without_csrf_token_are_refused(app: Flask, people: dict[str, User],
                                              rds: redis.Redis, keys: Keys) -> None:
    add_call(app, "c1")
    op = signed_in(app, "op1")
    for path, data in [("/operator/state", {"action": "login"}),
                       ("/calls/c1/notes", {"text": "x"}),
                       ("/operator/calls/c1/wrapup", {"disposition": "other"}),
                       ("/operator/calls/c1/transfer", {"kind": "blind", "target": "2001"})]:
        assert op.post(path, data=data).status_code == 400
    assert commands(rds, keys) == []


# ------------------------------------------------------------------- state commands


def test_state_changes_are_commands_answered_on_the_stream(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys) -> None:
    op = signed_in(app, "op1")
    token = csrf(op, "/operator/")
    for data in ({"action": "login"}, {"action": "pause", "reason": "after_call_work"},
                 {"action": "ready"}, {"action": "logout"}):
        resp = op.post("/operator/state", data={**data, "csrf_token": token}, headers=FETCH)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.get_json()["command_id"]
    sent = commands(rds, keys)
    assert [c.type for c in sent] == ["cmd.agent.login", "cmd.agent.pause",
                                      "cmd.agent.unpause", "cmd.agent.logout"]
    assert all(c.endpoint == "op01" and c.tenant == "city" for c in sent)
    assert sent[1].reason == "after_call_work" and isinstance(sent[0], AgentLogin)
    assert {r.action for r in audit_rows(app)} >= {"agent.login", "agent.pause"}


@pytest.mark.parametrize(("data", "message"), [
    ({"action": "pause", "reason": "nap"}, "離席の理由を選んでください。"),
    ({"action": "pause"}, "離席の理由を選んでください。"),
    ({"action": "dance"}, "不明な操作です。"),
    ({}, "不明な操作です。"),
])
def test_bad_state_input(app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys,
                         data: dict[str, str], message: str) -> None:
    op = signed_in(app, "op1")
    resp = op.post("/operator/state", data={**data, "csrf_token": csrf(op, "/operator/")},
                   follow_redirects=True)
    assert resp.status_code == 200 and message in resp.get_data(as_text=True)
    assert commands(rds, keys) == []


def test_operator_without_a_phone_is_told_so(app: Flask, people: dict[str, User],
                                             rds: redis.Redis, keys: Keys) -> None:
    op = signed_in(app, "op3")
    page = op.get("/operator/").get_data(as_text=True)
    assert "ソフトフォンが設定されていません" in page
    resp = op.post("/operator/state", data={"action": "login",
                                            "csrf_token": csrf(op, "/operator/")},
                   headers=FETCH)
    assert resp.status_code == 400 and commands(rds, keys) == []


def test_state_panel_reads_the_queue_mirror(app: Flask, people: dict[str, User],
                                            rds: redis.Redis, keys: Keys) -> None:
    op = signed_in(app, "op1")
    assert op.get("/operator/state").get_json()["state"] == "offline"
    rds.hset(keys.queue_members("citizens"), "op01", json.dumps(
        {"endpoint": "op01", "paused": True, "reason": "after_call_work", "status": "not_in_use",
         "in_call": False, "calls_taken": 3, "since": 1.0}))
    state = op.get("/operator/state").get_json()
    assert state["state"] == "after_call_work" and state["label"] == "後処理"
    assert "後処理" in op.get("/operator/state?partial=1").get_data(as_text=True)
    rds.hset(keys.queue_members("citizens"), "op01", "not json")
    assert op.get("/operator/state").get_json()["state"] == "ready"


# ------------------------------------------------------------------------ wrap-up


def test_wrapup_saves_notes_disposition_and_faq_items(app: Flask, people: dict[str, User],
                                                      rds: redis.Redis, keys: Keys) -> None:
    add_call(app, "c1")
    item = published_faq(app)
    town_item = published_faq(app, "町の話", tenant="town")
    op = signed_in(app, "op1")
    token = csrf(op, "/operator/")
    bad = op.post("/operator/calls/c1/wrapup", data={
        "disposition": "maybe", "faq_items": f"{item}, {town_item}, abc", "csrf_token": token},
        headers=FETCH)
    assert bad.status_code == 400
    assert "対応結果を選んでください" in bad.get_json()["message"]
    assert "番号をカンマ区切り" in bad.get_json()["message"]
    bad = op.post("/operator/calls/c1/wrapup", data={
        "disposition": "other", "faq_items": f"{item}、{town_item}", "csrf_token": token},
        headers=FETCH)
    assert bad.status_code == 400 and str(town_item) in bad.get_json()["message"]
    ok = op.post("/operator/calls/c1/wrapup", data={
        "disposition": "resolved_faq", "faq_items": str(item), "notes": "写しの取り方を案内",
        "csrf_token": token}, headers=FETCH)
    assert ok.status_code == 200 and "FAQで解決" in ok.get_json()["message"]
    with resources(app).factory() as db:
        call = db.get(Call, "c1")
        assert call is not None and call.disposition == "resolved_faq"
        assert call.notes == "写しの取り方を案内"
        used = db.scalars(select(FaqUsage).where(FaqUsage.call_id == "c1")).all()
        assert [(u.item_id, u.kind) for u in used] == [(item, "resolved")]
    # saving again does not count the item twice
    op.post("/operator/calls/c1/wrapup", data={"disposition": "resolved_faq",
                                               "faq_items": str(item), "csrf_token": token})
    with resources(app).factory() as db:
        assert len(db.scalars(select(FaqUsage)).all()) == 1
    assert any(e.type == "case.outcome" for e in stream_events(rds, keys))
    # only the operator who took it can wrap it up
    op2 = signed_in(app, "op2")
    assert op2.post("/operator/calls/c1/wrapup", data={
        "disposition": "other", "csrf_token": csrf(op2, "/operator/")}).status_code == 404


def test_staff_outcome(app: Flask, people: dict[str, User]) -> None:
    add_call(app, "c1")
    add_transfer(app, "c1")
    staff = signed_in(app, "staff1")
    token = csrf(staff, "/staff/")
    bad = staff.post("/staff/calls/c1/outcome", data={"disposition": "", "csrf_token": token},
                     headers=FETCH)
    assert bad.status_code == 400 and "対応結果を選んでください" in bad.get_json()["message"]
    for notes in ("一次回答", "郵送で対応"):
        ok = staff.post("/staff/calls/c1/outcome", data={
            "disposition": "escalated", "notes": notes, "csrf_token": token}, headers=FETCH)
        assert ok.status_code == 200
    with resources(app).factory() as db:
        rows = db.scalars(select(CallEvent).where(CallEvent.kind == "staff_outcome")).all()
        assert len(rows) == 1 and rows[0].data["notes"] == "郵送で対応"
    op = signed_in(app, "op1")
    assert op.post("/staff/calls/c1/outcome", data={
        "disposition": "other", "csrf_token": csrf(op, "/operator/")}).status_code == 403


# ---------------------------------------------------------------------- transfers


def test_transfer_panel_and_commands(app: Flask, people: dict[str, User], rds: redis.Redis,
                                     keys: Keys) -> None:
    add_call(app, "c1")
    rds.hset(presence_key(keys), "2001", "not_in_use")
    op = signed_in(app, "op1")
    card = op.get("/calls/c1").get_data(as_text=True)
    assert "戸籍係" in card and "空き" in card and "不明" in card  # 2002 unknown
    assert "町民窓口" not in card  # other tenant's department
    token = csrf(op, "/operator/")
    ok = op.post("/operator/calls/c1/transfer", data={
        "kind": "attended", "target": "2001", "note": "謄本の郵送", "csrf_token": token},
        headers=FETCH)
    assert ok.status_code == 200
    op.post("/operator/calls/c1/transfer/complete", data={"csrf_token": token}, headers=FETCH)
    op.post("/operator/calls/c1/transfer/cancel", data={"csrf_token": token}, headers=FETCH)
    sent = commands(rds, keys)
    assert [c.type for c in sent] == ["cmd.call.transfer", "cmd.call.transfer_complete",
                                      "cmd.call.transfer_cancel"]
    assert (sent[0].kind, sent[0].target, sent[0].note, sent[0].call_id) == (
        "attended", "2001", "謄本の郵送", "c1")
    for data, message in [({"kind": "warm", "target": "2001"}, "ブラインド転送か"),
                          ({"kind": "blind", "target": "3001"}, "一覧から"),
                          ({"kind": "blind", "target": "koseki", "note": "x" * 1001},
                           "引き継ぎメモは1000文字以内")]:
        resp = op.post("/operator/calls/c1/transfer", data={**data, "csrf_token": token},
                       headers=FETCH)
        assert resp.status_code == 400 and message in resp.get_json()["message"]
    add_call(app, "ended", status="ended")
    assert op.post("/operator/calls/ended/transfer", data={
        "kind": "blind", "target": "koseki", "csrf_token": token}).status_code == 303
    assert len(commands(rds, keys)) == 3


# --------------------------------------------------------------------------- FAQ


def test_faq_search_box(app: Flask, people: dict[str, User]) -> None:
    app.config["FAQ_ENCODER"] = "none"
    op = signed_in(app, "op1")
    assert "該当するFAQはありません" in op.get(
        "/operator/faq?partial=1&q=住民票").get_data(as_text=True)
    resp = op.get("/operator/faq?q=" + "あ" * 300, headers=FETCH)
    assert resp.status_code == 400 and "200文字以内" in resp.get_json()["error"]
    assert op.get("/operator/faq?q=%00").status_code == 200
    assert "FAQ検索" in op.get("/operator/faq").get_data(as_text=True)


# -------------------------------------------------------------------- wallboard


def test_wallboard_counts_and_operator_states(app: Flask, people: dict[str, User],
                                              rds: redis.Redis, keys: Keys) -> None:
    import time

    rds.hset(keys.queue_callers("citizens"), "w1", json.dumps(
        {"position": 1, "joined_at": time.time() - 42}))
    rds.hset(keys.queue_callers("citizens"), "w2", json.dumps(
        {"position": 2, "joined_at": time.time() - 5}))
    rds.hset(keys.queue_members("citizens"), "op01", json.dumps(
        {"endpoint": "op01", "paused": False, "reason": "", "status": "in_use",
         "in_call": True, "calls_taken": 2, "since": time.time() - 30}))
    rds.hset(keys.queue_members("citizens"), "op02", json.dumps(
        {"endpoint": "op02", "paused": True, "reason": "break", "status": "not_in_use",
         "in_call": False, "calls_taken": 0, "since": time.time() - 300}))
    add_call(app, "a1", wait=10, status="ended")
    add_call(app, "a2", wait=35, agent="op02", status="ended")
    add_call(app, "live", wait=3)
    add_call(app, "ab", agent=None, outcome="abandoned", status="ended")
    add_call(app, "yesterday", ago=timedelta(days=2), status="ended")
    sup = signed_in(app, "sup1")
    data = sup.get("/supervisor/wallboard.json").get_json()["services"]
    citizens = next(b for b in data if b["service"] == "citizens")
    assert citizens["waiting"] == 2 and 41 <= citizens["longest_wait"] <= 45
    assert citizens["answered"] == 3 and citizens["abandoned"] == 1
    assert citizens["service_level"] == 50.0  # a1 and live within 20 s, of 4 offered
    ops = {o["endpoint"]: o for o in citizens["operators"]}
    assert ops["op01"]["state"] == "in_call" and ops["op01"]["call_id"] == "live"
    assert ops["op02"]["state"] == "paused" and ops["op02"]["reason"] == "break"
    assert ops["op01"]["name"] == "青木"
    page = sup.get("/supervisor/wallboard").get_data(as_text=True)
    assert "ウォールボード" in page and "休憩" in page and "サービスレベル（20秒以内）" in page
    assert "電話機未設定" in page  # the supervisor has no phone: no listen buttons


def test_listen_whisper_barge_commands(app: Flask, people: dict[str, User], rds: redis.Redis,
                                       keys: Keys) -> None:
    add_call(app, "c1")
    sup = signed_in(app, "sup1")
    token = csrf(sup, "/supervisor/wallboard")
    resp = sup.post("/supervisor/calls/c1/listen", data={"mode": "listen", "csrf_token": token},
                    headers=FETCH)
    assert resp.status_code == 400 and "電話機が設定されていません" in resp.get_json()["message"]
    with resources(app).factory() as db:
        db.execute(update(User).where(User.username == "sup1").values(extension="1099"))
        db.commit()
    bad = sup.post("/supervisor/calls/c1/listen", data={"mode": "spy", "csrf_token": token},
                   headers=FETCH)
    assert bad.status_code == 400 and "モニター、ささやき" in bad.get_json()["message"]
    for mode in ("listen", "whisper", "barge"):
        ok = sup.post("/supervisor/calls/c1/listen", data={"mode": mode, "csrf_token": token},
                      headers=FETCH)
        assert ok.status_code == 200
    sent = commands(rds, keys)
    assert [(c.type, c.mode, c.endpoint) for c in sent] == [
        ("cmd.supervisor.listen", m, "1099") for m in ("listen", "whisper", "barge")]
    op = signed_in(app, "op1")
    assert op.post("/supervisor/calls/c1/listen", data={
        "mode": "listen", "csrf_token": csrf(op, "/operator/")}).status_code == 403


# ----------------------------------------------------------------------- events


def viewer(user: User) -> Viewer:
    return Viewer.of(user)


def test_projection_filters_by_tenant_role_and_owner(people: dict[str, User]) -> None:
    queues = {"citizens": "city", "kiosk": "city", "town-q": "town"}
    owners = {"cmd1": str(people["op"].id)}
    op, op2, staff, sup, town = (viewer(people[k]) for k in
                                 ("op", "op2", "staff", "sup", "townop"))

    def seen(ev: Any, v: Viewer) -> Any:
        return project(ev, v, queues, owners.get)

    arrived = CallArrived(call_id="c1", tenant="city", service="citizens", channel="phone",
                          did="0312345678", caller=CALLER, caller_name="山田")
    assert seen(arrived, op) == {"call_id": "c1", "service": "citizens", "channel": "phone"}
    assert seen(arrived, staff) is None and seen(arrived, town) is None
    member = QueueMemberState(queue="citizens", endpoint="op01", logged_in=True)
    assert seen(member, op) is not None and seen(member, op2) is None
    assert seen(member, sup) is not None and seen(member, staff) is None
    caller = QueueCallerState(queue="citizens", call_id="c1", state="connected", agent="op01")
    assert seen(caller, op2)["agent"] == "op01" and seen(caller, town) is None
    assert seen(QueueCallerState(queue="town-q", call_id="t", state="joined"), town)
    result = CommandResult(command_id="cmd1", command="cmd.agent.login", ok=True)
    assert seen(result, op) is not None and seen(result, op2) is None
    transfer = CallTransferState(call_id="c1", tenant="city", kind="attended", target="2001",
                                 department="koseki", operator="op01", result="ringing",
                                 note="秘密のメモ")
    assert "note" not in seen(transfer, staff)
    assert seen(transfer, viewer(people["staff2"])) is None and seen(transfer, op2) is None
    assert seen(CallEnded(call_id="c1", tenant="city", cause=16, cause_txt=""), staff) == {
        "call_id": "c1"}
    assert seen(CaseNote(call_id="c1", tenant="town", note_id=1, author_role="staff"),
                op) is None


def read_chunks(resp: Any, n: int) -> list[str]:
    out = []
    it = iter(resp.response)
    for _ in range(n):
        chunk = next(it)
        out.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return out


@pytest.fixture
def short_block(app: Flask) -> Iterator[None]:
    app.config["SSE_BLOCK_MS"] = 200
    yield


def test_event_stream_resumes_and_filters(app: Flask, people: dict[str, User],
                                          rds: redis.Redis, keys: Keys,
                                          short_block: None) -> None:
    ids = [bus.publish(rds, keys, ev) for ev in (
        QueueCallerState(queue="citizens", call_id="c1", state="joined", waiting=1),
        CallArrived(call_id="t1", tenant="town", service="x", channel="phone", did="1",
                    caller="0"),
        QueueCallerState(queue="citizens", call_id="c1", state="connected", agent="op01"),
        CallEnded(call_id="c1", tenant="city", cause=16, cause_txt="Normal Clearing"),
    )]
    op = signed_in(app, "op1")
    resp = op.get("/console/events?last_id=0-0")
    assert resp.mimetype == "text/event-stream"
    chunks = read_chunks(resp, 4)
    resp.close()
    assert chunks[0].startswith("retry:")
    assert [c.split("\n")[0] for c in chunks[1:]] == [f"id: {ids[0]}", f"id: {ids[2]}",
                                                      f"id: {ids[3]}"]
    body = json.loads(chunks[2].split("data: ", 1)[1])
    assert body["type"] == "queue.caller" and body["data"]["agent"] == "op01"
    assert CALLER not in "".join(chunks)
    # a reconnecting browser sends Last-Event-ID: it gets only what followed
    resp = op.get("/console/events", headers={"Last-Event-ID": ids[2]})
    chunks = read_chunks(resp, 2)
    resp.close()
    assert chunks[1].startswith(f"id: {ids[3]}")
    # a bad id falls back to "from now": the next chunk is a keep-alive
    resp = op.get("/console/events?last_id=junk")
    chunks = read_chunks(resp, 2)
    resp.close()
    assert chunks[1] == ": keepalive\n\n"


def test_event_stream_is_passive_and_ends_with_the_session(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys,
        short_block: None) -> None:
    op = signed_in(app, "op1")
    op.get("/operator/")
    sid = op.get_cookie("mado_session")
    assert sid is not None
    key = session_key(keys, sid.value)
    before = json.loads(rds.get(key) or b"{}")["_meta"]["last"]
    resp = op.get("/console/events")
    assert read_chunks(resp, 2)[1] == ": keepalive\n\n"
    resp.close()
    assert json.loads(rds.get(key) or b"{}")["_meta"]["last"] == before
    resp = op.get("/console/events")
    next(iter(resp.response))
    rds.delete(key)  # the session expires (or an administrator ends it)
    rest = [c.decode() if isinstance(c, bytes) else c for c in resp.response]
    assert rest[-1].startswith("event: expired")
    resp.close()


def test_expired_session_sends_the_operator_to_log_in(app: Flask, people: dict[str, User],
                                                      rds: redis.Redis, keys: Keys) -> None:
    op = signed_in(app, "op1")
    sid = op.get_cookie("mado_session")
    assert sid is not None
    rds.delete(session_key(keys, sid.value))
    resp = op.get("/operator/", follow_redirects=True)
    assert "セッションの有効期限が切れました" in resp.get_data(as_text=True)
    resp = op.post("/calls/c1/notes", data={"text": "x"}, headers=FETCH)
    assert resp.status_code in (400, 401)


def test_wrapup_records_after_call_work(app: Flask, people: dict[str, User]) -> None:
    """After-call work runs from AgentComplete to the first wrap-up; a live call has none."""
    add_call(app, "live")
    add_call(app, "done", status="ended")
    with resources(app).factory() as db:
        db.add(CallEvent(call_id="done", at=datetime.now(UTC) - timedelta(seconds=42),
                         kind="agent_complete", source="ami", dedup_key="agent_complete:1",
                         data={"agent": "op01", "talk_seconds": 60}))
        db.commit()
    op = signed_in(app, "op1")
    token = csrf(op, "/operator/")
    for call_id in ("live", "done", "done"):  # the second save of "done" changes nothing
        assert op.post(f"/operator/calls/{call_id}/wrapup", data={
            "disposition": "other", "csrf_token": token}, headers=FETCH).status_code == 200
    with resources(app).factory() as db:
        assert db.get(Call, "live").wrapup_seconds is None  # type: ignore[union-attr]
        done = db.get(Call, "done")
        assert done is not None and 42 <= (done.wrapup_seconds or 0) <= 50
        rows = db.scalars(select(CallEvent).where(CallEvent.call_id == "done",
                                                  CallEvent.kind == "wrapup_end")).all()
        assert len(rows) == 1 and rows[0].data["disposition"] == "other"
        assert rows[0].data["seconds"] == done.wrapup_seconds


# -------------------------------------------------------------- live operator state


def member_record(**fields: Any) -> str:
    import time

    base = {"endpoint": "op01", "paused": False, "reason": "", "status": "not_in_use",
            "in_call": False, "calls_taken": 0, "since": time.time() - 5, "last_call": 0}
    return json.dumps({**base, **fields})


def test_phone_not_connected_is_shown_and_cannot_be_made_ready(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys,
        web_settings: Any) -> None:
    op = signed_in(app, "op1")
    extension = dict(web_settings.operators.endpoints())["op01"]
    # logged out, its phone unregistered (presence mirror): no log-in button
    rds.hset(presence_key(keys), extension, "unavailable")
    state = op.get("/operator/state").get_json()
    assert state["state"] == "no_phone" and state["label"] == "電話機未接続"
    page = op.get("/operator/").get_data(as_text=True)
    assert 'id="phone-down"' in page and 'id="btn-login"' not in page
    assert f'data-phone-extension="{extension}"' in page
    token = csrf(op, "/operator/")
    refused = op.post("/operator/state", data={"action": "login", "csrf_token": token},
                      headers=FETCH)
    assert refused.status_code == 409 and "電話機が接続されていません" in \
        refused.get_json()["message"]
    # logged in and paused while the phone is down: still 電話機未接続, no 受付可 button
    rds.hset(keys.queue_members("citizens"), "op01",
             member_record(status="unavailable", paused=True, reason="break"))
    assert op.get("/operator/state").get_json()["state"] == "no_phone"
    part = op.get("/operator/state?partial=1").get_data(as_text=True)
    assert "電話機未接続" in part and 'id="btn-ready"' not in part and "受付可" not in part
    refused = op.post("/operator/state", data={"action": "ready", "csrf_token": token},
                      headers=FETCH)
    assert refused.status_code == 409
    assert commands(rds, keys) == []  # nothing was sent to the controller
    sup = signed_in(app, "sup1")
    board = next(b for b in sup.get("/supervisor/wallboard.json").get_json()["services"]
                 if b["service"] == "citizens")
    assert board["operators"][0]["state"] == "no_phone"
    assert "電話機未接続" in sup.get("/supervisor/wallboard").get_data(as_text=True)
    # the phone registers again: the state comes back by itself, and ready is sent
    rds.hset(keys.queue_members("citizens"), "op01",
             member_record(status="not_in_use", paused=True, reason="break"))
    assert op.get("/operator/state").get_json()["state"] == "paused"
    assert 'id="btn-ready"' in op.get("/operator/state?partial=1").get_data(as_text=True)
    assert op.post("/operator/state", data={"action": "ready", "csrf_token": token},
                   headers=FETCH).status_code == 200
    assert [c.type for c in commands(rds, keys)] == ["cmd.agent.unpause"]


def test_after_call_work_lasts_the_services_wrapup_time(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys,
        web_settings: Any) -> None:
    import time

    wrapup = next(s for s in web_settings.services if s.id == "citizens").wrapup_seconds
    assert wrapup > 2
    ended = time.time() - 1
    rds.hset(keys.queue_members("citizens"), "op01", member_record(last_call=int(ended)))
    op = signed_in(app, "op1")
    state = op.get("/operator/state").get_json()
    assert state["state"] == "after_call_work"
    assert abs(state["wrapup_until"] - (int(ended) + wrapup)) < 0.01
    part = op.get("/operator/state?partial=1").get_data(as_text=True)
    assert "後処理" in part and "data-refresh-at=" in part
    sup = signed_in(app, "sup1")
    board = next(b for b in sup.get("/supervisor/wallboard.json").get_json()["services"]
                 if b["service"] == "citizens")
    assert board["operators"][0]["state"] == "after_call_work" and board["refresh_at"]
    # once the wrap-up time has passed the line is ready again, with nothing to refresh
    rds.hset(keys.queue_members("citizens"), "op01",
             member_record(last_call=int(time.time()) - wrapup - 1))
    assert op.get("/operator/state").get_json()["state"] == "ready"
    assert "data-refresh-at" not in op.get("/operator/state?partial=1").get_data(as_text=True)


def test_on_a_call_shows_only_on_the_board_of_that_calls_queue(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys) -> None:
    # app_queue marks the member busy in every queue it is in (one device state)
    for queue in ("citizens", "kiosk"):
        rds.hset(keys.queue_members(queue), "op01",
                 member_record(status="in_use", in_call=True))
    add_call(app, "live-citizens")
    sup = signed_in(app, "sup1")
    boards = {b["service"]: b for b in sup.get("/supervisor/wallboard.json").get_json()[
        "services"]}
    on_citizens = boards["citizens"]["operators"][0]
    on_kiosk = boards["remote-window"]["operators"][0]
    assert on_citizens["state"] == "in_call" and on_citizens["call_id"] == "live-citizens"
    assert on_kiosk["state"] == "busy_elsewhere" and on_kiosk["call_id"] is None
    page = sup.get("/supervisor/wallboard").get_data(as_text=True)
    kiosk_board = page[page.index('data-service="remote-window"'):]
    assert "他の窓口で対応中" in kiosk_board and ">通話中<" not in kiosk_board
