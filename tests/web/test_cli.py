from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from common.kiosk import dev_secret, verify_credential
from common.models.accounts import ROLES, User
from common.settings import Settings, load_settings, settings_override
from tests.web.conftest import FAST_ARGON2, audit_rows, login
from web import create_app
from web.db import resources

ROOT = Path(__file__).resolve().parents[2]


def _users(app: Flask) -> list[User]:
    with resources(app).factory() as db:
        rows = list(db.scalars(select(User).order_by(User.id)))
        for r in rows:
            _ = r.roles
        return rows


def test_create_admin_prompts_for_password(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "--username", "Chief"],
                           input="a-long-admin-secret-1\na-long-admin-secret-1\n")
    assert result.exit_code == 0, result.output
    assert "a-long-admin-secret-1" not in result.output.replace("Password", "")
    [user] = _users(app)
    assert user.username == "chief" and user.roles == {"administrator"}
    assert user.tenant_id == "city" and not user.must_change_password
    assert login(app.test_client(), "chief", "a-long-admin-secret-1").status_code == 302
    [row] = audit_rows(app, action="user.create")
    assert row.source == "cli"


def test_create_admin_refuses_bad_input(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "--password-stdin"], input="short\n")
    assert result.exit_code != 0 and "12" in result.output
    result = runner.invoke(args=["create-admin", "--tenant", "nowhere", "--generate"])
    assert result.exit_code != 0 and "unknown tenant" in result.output
    result = runner.invoke(args=["create-admin", "--username", "x", "--generate"])
    assert result.exit_code != 0
    assert runner.invoke(args=["create-admin", "--generate"]).exit_code == 0
    result = runner.invoke(args=["create-admin", "--generate"])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(args=["create-admin", "--username", "townchief", "--tenant", "town",
                                 "--generate"])
    assert result.exit_code == 0 and "password: " in result.output
    assert {u.tenant_id for u in _users(app)} == {"city", "town"}


def test_seed_dev(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed-dev"])
    assert result.exit_code == 0, result.output
    users = {u.username: u for u in _users(app)}
    assert set(users) == set(ROLES)
    assert users["operator"].sip_endpoint == "op01" and users["operator"].extension == "1001"
    assert users["staff"].extension == "2001" and users["staff"].department_id == "koseki"
    line = next(ln for ln in result.output.splitlines() if ln.strip().startswith("approver"))
    password = line.split("password:")[1].strip()
    assert login(app.test_client(), "approver", password).status_code == 302
    again = runner.invoke(args=["seed-dev"])
    assert again.exit_code == 0 and "nothing to add" in again.output
    assert len(_users(app)) == len(ROLES)


def test_seed_dev_after_create_admin_adds_the_other_roles(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(args=["create-admin", "--username", "administrator", "--generate"])
    assert created.exit_code == 0, created.output
    first = runner.invoke(args=["seed-dev", "--first-run"])  # make run: users exist already
    assert first.exit_code == 0 and first.output == "" and len(_users(app)) == 1
    result = runner.invoke(args=["seed-dev"])
    assert result.exit_code == 0, result.output
    users = {u.username: u for u in _users(app)}
    # the administrator's name was taken: the seed's administrator is not made twice
    assert set(users) == set(ROLES) and "administrator" not in result.output.split("):")[1]
    assert {r for u in users.values() for r in u.roles} == set(ROLES)


def test_seed_dev_refused_in_production(web_settings: Settings) -> None:
    prod = settings_override(web_settings, site={"env": "production"})
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2}, settings=prod)
    try:
        result = app.test_cli_runner().invoke(args=["seed-dev"])
        assert result.exit_code != 0 and "development" in result.output
        assert _users(app) == []
    finally:
        resources(app).engine.dispose()
        resources(app).redis.close()


def test_python_dash_m_web_cli(web_settings: Settings, tmp_path: Path) -> None:
    """The module entry point runs the same commands on the configured database."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
        "MADOGUCHI_REDIS__URL": web_settings.redis.url,
        "MADOGUCHI_DATABASE__URL": web_settings.database.url,
    }
    proc = subprocess.run([sys.executable, "-m", "web.cli", "create-admin", "--generate"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "created administrator 'admin'" in proc.stdout


def _web_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python -m web.cli`` with a database that cannot be reached."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
        "MADOGUCHI_DATABASE__URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    return subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_kiosk_credential_needs_no_database(web_settings: Settings, tmp_path: Path) -> None:
    proc = _web_cli(["kiosk", "credential", "k01"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    prefix = "credential for k01 (give it to the kiosk PC only): k01:"
    assert first.startswith(prefix)
    assert second.startswith('credential_hash = "$argon2id$') and second.endswith('"')
    hashed = second.removeprefix('credential_hash = "').removesuffix('"')
    prod = settings_override(web_settings, site={"env": "production"})
    prod = dataclasses.replace(prod, kiosks=tuple(
        dataclasses.replace(k, credential_hash=hashed) if k.id == "k01" else k
        for k in prod.kiosks))
    kiosk = verify_credential(prod, "k01:" + first.removeprefix(prefix))
    assert kiosk is not None and kiosk.id == "k01"


def test_kiosk_dev_url_needs_no_database(tmp_path: Path) -> None:
    proc = _web_cli(["kiosk", "dev-url", "k01"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    settings = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    assert proc.stdout == (f"http://{settings.web.bind}:{settings.web.port}/kiosk/"
                           f"#k01:{dev_secret(settings, 'k01')}\n")
    usage = _web_cli(["kiosk", "dev-url"], tmp_path)
    assert usage.returncode == 2 and usage.stdout == ""


def test_kiosk_commands_of_the_flask_app(app: Flask, web_settings: Settings) -> None:
    """``flask --app web kiosk ...``: dev-url reads the app's settings."""
    with app.app_context():  # as the flask command runs the app's commands
        result = app.test_cli_runner().invoke(args=["kiosk", "dev-url", "k02"])
    assert result.exit_code == 0, result.output
    web = web_settings.web
    assert result.output == f"http://{web.bind}:{web.port}/kiosk/#k02:" \
                            f"{dev_secret(web_settings, 'k02')}\n"
    result = app.test_cli_runner().invoke(args=["kiosk", "credential", "k02"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("credential for k02 (give it to the kiosk PC only): k02:")


def test_kiosk_dev_url_refused_in_production(web_settings: Settings) -> None:
    prod = settings_override(web_settings, site={"env": "production"})
    app = create_app({"TESTING": True, "ARGON2_PARAMETERS": FAST_ARGON2}, settings=prod)
    try:
        with app.app_context():
            result = app.test_cli_runner().invoke(args=["kiosk", "dev-url", "k01"])
        assert result.exit_code == 2
        assert result.stdout == "" and result.stderr == "dev-url is for development only\n"
    finally:
        resources(app).engine.dispose()
        resources(app).redis.close()
