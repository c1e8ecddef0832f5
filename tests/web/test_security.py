from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient

from common.settings import Settings
from tests.web.conftest import FAST_ARGON2, MakeUser, audit_rows, csrf, login
from web import create_app
from web.access import ensure_tenant, login_required
from web.db import resources

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"


def test_csrf_required_on_forms(client: FlaskClient, make_user: MakeUser) -> None:
    make_user("taro")
    resp = client.post("/auth/login", data={"username": "taro", "password": "x"})
    assert resp.status_code == 400
    assert "フォームの有効期限が切れました" in resp.get_data(as_text=True)
    csrf(client, "/auth/login")
    resp = client.post("/auth/login", data={"username": "taro", "password": "x",
                                            "csrf_token": "forged"})
    assert resp.status_code == 400


def test_csrf_token_from_another_session_is_refused(app: Flask, make_user: MakeUser) -> None:
    make_user("taro")
    attacker = app.test_client()
    token = csrf(attacker, "/auth/login")
    victim = app.test_client()
    login(victim, "taro")
    resp = victim.post("/auth/logout", data={"csrf_token": token})
    assert resp.status_code == 400
    assert victim.get("/auth/account").status_code == 200


def test_csrf_header_for_json(client: FlaskClient, make_user: MakeUser) -> None:
    make_user("taro")
    login(client, "taro")
    resp = client.post("/auth/logout", json={})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "csrf"
    assert "有効期限" in resp.get_json()["message"]
    resp = client.post("/auth/logout", json={}, headers={"X-CSRF-Token": csrf(client)})
    assert resp.status_code == 302


def test_security_headers_everywhere(client: FlaskClient, make_user: MakeUser) -> None:
    make_user("taro")
    login(client, "taro")
    for path in ("/", "/auth/login", "/auth/account", "/no/such/page", "/health.json"):
        resp = client.get(path)
        headers = resp.headers
        csp = headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "object-src 'none'" in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
    static = client.get("/static/css/app.css")
    assert static.status_code == 200 and static.headers.get("Cache-Control") != "no-store"
    static.close()


def test_templates_have_no_inline_script_or_style() -> None:
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    handler = re.compile(r"\son[a-z]+\s*=", re.I)
    style_attr = re.compile(r"\sstyle\s*=", re.I)
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert not inline_script.search(text), path
        assert not handler.search(text), path
        assert not style_attr.search(text), path
        assert "<style" not in text, path


def test_error_pages_are_japanese(client: FlaskClient) -> None:
    resp = client.get("/no/such/page")
    assert resp.status_code == 404
    assert "ページが見つかりません。" in resp.get_data(as_text=True)
    resp = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert resp.get_json() == {"error": "404", "message": "ページが見つかりません。"}
    resp = client.get("/no/such/page?lang=en")
    assert "The page was not found." in resp.get_data(as_text=True)


def test_oversized_body_is_413(client: FlaskClient) -> None:
    resp = client.post("/auth/login", data={"username": "x" * (2 * 1024 * 1024)})
    assert resp.status_code == 413


@pytest.fixture
def tenant_app(web_settings: Settings) -> Iterator[Flask]:
    """An app with two extra test routes that use the decorator the way views will."""
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2},
                     settings=web_settings)
    bp = Blueprint("probe", __name__, url_prefix="/probe")

    @bp.get("/<tenant_id>/board")
    @login_required(roles={"supervisor"})
    def board(tenant_id: str) -> str:
        return f"board of {tenant_id}"

    @bp.get("/case/<owner>/<int:case_id>")
    @login_required(roles={"operator", "supervisor"})
    def case(owner: str, case_id: int) -> object:
        ensure_tenant(owner, object_type="case", object_id=case_id)
        return jsonify({"case": case_id})

    @bp.get("/any")
    @login_required
    def anyone() -> str:
        return "hello"

    app.register_blueprint(bp)
    yield app
    resources(app).engine.dispose()
    resources(app).redis.close()


def test_login_required_checks_tenant(tenant_app: Flask, make_user: MakeUser) -> None:
    make_user("sup", {"supervisor"})
    client = tenant_app.test_client()
    login(client, "sup")
    assert client.get("/probe/city/board").get_data(as_text=True) == "board of city"
    assert client.get("/probe/town/board").status_code == 403
    assert client.get("/probe/case/city/7").get_json() == {"case": 7}
    assert client.get("/probe/case/town/8").status_code == 404
    assert client.get("/probe/any").status_code == 200
    rows = audit_rows(tenant_app, action="access.denied")
    assert [(r.reason, r.object_type, r.object_id) for r in rows] == [
        ("tenant", "tenant", "town"), ("tenant", "case", "8")]
    case_viewer = tenant_app.test_client()
    make_user("staff1", {"staff"}, extension="2001")
    login(case_viewer, "staff1")
    assert case_viewer.get("/probe/case/city/7").status_code == 403
    assert case_viewer.get("/probe/any").status_code == 200


def test_json_clients_get_401_not_a_redirect(tenant_app: Flask) -> None:
    resp = tenant_app.test_client().get("/probe/any", headers={"Accept": "application/json"})
    assert resp.status_code == 401 and resp.get_json()["error"] == "401"


def test_every_post_route_refuses_a_missing_csrf_token(app: Flask,
                                                       admin_client: FlaskClient,
                                                       make_user: MakeUser) -> None:
    target = make_user("taro")
    exempt = sorted(r.rule for r in app.url_map.iter_rules()
                    if getattr(app.view_functions[r.endpoint], "_csrf_exempt", False))
    # only the kiosk page's cookie-less JSON API (credential or session token in headers)
    assert all(rule.startswith("/kiosk/api/") for rule in exempt), exempt
    posts = sorted(r.rule.replace("<int:user_id>", str(target.id))
                   for r in app.url_map.iter_rules() if "POST" in (r.methods or ())
                   and r.rule not in exempt)
    assert len(posts) >= 13
    for path in posts:
        resp = admin_client.post(path, data={"username": "x", "password": "y"})
        assert resp.status_code == 400, path
        assert "フォームの有効期限が切れました" in resp.get_data(as_text=True), path
    assert admin_client.get("/admin/users").status_code == 200  # nothing was done
    with resources(app).factory() as db:
        from common.models.accounts import User

        user = db.get(User, target.id)
        assert user is not None and user.active and not user.must_change_password


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/auth/account"), ("GET", "/auth/password"), ("POST", "/auth/password"),
    ("GET", "/auth/totp/setup"), ("POST", "/auth/totp/setup"), ("POST", "/auth/totp/disable"),
])
def test_own_account_routes_need_login(client: FlaskClient, method: str, path: str) -> None:
    token = csrf(client, "/auth/login")
    resp = client.open(path, method=method, data={"csrf_token": token})
    if method == "GET":
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/auth/login")
    else:
        assert resp.status_code == 401


def test_start_page(client: FlaskClient, make_user: MakeUser) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'href="/auth/login"' in page and "ログインしてください" in page
    make_user("admin", {"administrator"})
    login(client, "admin")
    page = client.get("/").get_data(as_text=True)
    assert 'href="/admin/users"' in page and 'href="/admin/audit"' in page
    operator = client.application.test_client()
    make_user("op", {"operator"})
    login(operator, "op")
    assert 'href="/admin/users"' not in operator.get("/").get_data(as_text=True)
