from __future__ import annotations

import time

import pyotp
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.web.conftest import PASSWORD, MakeUser, audit_rows, csrf, login
from web.db import resources


def test_login_page_is_japanese(client: FlaskClient) -> None:
    resp = client.get("/auth/login")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert '<html lang="ja">' in page
    assert "ユーザー名" in page and "パスワード" in page


def test_login_and_logout(app: Flask, client: FlaskClient, make_user: MakeUser,
                          rds: redis.Redis) -> None:
    user = make_user("taro", {"operator"})
    resp = login(client, "taro")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "ログアウト" in page
    assert client.get("/auth/account").status_code == 200
    [entry] = audit_rows(app, action="auth.login")
    assert entry.actor == "taro" and entry.actor_id == user.id and entry.outcome == "ok"
    assert entry.remote_addr == "127.0.0.1" and entry.tenant_id == "city"
    assert len(list(rds.scan_iter(match="mado:user:*:sessions"))) == 1

    token = csrf(client, "/")
    resp = client.post("/auth/logout", data={"csrf_token": token})
    assert resp.status_code == 302
    assert "ログアウトしました" in client.get("/auth/login").get_data(as_text=True)
    resp = client.get("/auth/account")
    assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"]
    assert audit_rows(app, action="auth.logout")
    assert rds.scard(f"mado:user:{user.id}:sessions") == 0


def test_logout_needs_post(client: FlaskClient) -> None:
    assert client.get("/auth/logout").status_code == 405


def test_wrong_password_and_unknown_user_look_the_same(app: Flask, client: FlaskClient,
                                                        make_user: MakeUser) -> None:
    make_user("taro")
    bad = login(client, "taro", "wrong-password-123")
    unknown = login(client, "nobody", "wrong-password-123")
    for resp in (bad, unknown):
        assert resp.status_code == 401
        assert "ユーザー名またはパスワードが正しくありません。" in resp.get_data(as_text=True)
    rows = audit_rows(app, action="auth.login")
    assert [(r.outcome, r.reason) for r in rows] == [("failed", "bad_password"),
                                                    ("failed", "unknown_user")]
    # the typed user name of an unknown account is not stored, nor any password
    assert rows[1].actor == ""
    for r in rows:
        assert "wrong-password" not in " ".join(str(v) for v in vars(r).values())


def test_empty_login_form_gives_japanese_errors(client: FlaskClient) -> None:
    token = csrf(client, "/auth/login")
    resp = client.post("/auth/login", data={"csrf_token": token})
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert "ユーザー名を入力してください。" in page
    assert "パスワードを入力してください。" in page
    assert 'aria-invalid="true"' in page


def test_failures_hold_off_only_the_computer_that_failed(app: Flask, client: FlaskClient,
                                                        make_user: MakeUser) -> None:
    make_user("taro")
    for _ in range(5):
        assert login(client, "taro", "wrong-password-123").status_code == 401
    resp = login(client, "taro")  # the right password, from the computer that failed
    assert resp.status_code == 429
    assert "失敗が多すぎます" in resp.get_data(as_text=True)
    usual = app.test_client()
    usual.environ_base["REMOTE_ADDR"] = "10.20.30.40"
    assert login(usual, "taro").headers["Location"] == "/"  # the usual computer: never
    reasons = [r.reason for r in audit_rows(app, action="auth.login")]
    assert reasons[-3:] == ["locked_now", "locked", ""]


def test_throttle_per_address(client: FlaskClient) -> None:
    statuses = [login(client, f"ghost{i}", "wrong-password-123").status_code
                for i in range(21)]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    assert "失敗が多すぎます" in login(client, "ghost", "x").get_data(as_text=True)


def test_disabled_user_cannot_log_in(app: Flask, client: FlaskClient,
                                     make_user: MakeUser) -> None:
    make_user("taro", active=False)
    resp = login(client, "taro")
    assert resp.status_code == 401
    assert [r.reason for r in audit_rows(app, action="auth.login")] == ["disabled"]


def test_next_is_followed_only_when_local(client: FlaskClient, make_user: MakeUser) -> None:
    make_user("admin", {"administrator"})
    resp = client.get("/admin/users")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/auth/login?next=/admin/users")
    token = csrf(client, "/auth/login")
    resp = client.post("/auth/login", data={"username": "admin", "password": PASSWORD,
                                            "next": "//evil.invalid/x", "csrf_token": token})
    assert resp.headers["Location"] == "/"
    client.post("/auth/logout", data={"csrf_token": csrf(client)})
    token = csrf(client, "/auth/login")
    resp = client.post("/auth/login", data={"username": "admin", "password": PASSWORD,
                                            "next": "/admin/users", "csrf_token": token})
    assert resp.headers["Location"] == "/admin/users"


def test_must_change_password(app: Flask, make_user: MakeUser) -> None:
    make_user("taro", must_change_password=True)
    other = app.test_client()
    login(other, "taro")
    client = app.test_client()
    resp = login(client, "taro")
    assert resp.headers["Location"] == "/auth/password"
    resp = client.get("/auth/account")
    assert resp.headers["Location"] == "/auth/password"
    token = csrf(client, "/auth/password")
    resp = client.post("/auth/password", data={
        "current_password": PASSWORD, "new_password": "short", "new_password2": "short",
        "csrf_token": token})
    assert resp.status_code == 400
    assert "12文字以上" in resp.get_data(as_text=True)
    resp = client.post("/auth/password", data={
        "current_password": PASSWORD, "new_password": "a-much-better-secret-9",
        "new_password2": "a-different-secret-9", "csrf_token": token})
    assert "一致しません" in resp.get_data(as_text=True)
    resp = client.post("/auth/password", data={
        "current_password": PASSWORD, "new_password": "a-much-better-secret-9",
        "new_password2": "a-much-better-secret-9", "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/auth/account"
    assert client.get("/auth/account").status_code == 200
    # the other session of the same user was ended by the change
    assert other.get("/auth/account").status_code == 302
    assert login(app.test_client(), "taro", "a-much-better-secret-9").status_code == 302


def test_password_change_wrong_current(client: FlaskClient, make_user: MakeUser) -> None:
    make_user("taro")
    login(client, "taro")
    token = csrf(client, "/auth/password")
    resp = client.post("/auth/password", data={
        "current_password": "not-the-password", "new_password": "a-much-better-secret-9",
        "new_password2": "a-much-better-secret-9", "csrf_token": token})
    assert resp.status_code == 400
    assert "現在のパスワードが正しくありません。" in resp.get_data(as_text=True)


def _enrol(client: FlaskClient) -> str:
    page = client.get("/auth/totp/setup").get_data(as_text=True)
    secret = page.split('<p class="secret" translate="no">', 1)[1].split("</p>", 1)[0]
    secret = secret.replace(" ", "")
    token = csrf(client, "/")
    resp = client.post("/auth/totp/setup", data={"code": "000000", "csrf_token": token})
    if resp.status_code == 302:  # 000000 happened to be right: extremely unlikely
        return secret
    assert resp.status_code == 400
    assert "コードが正しくありません" in resp.get_data(as_text=True)
    # the previous step's code, so that the log-in below can use the current one
    code = pyotp.TOTP(secret).at(time.time() - 30)
    resp = client.post("/auth/totp/setup", data={"code": code, "csrf_token": token})
    assert resp.status_code == 302
    return secret


def test_totp_enrolment_and_login(app: Flask, client: FlaskClient,
                                  make_user: MakeUser) -> None:
    make_user("taro")
    login(client, "taro")
    secret = _enrol(client)
    assert "オン" in client.get("/auth/account").get_data(as_text=True)
    assert audit_rows(app, action="auth.totp_enrol")

    fresh = app.test_client()
    resp = login(fresh, "taro")
    assert resp.headers["Location"] == "/auth/totp"
    assert fresh.get("/auth/account").status_code == 302  # not logged in yet
    token = csrf(fresh, "/auth/totp")
    resp = fresh.post("/auth/totp", data={"code": "12345", "csrf_token": token})
    assert resp.status_code == 401
    code = pyotp.TOTP(secret).now()
    resp = fresh.post("/auth/totp", data={"code": code, "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert fresh.get("/auth/account").status_code == 200

    # the same code cannot be used twice
    again = app.test_client()
    login(again, "taro")
    resp = again.post("/auth/totp", data={"code": code, "csrf_token": csrf(again, "/auth/totp")})
    assert resp.status_code == 401
    assert [r.reason for r in audit_rows(app, action="auth.totp")] == ["bad_code", "bad_code"]


def test_totp_disable_needs_password(app: Flask, client: FlaskClient,
                                     make_user: MakeUser) -> None:
    make_user("taro")
    login(client, "taro")
    _enrol(client)
    token = csrf(client, "/")
    resp = client.post("/auth/totp/disable", data={"password": "nope", "csrf_token": token})
    assert resp.status_code == 400
    resp = client.post("/auth/totp/disable", data={"password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302
    assert "オフ" in client.get("/auth/account").get_data(as_text=True)


def test_totp_page_without_pending_login(client: FlaskClient) -> None:
    resp = client.get("/auth/totp")
    assert resp.status_code == 302 and resp.headers["Location"] == "/auth/login"


def test_totp_failures_hold_off_that_computer(app: Flask, make_user: MakeUser) -> None:
    make_user("taro")
    client = app.test_client()
    login(client, "taro")
    _enrol(client)
    fresh = app.test_client()
    login(fresh, "taro")
    token = csrf(fresh, "/auth/totp")
    for _ in range(4):
        assert fresh.post("/auth/totp", data={"code": "000001", "csrf_token": token}
                          ).status_code in (401, 302)
    resp = fresh.post("/auth/totp", data={"code": "000002", "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/auth/login"
    assert login(app.test_client(), "taro").status_code == 429  # this computer failed
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "10.20.30.40"
    assert login(elsewhere, "taro").headers["Location"] == "/auth/totp"


def test_production_hasher_is_argon2id(app: Flask) -> None:
    from web.accounts import make_hasher

    hashed = make_hasher().hash(PASSWORD)
    assert hashed.startswith("$argon2id$") and "m=65536,t=3,p=4" in hashed
    with app.app_context():
        assert resources(app).settings.web.secret_key
