from __future__ import annotations

import dataclasses
import json
import time

import redis
from flask import Flask
from flask.testing import FlaskClient

from common.settings import Settings, settings_override
from tests.web.conftest import FAST_ARGON2, MakeUser, csrf, login
from web import create_app
from web.db import resources
from web.sessions import SessionPolicy


def _only_session(rds: redis.Redis) -> tuple[str, dict]:  # type: ignore[type-arg]
    keys = [k.decode() for k in rds.scan_iter(match="mado:session:*")]
    assert len(keys) == 1, keys
    return keys[0], json.loads(rds.get(keys[0]))  # type: ignore[arg-type]


def _age(rds: redis.Redis, key: str, *, created: float | None = None,
         last: float | None = None) -> None:
    data = json.loads(rds.get(key))  # type: ignore[arg-type]
    if created is not None:
        data["_meta"]["created"] = created
    if last is not None:
        data["_meta"]["last"] = last
    rds.set(key, json.dumps(data), keepttl=True)


def test_session_lives_in_redis_under_the_prefix(client: FlaskClient, make_user: MakeUser,
                                                 rds: redis.Redis) -> None:
    make_user("taro")
    login(client, "taro")
    key, data = _only_session(rds)
    sid = key.rsplit(":", 1)[1]
    cookie = client.get_cookie("mado_session")
    assert cookie is not None and cookie.value == sid
    assert isinstance(data["uid"], int)
    assert 0 < rds.ttl(key) <= 30 * 60 + 1
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure


def test_login_gives_a_fresh_session_id(client: FlaskClient, make_user: MakeUser,
                                        rds: redis.Redis) -> None:
    make_user("taro")
    csrf(client, "/auth/login")
    before = client.get_cookie("mado_session")
    assert before is not None
    login(client, "taro")
    after = client.get_cookie("mado_session")
    assert after is not None and after.value != before.value
    assert rds.get(f"mado:session:{before.value}") is None


def test_idle_timeout(client: FlaskClient, make_user: MakeUser, rds: redis.Redis) -> None:
    make_user("taro")
    login(client, "taro")
    key, _ = _only_session(rds)
    _age(rds, key, last=time.time() - 31 * 60)
    resp = client.get("/auth/account")
    assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "セッションの有効期限が切れました" in page
    assert rds.get(key) is None


def test_absolute_timeout(client: FlaskClient, make_user: MakeUser, rds: redis.Redis) -> None:
    make_user("taro")
    login(client, "taro")
    key, _ = _only_session(rds)
    _age(rds, key, created=time.time() - 13 * 3600)  # active, but too old
    assert client.get("/auth/account").status_code == 302


def test_activity_keeps_the_session(client: FlaskClient, make_user: MakeUser,
                                    rds: redis.Redis) -> None:
    make_user("taro")
    login(client, "taro")
    key, _ = _only_session(rds)
    _age(rds, key, last=time.time() - 29 * 60)
    assert client.get("/auth/account").status_code == 200
    assert time.time() - _only_session(rds)[1]["_meta"]["last"] < 5


def test_policy_reads_settings(settings: Settings) -> None:
    assert SessionPolicy.from_settings(settings) == SessionPolicy(30 * 60, 12 * 3600)

    @dataclasses.dataclass(frozen=True)
    class Web:
        session_idle_minutes: int = 5
        session_absolute_hours: int = 2

    custom = dataclasses.replace(settings, web=Web())  # type: ignore[arg-type]
    assert SessionPolicy.from_settings(custom) == SessionPolicy(300, 7200)


def test_tampered_or_unknown_cookie_is_ignored(client: FlaskClient) -> None:
    client.set_cookie("mado_session", "not-a-session")
    assert client.get("/").status_code == 200
    client.set_cookie("mado_session", "A" * 43)
    resp = client.get("/auth/account")
    assert resp.status_code == 302


def test_unreadable_session_is_discarded(client: FlaskClient, rds: redis.Redis) -> None:
    rds.set("mado:session:" + "B" * 43, b"\xff not json")
    client.set_cookie("mado_session", "B" * 43)
    assert client.get("/").status_code == 200


def test_ended_session_is_not_revived(app: Flask, client: FlaskClient, make_user: MakeUser,
                                      rds: redis.Redis) -> None:
    user = make_user("taro")
    login(client, "taro")
    key, _ = _only_session(rds)
    from web.sessions import interface

    assert interface(app).end_user_sessions(user.id) == 1
    assert client.get("/auth/account").status_code == 302
    assert rds.get(key) is None


def test_production_cookies(web_settings: Settings) -> None:
    prod = settings_override(web_settings, site={"env": "production"})
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2}, settings=prod)
    try:
        resp = app.test_client().get("/auth/login", base_url="https://localhost")
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("__Host-mado_session=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "Path=/" in cookie and "Domain" not in cookie
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    finally:
        resources(app).engine.dispose()
        resources(app).redis.close()


def test_pages_needing_login_answer_503_without_redis(web_settings: Settings) -> None:
    dead = settings_override(web_settings, redis={"url": "redis://127.0.0.1:1/0"})
    app = create_app({"TESTING": True}, settings=dead)
    try:
        client = app.test_client()
        client.set_cookie("mado_session", "C" * 43)
        assert client.get("/admin/users").status_code == 503
        assert client.get("/auth/login").status_code == 503
        assert "一時的に利用できません" in client.get("/auth/login").get_data(as_text=True)
    finally:
        resources(app).engine.dispose()


def test_anonymous_pages_without_forms_make_no_session(client: FlaskClient,
                                                       rds: redis.Redis) -> None:
    for path in ("/", "/health", "/health.json"):
        client.get(path)
    assert list(rds.scan_iter(match="mado:session:*")) == []
    client.get("/auth/login")  # the form needs a CSRF token, so a session
    assert len(list(rds.scan_iter(match="mado:session:*"))) == 1


def test_status_page_left_open_does_not_keep_the_session_alive(
        client: FlaskClient, make_user: MakeUser, rds: redis.Redis) -> None:
    make_user("taro")
    login(client, "taro")
    client.get("/auth/account")
    key, _ = _only_session(rds)
    _age(rds, key, last=time.time() - 20 * 60)
    client.get("/health")
    client.get("/health.json")
    client.get("/static/css/app.css").close()
    assert time.time() - _only_session(rds)[1]["_meta"]["last"] > 19 * 60
    client.get("/auth/account")
    assert time.time() - _only_session(rds)[1]["_meta"]["last"] < 5
