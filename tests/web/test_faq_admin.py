"""FAQ and manual pages: roles and tenants, the approval workflow through the web, CSRF,
bad input, optimistic locking, changes to report, import/export (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook
from rq import Queue
from sqlalchemy import func, select

from common.models.faq import FaqItem, FaqRevision
from faq import jobs, services
from faq.content import Actor, Content
from tests.web.conftest import MakeUser, audit_rows, csrf, login
from web.db import resources
from web.faq_display import render_body

Clients = dict[str, FlaskClient]

USERS = {
    "sup": {"supervisor"},
    "adm": {"administrator"},
    "appr": {"approver"},
    "appr2": {"approver"},
    "both": {"supervisor", "approver"},
    "op": {"operator"},
    "stf": {"staff"},
}


@pytest.fixture
def clients(app: Flask, make_user: MakeUser) -> Clients:
    out: Clients = {}
    for name, roles in USERS.items():
        extra: dict[str, Any] = {}
        if "staff" in roles:
            extra = {"sip_endpoint": None, "extension": "2001"}
        elif "operator" not in roles:
            extra = {"sip_endpoint": None}
        make_user(name, roles, **extra)
        c = app.test_client()
        assert login(c, name).status_code == 302
        out[name] = c
    make_user("townsup", {"supervisor"}, tenant_id="town", sip_endpoint=None)
    c = app.test_client()
    assert login(c, "townsup").status_code == 302
    out["townsup"] = c
    out["anon"] = app.test_client()
    return out


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None,
         token: bool = True, **kwargs: Any) -> Any:
    form = dict(data or {})
    if token:
        form["csrf_token"] = csrf(client, "/auth/account")
    return client.post(path, data=form, **kwargs)


def actor(name: str, tenant: str = "city") -> Actor:
    return Actor(user_id=name, roles=frozenset(USERS.get(name, {"supervisor"})), tenant=tenant)


def with_db(app: Flask, fn: Callable[[Any], Any]) -> Any:
    with resources(app).factory() as db:
        out = fn(db)
        db.commit()
        return out


def make_item(app: Flask, title: str = "住民票の写しはどこで取れますか",
              body: str = "市民課の窓口で取れます。", *, tenant: str = "city",
              requested: bool = True) -> int:
    def go(db: Any) -> int:
        change = services.create_item(db, actor("sup", tenant),
                                      Content.make(title, body, category="住民票",
                                                   department="住民記録係"),
                                      requested_by_city=requested)
        return change.item.id

    return int(with_db(app, go))


def item_version(app: Flask, item_id: int) -> int:
    return int(with_db(app, lambda db: db.get(FaqItem, item_id).version))


def head_status(app: Flask, item_id: int) -> str:
    def go(db: Any) -> str:
        item = db.get(FaqItem, item_id)
        return str(db.get(FaqRevision, item.head_revision_id).status)

    return str(with_db(app, go))


def text(resp: Any) -> str:
    return str(resp.get_data(as_text=True))


FAQ_FORM = {"title": "印鑑登録に必要なものは", "body": "本人確認書類と印鑑です。",
            "category": "印鑑登録", "department": "市民課", "procedures": "印鑑登録",
            "keywords": "印鑑=はんこ", "channels": "both", "reason": "新規作成",
            "requested_by_city": "1"}


# ---------------------------------------------------------------- roles and tenants


def test_every_route_by_role(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)
    gets = ["/faq-admin/", f"/faq-admin/{item_id}", "/faq-admin/queue", "/faq-admin/reports",
            "/faq-admin/transfer", "/faq-admin/export?format=csv&scope=working"]
    edit_gets = ["/faq-admin/new", "/faq-admin/new?kind=manual", f"/faq-admin/{item_id}/edit"]
    for path in gets + edit_gets:
        for name in ("sup", "adm"):
            assert clients[name].get(path).status_code == 200, (name, path)
        assert clients["appr"].get(path).status_code == (403 if path in edit_gets else 200)
        for name in ("op", "stf"):
            assert clients[name].get(path).status_code == 403, (name, path)
        anon = clients["anon"].get(path)
        assert anon.status_code == 302 and "/auth/login" in anon.headers["Location"]

    posts = {f"/faq-admin/{item_id}/submit": "edit", f"/faq-admin/{item_id}/withdraw": "edit",
             f"/faq-admin/{item_id}/discard": "edit", f"/faq-admin/{item_id}/edit": "edit",
             "/faq-admin/new": "edit", "/faq-admin/import": "edit",
             f"/faq-admin/{item_id}/approve": "approve",
             f"/faq-admin/{item_id}/return": "approve",
             "/faq-admin/reports/1/acknowledge": "approve",
             f"/faq-admin/{item_id}/publish": "publish"}
    for path, need in posts.items():
        for name in ("op", "stf"):
            assert post(clients[name], path).status_code == 403, (name, path)
        assert clients["anon"].post(path, data={}).status_code in (400, 401)
        if need == "edit":
            assert post(clients["appr"], path).status_code == 403, path
        if need == "approve":
            assert post(clients["sup"], path).status_code == 403, path
    # nothing above moved the item: every refused post changed nothing
    assert head_status(app, item_id) == "draft" and item_version(app, item_id) == 1
    denied = audit_rows(app, action="access.denied")
    assert any(r.reason == "role" for r in denied)


def test_other_tenant_items_answer_404(app: Flask, clients: Clients) -> None:
    item_id = make_item(app, tenant="city")
    town = clients["townsup"]
    for path in (f"/faq-admin/{item_id}", f"/faq-admin/{item_id}/edit"):
        assert town.get(path).status_code == 404
    assert post(town, f"/faq-admin/{item_id}/submit", {"version": "1"}).status_code == 404
    assert "住民票" not in text(town.get("/faq-admin/"))
    assert head_status(app, item_id) == "draft"
    rows = audit_rows(app, action="access.denied", reason="tenant")
    assert rows and rows[-1].object_id == str(item_id) and rows[-1].object_type == "faq_item"
    assert clients["sup"].get("/faq-admin/999999").status_code == 404


def test_csrf_is_required(app: Flask, clients: Clients) -> None:
    resp = post(clients["sup"], "/faq-admin/new", FAQ_FORM, token=False)
    assert resp.status_code == 400
    assert with_db(app, lambda db: db.scalar(select(func.count(FaqItem.id)))) == 0
    item_id = make_item(app)
    resp = post(clients["sup"], f"/faq-admin/{item_id}/submit", {"version": "1"},
                token=False)
    assert resp.status_code == 400 and head_status(app, item_id) == "draft"


# ---------------------------------------------------------------- the workflow


def test_create_submit_approve_publish(app: Flask, clients: Clients, rds: Any) -> None:
    form = {**FAQ_FORM, "body": "窓口へ。\n\n- 印鑑\n- 本人確認書類\n\n"
            "[電子申請](https://example.org/apply?a=1&b=2) "
            "<script>alert(1)</script> <a href=\"javascript:alert(1)\">悪い</a>"}
    resp = post(clients["sup"], "/faq-admin/new", form)
    assert resp.status_code == 303, text(resp)
    item_id = int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    page = text(clients["sup"].get(f"/faq-admin/{item_id}"))
    assert "下書き" in page and "印鑑登録に必要なものは" in page
    assert '<a href="https://example.org/apply?a=1&amp;b=2" rel="noopener noreferrer">' in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert 'href="javascript' not in page and "<li>印鑑</li>" in page

    resp = post(clients["sup"], f"/faq-admin/{item_id}/submit",
                {"version": "1", "comment": "確認をお願いします"})
    assert resp.status_code == 303 and head_status(app, item_id) == "submitted"

    queue_page = text(clients["appr"].get("/faq-admin/queue"))
    assert "印鑑登録に必要なものは" in queue_page and "<ins>+質問/表題: 印鑑登録に必要なものは" \
        in queue_page
    rq_queue = Queue(jobs.QUEUE, connection=rds)
    before = rq_queue.count
    resp = post(clients["appr"], f"/faq-admin/{item_id}/approve",
                {"version": "2", "comment": "承認します", "publish": "1", "next": "queue"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/faq-admin/queue")
    assert head_status(app, item_id) == "published"
    assert rq_queue.count == before + 1
    job = rq_queue.jobs[-1]
    assert job.func_name == "faq.jobs.reindex"
    published = with_db(app, lambda db: services.get_published(db, item_id, tenant="city"))
    assert published is not None and published.content.title == "印鑑登録に必要なものは"

    history_page = text(clients["sup"].get(f"/faq-admin/{item_id}"))
    for word in ("承認します", "確認をお願いします", "appr", "公開中"):
        assert word in history_page
    actions = [(r.action, r.actor) for r in audit_rows(app, object_type="faq_item",
                                                       object_id=str(item_id))]
    assert actions == [("faq.create", "sup"), ("faq.submit", "sup"), ("faq.approve", "appr"),
                       ("faq.publish", "appr")]
    for row in audit_rows(app):  # who and what, never the content
        assert "印鑑" not in f"{row.reason}{row.object_id}"


def test_approve_then_publish_separately(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)
    with_db(app, lambda db: services.submit(db, actor("sup"), item_id, expected_version=1))
    resp = post(clients["appr"], f"/faq-admin/{item_id}/approve", {"version": "2"})
    assert resp.status_code == 303 and head_status(app, item_id) == "approved"
    assert "公開" in text(clients["sup"].get(f"/faq-admin/{item_id}"))
    resp = post(clients["sup"], f"/faq-admin/{item_id}/publish", {"version": "3"})
    assert resp.status_code == 303 and head_status(app, item_id) == "published"
    assert [r.action for r in audit_rows(app, action="faq.publish")] == ["faq.publish"]


def test_approver_cannot_approve_own_revision(app: Flask, clients: Clients) -> None:
    resp = post(clients["both"], "/faq-admin/new", FAQ_FORM)
    item_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert post(clients["both"], f"/faq-admin/{item_id}/submit",
                {"version": "1"}).status_code == 303
    page = text(clients["both"].get(f"/faq-admin/{item_id}"))
    assert "別の承認者が承認" in page  # the page says so before the attempt
    resp = post(clients["both"], f"/faq-admin/{item_id}/approve", {"version": "2"})
    assert resp.status_code == 403
    assert "自分が作成した版は承認できません" in text(resp)
    assert head_status(app, item_id) == "submitted"
    failed = audit_rows(app, action="faq.approve")
    assert [r.outcome for r in failed] == ["failed"]
    assert post(clients["appr"], f"/faq-admin/{item_id}/approve",
                {"version": "2"}).status_code == 303


def test_return_needs_a_comment_and_is_kept(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)
    with_db(app, lambda db: services.submit(db, actor("sup"), item_id, expected_version=1))
    resp = post(clients["appr"], f"/faq-admin/{item_id}/return", {"version": "2"})
    assert resp.status_code == 422 and "差戻しの理由" in text(resp)
    resp = post(clients["appr"], f"/faq-admin/{item_id}/return",
                {"version": "2", "comment": "手数料を追記してください"})
    assert resp.status_code == 303 and head_status(app, item_id) == "returned"
    page = text(clients["sup"].get(f"/faq-admin/{item_id}"))
    assert "手数料を追記してください" in page and "差戻し" in page
    # the editor revises the returned revision and submits again
    resp = post(clients["sup"], f"/faq-admin/{item_id}/edit",
                {**FAQ_FORM, "title": "住民票の写しはどこで取れますか",
                 "body": "市民課で。手数料は300円です。", "version": "3",
                 "reason": "手数料を追記"})
    assert resp.status_code == 303 and head_status(app, item_id) == "draft"
    assert "手数料は300円" in text(clients["sup"].get(f"/faq-admin/{item_id}"))
    assert [r.outcome for r in audit_rows(app, action="faq.return")] == ["failed", "ok"]


def test_concurrent_edit_is_refused(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)
    form_a = text(clients["sup"].get(f"/faq-admin/{item_id}/edit"))
    form_b = text(clients["adm"].get(f"/faq-admin/{item_id}/edit"))
    version = re.search(r'name="version" value="(\d+)"', form_a)
    assert version and version.group(1) == "1" and 'name="version" value="1"' in form_b
    first = post(clients["sup"], f"/faq-admin/{item_id}/edit",
                 {**FAQ_FORM, "body": "先に保存", "version": "1"})
    assert first.status_code == 303
    second = post(clients["adm"], f"/faq-admin/{item_id}/edit",
                  {**FAQ_FORM, "body": "後から保存した本文", "version": "1"})
    assert second.status_code == 409
    page = text(second)
    assert "他の人が先に更新しました" in page and "後から保存した本文" in page  # kept
    assert post(clients["adm"], f"/faq-admin/{item_id}/submit",
                {"version": "1"}).status_code == 409
    assert head_status(app, item_id) == "draft"


@pytest.mark.parametrize(("change", "message"), [
    ({"title": ""}, "質問を入力してください"),
    ({"body": ""}, "回答を入力してください"),
    ({"reason": ""}, "変更理由を入力してください"),
    ({"channels": "fax"}, "一覧から選んでください"),
    ({"title": "あ" * 501}, "500文字以内"),
    ({"category": "a\x00b"}, "制御文字"),
    ({"body": "改行は可\n\x00は不可"}, "制御文字"),
    ({"body": "[リンク](ftp://example.org/x)"}, "https:// で始まるURL"),
])
def test_bad_form_input(app: Flask, clients: Clients, change: dict[str, str],
                        message: str) -> None:
    resp = post(clients["sup"], "/faq-admin/new", {**FAQ_FORM, **change})
    assert resp.status_code in (400, 422)
    assert message in text(resp)
    assert with_db(app, lambda db: db.scalar(select(func.count(FaqItem.id)))) == 0


def test_bad_workflow_input(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)
    for version in ("", "abc", "-1"):
        resp = post(clients["sup"], f"/faq-admin/{item_id}/submit", {"version": version})
        assert resp.status_code == 400 and "読み込み直して" in text(resp)
    resp = post(clients["sup"], f"/faq-admin/{item_id}/submit",
                {"version": "1", "comment": "x" * 1001})
    assert resp.status_code == 400 and "1000文字" in text(resp)
    resp = post(clients["sup"], f"/faq-admin/{item_id}/submit",
                {"version": "1", "comment": "a\x00b"})
    assert resp.status_code == 400 and "制御文字" in text(resp)
    resp = post(clients["sup"], f"/faq-admin/{item_id}/publish", {"version": "1"})
    assert resp.status_code == 409 and "市が承認した版だけ" in text(resp)
    resp = clients["sup"].get("/faq-admin/?status=nope&q=" + "x" * 300)
    assert resp.status_code == 400 and "一覧から選んでください" in text(resp)
    assert head_status(app, item_id) == "draft"


def test_shared_items_only_by_administrators(app: Flask, clients: Clients) -> None:
    resp = post(clients["sup"], "/faq-admin/new", {**FAQ_FORM, "shared": "1"})
    assert resp.status_code == 403 and "全団体共通" in text(resp)
    resp = post(clients["adm"], "/faq-admin/new", {**FAQ_FORM, "shared": "1"})
    assert resp.status_code == 303
    item_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert with_db(app, lambda db: db.get(FaqItem, item_id).tenant_id) is None
    assert "印鑑登録に必要なものは" in text(clients["townsup"].get(f"/faq-admin/{item_id}"))


def test_filters(app: Flask, clients: Clients) -> None:
    make_item(app, "住民票の写しはどこで取れますか", "市民課です。")
    other = make_item(app, "戸籍謄本の郵送請求", "本籍地へ郵送で。")
    with_db(app, lambda db: services.submit(db, actor("sup"), other, expected_version=1))
    page = text(clients["sup"].get("/faq-admin/?q=郵送"))
    assert "戸籍謄本の郵送請求" in page and "住民票の写し" not in page
    page = text(clients["sup"].get("/faq-admin/?status=draft"))
    assert "住民票の写し" in page and "戸籍謄本" not in page
    page = text(clients["sup"].get("/faq-admin/?category=住民票&department=住民記録&channel=phone"))
    assert "住民票の写し" in page and "戸籍謄本" in page
    assert "戸籍謄本" not in text(clients["sup"].get("/faq-admin/?kind=manual"))


def test_withdraw_and_discard(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)

    def live(db: Any) -> None:
        services.submit(db, actor("sup"), item_id, expected_version=1)
        services.approve(db, actor("appr"), item_id, expected_version=2)
        services.publish(db, actor("appr"), item_id, expected_version=3)

    with_db(app, live)
    resp = post(clients["sup"], f"/faq-admin/{item_id}/withdraw", {"version": "4"})
    assert resp.status_code == 422 and "公開停止の理由" in text(resp)
    resp = post(clients["sup"], f"/faq-admin/{item_id}/withdraw",
                {"version": "4", "comment": "制度廃止"})
    assert resp.status_code == 303 and head_status(app, item_id) == "draft"
    resp = post(clients["sup"], f"/faq-admin/{item_id}/discard", {"version": "5"})
    assert resp.status_code == 303
    assert with_db(app, lambda db: services.get_published(db, item_id, tenant="city"))
    page = text(clients["sup"].get(f"/faq-admin/{item_id}"))
    assert "破棄" in page and "公開停止" in page


def test_changes_to_report(app: Flask, clients: Clients) -> None:
    form = {**FAQ_FORM, "requested_by_city": ""}
    resp = post(clients["sup"], "/faq-admin/new", form)
    item_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert "印鑑登録に必要なものは" not in text(clients["appr"].get("/faq-admin/reports"))
    post(clients["sup"], f"/faq-admin/{item_id}/submit", {"version": "1"})
    page = text(clients["appr"].get("/faq-admin/reports"))
    assert "印鑑登録に必要なものは" in page
    rev_id = with_db(app, lambda db: db.get(FaqItem, item_id).head_revision_id)
    assert post(clients["sup"], f"/faq-admin/reports/{rev_id}/acknowledge").status_code == 403
    resp = post(clients["appr"], f"/faq-admin/reports/{rev_id}/acknowledge",
                {"comment": "確認"})
    assert resp.status_code == 303
    assert "印鑑登録に必要なものは" not in text(clients["appr"].get("/faq-admin/reports"))
    again = post(clients["appr"], f"/faq-admin/reports/{rev_id}/acknowledge",
                 follow_redirects=True)
    assert "確認済み" in text(again)
    assert post(clients["appr"], "/faq-admin/reports/999999/acknowledge").status_code == 404
    assert [r.action for r in audit_rows(app, action="faq.acknowledge")] == \
        ["faq.acknowledge"]


def test_manual_with_sections(app: Flask, clients: Clients) -> None:
    form = {"title": "着信時の操作", "manual_type": "operation", "body": "",
            "section_heading": ["受話", "保留", ""],
            "section_body": ["応答を押す", "保留を押す", ""],
            "channels": "phone", "reason": "新規作成", "requested_by_city": "1"}
    resp = post(clients["sup"], "/faq-admin/new?kind=manual", {**form, "kind": "manual"})
    assert resp.status_code == 303, text(resp)
    item_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    view = with_db(app, lambda db: services.get_item(db, actor("sup"), item_id))
    assert view.kind == "manual"
    assert view.head.content.sections == (("受話", "応答を押す"), ("保留", "保留を押す"))
    page = text(clients["sup"].get(f"/faq-admin/{item_id}"))
    assert "操作マニュアル" in page and "<h3>保留</h3>" in page
    edit_page = text(clients["sup"].get(f"/faq-admin/{item_id}/edit"))
    assert 'value="受話"' in edit_page and edit_page.count('name="section_heading"') == 4
    bad = post(clients["sup"], "/faq-admin/new",
               {**form, "kind": "manual", "section_heading": ["", ""],
                "section_body": ["本文だけ", ""]})
    assert bad.status_code == 400 and "見出しが必要" in text(bad)
    bad = post(clients["sup"], "/faq-admin/new", {**form, "kind": "manual",
                                                  "manual_type": "x"})
    assert bad.status_code == 400 and "一覧から選んでください" in text(bad)
    assert "着信時の操作" in text(clients["sup"].get("/faq-admin/?kind=manual"))


def test_index_status_is_shown(app: Flask, clients: Clients, rds: Any) -> None:
    assert "まだ作成されていません" in text(clients["sup"].get("/faq-admin/"))
    with resources(app).factory() as db:
        jobs.rebuild(db, rds, prefix=resources(app).settings.redis.prefix, encoder=None)
    page = text(clients["sup"].get("/faq-admin/"))
    assert re.search(r"検索索引: 第\d+世代", page)


# ---------------------------------------------------------------- import / export


def upload(client: FlaskClient, name: str, data: bytes, requested: bool = True) -> Any:
    return post(client, "/faq-admin/import",
                {"file": (io.BytesIO(data), name),
                 "requested_by_city": "1" if requested else ""},
                content_type="multipart/form-data")


CSV_OK = ("\ufeff質問,回答,カテゴリ,チャネル\r\n"
          "転入届の期限は,引っ越してから14日以内です。,転入,両方\r\n"
          "転出届はどこで,市民課です。,転出,電話\r\n").encode()


def count_items(app: Flask) -> int:
    return int(with_db(app, lambda db: db.scalar(select(func.count(FaqItem.id)))))


def test_import_round_trip_csv(app: Flask, clients: Clients) -> None:
    resp = upload(clients["sup"], "faq.csv", CSV_OK)
    assert resp.status_code == 200 and "新規 2 件" in text(resp), text(resp)
    assert count_items(app) == 2
    export = clients["sup"].get("/faq-admin/export?format=csv&scope=working")
    assert export.status_code == 200 and export.data.startswith(b"\xef\xbb\xbf")
    assert "attachment" in export.headers["Content-Disposition"]
    assert "転入届の期限は" in export.data.decode("utf-8-sig")
    again = upload(clients["sup"], "faq.csv", export.data)
    assert again.status_code == 200 and "変更なし 2 件" in text(again)
    assert count_items(app) == 2
    published = clients["appr"].get("/faq-admin/export?format=csv&scope=published")
    assert "転入届" not in published.data.decode("utf-8-sig")  # drafts are not published
    actions = [(r.action, r.outcome) for r in audit_rows(app, action="faq.import")]
    assert actions == [("faq.import", "ok"), ("faq.import", "ok")]
    assert audit_rows(app, action="faq.export")


def test_import_round_trip_xlsx(app: Flask, clients: Clients) -> None:
    make_item(app)
    export = clients["sup"].get("/faq-admin/export?format=xlsx&scope=working")
    assert export.status_code == 200
    sheet = load_workbook(io.BytesIO(export.data))["FAQ"]
    assert sheet.max_row == 2
    sheet.cell(row=3, column=1, value=None)
    headers = [c.value for c in sheet[1]]
    sheet.cell(row=3, column=headers.index("質問") + 1, value="新しい質問")
    sheet.cell(row=3, column=headers.index("回答") + 1, value="新しい回答")
    out = io.BytesIO()
    sheet.parent.save(out)
    resp = upload(clients["sup"], "faq.xlsx", out.getvalue())
    assert resp.status_code == 200 and "新規 1 件" in text(resp) and "変更なし 1 件" in text(resp)
    assert count_items(app) == 2


def test_bad_import_changes_nothing(app: Flask, clients: Clients) -> None:
    bad = ("\ufeff質問,回答,チャネル\r\n"
           "転入届の期限は,14日以内です。,両方\r\n"
           ",回答だけ,両方\r\n"
           "転出届,市民課,ファクス\r\n").encode()
    resp = upload(clients["sup"], "faq.csv", bad)
    assert resp.status_code == 422
    page = text(resp)
    assert "3行目" in page and "4行目" in page and "取り込みませんでした" in page
    assert "2行目" not in page  # the good row is not listed
    assert count_items(app) == 0
    for name, data in (("faq.xlsx", b"not a zip"), ("faq.csv", b"\xff\xfe\x00\x81"),
                       ("faq.csv", b"")):
        resp = upload(clients["sup"], name, data)
        assert resp.status_code in (400, 422) and "行目" in text(resp), name
    assert upload(clients["sup"], "faq.pdf", b"%PDF").status_code == 400
    assert post(clients["sup"], "/faq-admin/import", {}).status_code == 400
    assert count_items(app) == 0
    assert {r.outcome for r in audit_rows(app, action="faq.import")} == {"failed"}
    assert clients["sup"].get("/faq-admin/export?format=pdf").status_code == 303


# ---------------------------------------------------------------- rendering


def test_render_body_allows_only_a_safe_subset() -> None:
    html = str(render_body(
        '<b onclick="x()">太字</b>\n[市](https://city.example/a"b) [x](javascript:alert(1))'
        "\n\n- 一\n・二\n\n[http](http://example.org/p)"))
    assert not re.search(r"<b[ >]", html) and "&lt;b onclick=&#34;x()&#34;&gt;" in html
    assert '<a href="https://city.example/a&#34;b" rel="noopener noreferrer">市</a>' in html
    assert "javascript:" in html and 'href="javascript' not in html
    assert "<ul><li>一</li><li>二</li></ul>" in html
    assert '<a href="http://example.org/p"' in html
    assert set(re.findall(r"<(\w+)", html)) <= {"p", "br", "ul", "li", "a"}


def test_english_second(app: Flask, clients: Clients) -> None:
    item_id = make_item(app)
    page = text(clients["sup"].get(f"/faq-admin/{item_id}?lang=en"))
    assert "Submit for approval" in page and "Changes against the published revision" in page
    page = text(clients["sup"].get("/faq-admin/"))  # the choice is kept in the session
    assert "FAQ and manuals" in page and "Draft" in page and "下書き" not in page
    japanese = text(clients["adm"].get("/faq-admin/"))
    assert "FAQ・マニュアル" in japanese and "下書き" in japanese
