from __future__ import annotations

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from common.models.accounts import ROLES, User
from tests.web.conftest import PASSWORD, MakeUser, audit_rows, csrf, login
from web.db import resources

# Every administrator route, as (method, path template); {id} is a user id.
ADMIN_ROUTES = [
    ("GET", "/admin/"),
    ("GET", "/admin/users"),
    ("GET", "/admin/users/new"),
    ("POST", "/admin/users/new"),
    ("GET", "/admin/users/{id}"),
    ("POST", "/admin/users/{id}"),
    ("POST", "/admin/users/{id}/disable"),
    ("POST", "/admin/users/{id}/enable"),
    ("POST", "/admin/users/{id}/password"),
    ("POST", "/admin/users/{id}/sessions/end"),
    ("POST", "/admin/users/{id}/totp/reset"),
    ("POST", "/admin/users/{id}/unlock"),
    ("GET", "/admin/audit"),
]


def _get_user(app: Flask, user_id: int) -> User:
    with resources(app).factory() as db:
        user = db.get(User, user_id)
        assert user is not None
        _ = user.roles
        db.expunge(user)
        return user


def test_route_table_is_complete(app: Flask) -> None:
    rules = {(m, r.rule.replace("<int:user_id>", "{id}"))
             for r in app.url_map.iter_rules() if r.endpoint.startswith("admin.")
             for m in (r.methods or set()) - {"HEAD", "OPTIONS"}}
    assert rules == set(ADMIN_ROUTES)


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_anonymous_is_sent_to_login(app: Flask, make_user: MakeUser, method: str,
                                    path: str) -> None:
    target = make_user("taro")
    client = app.test_client()
    token = csrf(client, "/auth/login")
    url = path.format(id=target.id)
    resp = client.open(url, method=method, data={"csrf_token": token})
    if method == "GET":
        assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"]
    else:
        assert resp.status_code == 401
        assert "ログインしてください" in resp.get_data(as_text=True)


@pytest.mark.parametrize("role", [r for r in ROLES if r != "administrator"])
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_other_roles_are_refused_and_audited(app: Flask, make_user: MakeUser, role: str,
                                             method: str, path: str) -> None:
    target = make_user("taro")
    make_user("someone", {role}, extension="2001" if role == "staff" else None)
    client = app.test_client()
    login(client, "someone")
    url = path.format(id=target.id)
    resp = client.open(url, method=method, data={"csrf_token": csrf(client)})
    assert resp.status_code == 403
    assert "権限がありません" in resp.get_data(as_text=True)
    [row] = audit_rows(app, action="access.denied")
    assert row.actor == "someone" and row.reason == "role" and row.outcome == "denied"


@pytest.mark.parametrize(("method", "path"), [r for r in ADMIN_ROUTES if "{id}" in r[1]])
def test_admin_of_another_tenant_cannot_see_users(app: Flask, make_user: MakeUser,
                                                  method: str, path: str) -> None:
    target = make_user("taro")
    make_user("townadmin", {"administrator"}, tenant_id="town")
    client = app.test_client()
    login(client, "townadmin")
    resp = client.open(path.format(id=target.id), method=method,
                       data={"csrf_token": csrf(client)})
    assert resp.status_code == 404
    [row] = audit_rows(app, action="access.denied")
    assert row.reason == "tenant" and row.object_type == "user"
    assert row.object_id == str(target.id)
    assert _get_user(app, target.id).active  # nothing changed


def test_user_list_shows_only_own_tenant(admin_client: FlaskClient,
                                         make_user: MakeUser) -> None:
    make_user("taro")
    make_user("jiro", tenant_id="town")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert "taro" in page and "jiro" not in page


def test_unknown_user_is_404(admin_client: FlaskClient) -> None:
    assert admin_client.get("/admin/users/99999").status_code == 404


def _new(client: FlaskClient, **data: object) -> tuple[int, str]:
    form = {"csrf_token": csrf(client, "/admin/users/new"), **data}
    resp = client.post("/admin/users/new", data=form)
    return resp.status_code, resp.get_data(as_text=True)


def test_create_operator_with_generated_password(app: Flask, admin_client: FlaskClient) -> None:
    status, page = _new(admin_client, username="Hanako", display_name="山田 花子",
                        roles=["operator"], sip_endpoint="op03")
    assert status == 200, page
    assert "ユーザーを作成しました。" in page
    password = page.split('<p class="secret">', 1)[1].split("</p>", 1)[0].strip()
    with resources(app).factory() as db:
        from sqlalchemy import select

        user = db.scalar(select(User).where(User.username == "hanako"))
        assert user is not None
        assert user.roles == {"operator"} and user.sip_endpoint == "op03"
        assert user.extension == "1003" and user.tenant_id == "city"
        assert user.must_change_password and user.display_name == "山田 花子"
        assert password not in user.password_hash
    [row] = audit_rows(app, action="user.create")
    assert row.actor == "admin" and row.object_id == str(user.id)
    fresh = app.test_client()
    assert login(fresh, "hanako", password).headers["Location"] == "/auth/password"


def test_create_staff_needs_extension_of_own_tenant(admin_client: FlaskClient) -> None:
    status, page = _new(admin_client, username="staff1", roles=["staff"], extension="3001")
    assert status == 400
    assert "職員の内線番号を選んでください。" in page
    status, page = _new(admin_client, username="staff1", roles=["staff"], extension="2101")
    assert status == 200, page


@pytest.mark.parametrize(("data", "message"), [
    ({"username": "", "roles": ["approver"]}, "ユーザー名を入力してください。"),
    ({"username": "x", "roles": ["approver"]}, "半角英小文字"),
    ({"username": "山田", "roles": ["approver"]}, "半角英小文字"),
    ({"username": "admin", "roles": ["approver"]}, "すでに使われています"),
    ({"username": "newbie"}, "役割を1つ以上選んでください。"),
    ({"username": "newbie", "roles": ["nonsense"]}, "役割を1つ以上選んでください。"),
    ({"username": "newbie", "roles": ["operator"]}, "ソフトフォンを選んでください"),
    ({"username": "newbie", "roles": ["operator"], "sip_endpoint": "op99"},
     "ソフトフォンを選んでください"),
    ({"username": "newbie", "roles": ["operator", "staff"], "sip_endpoint": "op01",
      "extension": "2001"}, "同時に設定することはできません"),
    ({"username": "newbie", "roles": ["approver"], "password": "short"}, "12文字以上"),
    ({"username": "newbie", "roles": ["approver"], "password": "newbie-password-1"},
     "ユーザー名を含めないでください"),
    ({"username": "newbie", "roles": ["approver"], "display_name": "a\x00b"},
     "使用できない文字"),
    ({"username": "newbie", "roles": ["approver"], "display_name": "長" * 129},
     "128文字以内"),
])
def test_create_user_bad_input(admin_client: FlaskClient, data: dict[str, object],
                               message: str) -> None:
    status, page = _new(admin_client, **data)
    assert status == 400
    assert message in page
    assert 'aria-invalid="true"' in page or 'class="field-error"' in page


def test_edit_user(app: Flask, admin_client: FlaskClient, make_user: MakeUser) -> None:
    target = make_user("taro")
    page = admin_client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    assert "taro" in page
    assert audit_rows(app, action="user.view")
    resp = admin_client.post(f"/admin/users/{target.id}", data={
        "csrf_token": csrf(admin_client), "display_name": "佐藤 太郎",
        "roles": ["staff", "approver"], "extension": "2201", "username": "ignored"})
    assert resp.status_code == 302
    user = _get_user(app, target.id)
    assert user.roles == {"staff", "approver"} and user.extension == "2201"
    assert user.department_id == "mynumber" and user.sip_endpoint is None
    assert user.username == "taro" and user.display_name == "佐藤 太郎"
    assert audit_rows(app, action="user.update")


def test_admin_cannot_lock_themselves_out(app: Flask, admin_client: FlaskClient) -> None:
    me = next(r for r in audit_rows(app, action="auth.login")).actor_id
    resp = admin_client.post(f"/admin/users/{me}", data={
        "csrf_token": csrf(admin_client), "roles": ["supervisor"]})
    assert resp.status_code == 400
    assert "外すことはできません" in resp.get_data(as_text=True)
    resp = admin_client.post(f"/admin/users/{me}/disable",
                             data={"csrf_token": csrf(admin_client)}, follow_redirects=True)
    assert "自分のアカウントを無効にすることはできません。" in resp.get_data(as_text=True)
    assert _get_user(app, me).active


def test_disable_ends_sessions_and_enable(app: Flask, admin_client: FlaskClient,
                                          make_user: MakeUser) -> None:
    target = make_user("taro")
    victim = app.test_client()
    login(victim, "taro")
    assert victim.get("/auth/account").status_code == 200
    resp = admin_client.post(f"/admin/users/{target.id}/disable",
                             data={"csrf_token": csrf(admin_client)})
    assert resp.status_code == 302
    assert victim.get("/auth/account").status_code == 302
    assert login(app.test_client(), "taro").status_code == 401
    admin_client.post(f"/admin/users/{target.id}/enable",
                      data={"csrf_token": csrf(admin_client)})
    assert login(app.test_client(), "taro").status_code == 302
    actions = [r.action for r in audit_rows(app, object_type="user")]
    assert "user.disable" in actions and "user.enable" in actions


def test_reset_password(app: Flask, admin_client: FlaskClient, make_user: MakeUser) -> None:
    target = make_user("taro")
    victim = app.test_client()
    login(victim, "taro")
    resp = admin_client.post(f"/admin/users/{target.id}/password",
                             data={"csrf_token": csrf(admin_client)})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "パスワードを再設定しました。" in page
    new_password = page.split('<p class="secret">', 1)[1].split("</p>", 1)[0].strip()
    assert resp.headers["Cache-Control"] == "no-store"
    assert victim.get("/auth/account").status_code == 302
    assert login(app.test_client(), "taro").status_code == 401
    assert login(app.test_client(), "taro", new_password).headers["Location"] == "/auth/password"
    assert audit_rows(app, action="user.password_reset")


def test_end_sessions_one_and_all(app: Flask, admin_client: FlaskClient, make_user: MakeUser,
                                  rds: redis.Redis) -> None:
    target = make_user("taro")
    first, second = app.test_client(), app.test_client()
    login(first, "taro")
    login(second, "taro")
    page = admin_client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    handles = [p.split('"', 1)[0] for p in page.split('name="session" value="')[1:]]
    assert len(handles) == 2
    for sid in rds.smembers(f"mado:user:{target.id}:sessions"):
        assert sid.decode() not in page  # real session ids are never shown
    resp = admin_client.post(f"/admin/users/{target.id}/sessions/end",
                             data={"csrf_token": csrf(admin_client), "session": handles[0]},
                             follow_redirects=True)
    assert "1件のセッションを終了しました。" in resp.get_data(as_text=True)
    alive = [c.get("/auth/account").status_code for c in (first, second)]
    assert sorted(alive) == [200, 302]
    admin_client.post(f"/admin/users/{target.id}/sessions/end",
                      data={"csrf_token": csrf(admin_client)})
    assert [c.get("/auth/account").status_code for c in (first, second)] == [302, 302]
    assert admin_client.get("/admin/users").status_code == 200  # own session kept
    assert audit_rows(app, action="user.sessions_end")


def test_unlock_and_totp_reset(app: Flask, admin_client: FlaskClient,
                               make_user: MakeUser) -> None:
    target = make_user("taro", totp_secret="JBSWY3DPEHPK3PXP")
    for _ in range(5):
        login(app.test_client(), "taro", "wrong-password-1")
    assert "ロック中" in admin_client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    admin_client.post(f"/admin/users/{target.id}/unlock",
                      data={"csrf_token": csrf(admin_client)})
    admin_client.post(f"/admin/users/{target.id}/totp/reset",
                      data={"csrf_token": csrf(admin_client)})
    user = _get_user(app, target.id)
    assert user.locked_until is None and user.totp_secret is None
    assert login(app.test_client(), "taro", PASSWORD).headers["Location"] == "/"


def test_audit_log_viewer(app: Flask, admin_client: FlaskClient, make_user: MakeUser) -> None:
    make_user("jiro", tenant_id="town")
    login(app.test_client(), "jiro")  # another tenant's log-in: not shown
    login(app.test_client(), "admin", "wrong-password-1")
    page = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "監査ログ" in page and "auth.login" in page and "jiro" not in page
    page = admin_client.get("/admin/audit?outcome=failed").get_data(as_text=True)
    assert "bad_password" in page
    page = admin_client.get("/admin/audit?action=user.&actor=admin").get_data(as_text=True)
    assert "bad_password" not in page
    page = admin_client.get("/admin/audit?since=2000-01-01&until=2000-01-02"
                            ).get_data(as_text=True)
    assert "該当する記録はありません。" in page
    assert audit_rows(app, action="audit.view")


@pytest.mark.parametrize("query", ["since=yesterday", "until=2026-13-01", "outcome=maybe",
                                   "actor=a%00b", "page=abc", "page=-5", "object_id=" + "9" * 500])
def test_audit_log_bad_filters(admin_client: FlaskClient, query: str) -> None:
    resp = admin_client.get(f"/admin/audit?{query}")
    assert resp.status_code in (200, 400)
    if resp.status_code == 400:
        page = resp.get_data(as_text=True)
        assert "年-月-日" in page or "選んでください" in page or "使用できない文字" in page


def test_create_user_race_on_the_same_name(app: Flask, admin_client: FlaskClient,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is free when checked, taken when saved: a clear message, not a 500."""
    from web import accounts

    token = csrf(admin_client, "/admin/users/new")
    real_find = accounts.find_user
    monkeypatch.setattr(accounts, "find_user", lambda db, name: None)
    resp = admin_client.post("/admin/users/new", data={
        "csrf_token": token, "username": "admin", "roles": ["approver"]})
    monkeypatch.setattr(accounts, "find_user", real_find)
    assert resp.status_code == 400
    assert "すでに使われています" in resp.get_data(as_text=True)
