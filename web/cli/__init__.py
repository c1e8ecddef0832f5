"""Command line: ``flask --app web create-admin`` / ``python -m web.cli create-admin``
(``web/cli/__main__.py``).

- ``create-admin``: make an administrator account (the first one, or another).
- ``seed-dev``: in development only, make a user for each role that no user of the
  first tenant holds yet and print their passwords (``--first-run``: only into an empty
  database, as ``make run`` does on its first start).
- ``kiosk credential <kiosk id>``: a new kiosk credential and the argon2 hash of its
  secret for the site file (``kiosks[].credential_hash``, docs/kiosk.md);
  ``kiosk dev-url <kiosk id>``: a development kiosk's start URL. They need neither the
  database nor the app: ``python -m web.cli kiosk ...`` runs them without building it.
"""

from __future__ import annotations

import secrets
import sys

import click
from argon2 import PasswordHasher
from flask import Flask, current_app, has_app_context
from flask.cli import with_appcontext
from sqlalchemy import select

from common import audit
from common.kiosk import dev_secret
from common.models.accounts import ADMINISTRATOR, APPROVER, OPERATOR, ROLES, STAFF, User
from common.settings import load_settings
from web import accounts
from web.db import get_db, get_settings


def _hasher() -> accounts.PasswordHasher:
    return accounts.make_hasher(current_app.config.get("ARGON2_PARAMETERS"))


@click.command("create-admin")
@click.option("--username", default="admin", show_default=True, help="Log-in name.")
@click.option("--display-name", default="", help="Name shown to colleagues.")
@click.option("--tenant", "tenant_id", default=None,
              help="Tenant (municipality) id; default: the first configured tenant.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input instead of prompting.")
@click.option("--generate", is_flag=True, help="Generate a password and print it once.")
@with_appcontext
def create_admin(username: str, display_name: str, tenant_id: str | None,
                 password_stdin: bool, generate: bool) -> None:
    """Create an administrator account."""
    settings = get_settings()
    db = get_db()
    tenants = {t.id for t in settings.tenants}
    tenant_id = tenant_id or settings.tenants[0].id
    if tenant_id not in tenants:
        raise click.UsageError(f"unknown tenant {tenant_id!r}; known: {', '.join(sorted(tenants))}")
    username = username.strip().lower()
    if not accounts.valid_username(username):
        raise click.UsageError("the user name must be 3-64 characters: a-z 0-9 . _ -")
    if accounts.find_user(db, username) is not None:
        raise click.UsageError(f"user {username!r} already exists")
    policy = accounts.SecurityPolicy.from_settings(settings)
    if generate:
        password = accounts.generate_password()
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    problems = accounts.password_problems(password, username, policy)
    if problems:
        raise click.UsageError(" ".join(problems))
    user = accounts.create_user(db, username=username, tenant_id=tenant_id,
                                roles={ADMINISTRATOR}, password=password, hasher=_hasher(),
                                settings=settings, display_name=display_name,
                                must_change_password=False)
    db.flush()
    audit.record(db, audit.Actor(name="cli", tenant_id=tenant_id, source="cli"),
                 "user.create", object_type="user", object_id=user.id)
    db.commit()
    click.echo(f"created administrator {username!r} (tenant {tenant_id})")
    if generate:
        click.echo(f"password: {password}")


@click.command("seed-dev")
@click.option("--first-run", is_flag=True,
              help="Only when the database has no users at all (make run's first start).")
@with_appcontext
def seed_dev(first_run: bool) -> None:
    """Development only: a user for each role no user of the tenant holds yet (after
    create-admin, the other roles), passwords printed once."""
    settings = get_settings()
    if settings.site.env != "development":
        raise click.UsageError("seed-dev only runs when site.env is 'development'")
    db = get_db()
    if first_run and accounts.user_count(db) > 0:
        return
    tenant = settings.tenants[0].id
    held = {role for user in db.scalars(select(User).where(User.tenant_id == tenant))
            for role in user.roles}
    missing = [role for role in ROLES if role not in held]
    if not missing:
        click.echo(f"every role of tenant {tenant} has a user already; nothing to add")
        return
    endpoints = list(accounts.operator_endpoints(settings))
    extensions = list(accounts.staff_extensions(settings, tenant))
    names = {OPERATOR: "オペレーター 一郎", STAFF: "職員 花子", "supervisor": "監督者 次郎",
             ADMINISTRATOR: "管理者 三郎", APPROVER: "承認者 四郎"}
    click.echo(f"development users (tenant {tenant}; log in at "
               f"http://{settings.web.bind}:{settings.web.port}/):")
    for role in missing:
        username = role
        n = 2
        while accounts.find_user(db, username) is not None:  # e.g. an "operator" elsewhere
            username, n = f"{role}{n}", n + 1
        password = accounts.generate_password()
        accounts.create_user(
            db, username=username, tenant_id=tenant, roles={role}, password=password,
            hasher=_hasher(), settings=settings, display_name=names[role],
            sip_endpoint=endpoints[0] if role == OPERATOR and endpoints else None,
            extension=extensions[0] if role == STAFF and extensions else None,
            must_change_password=False)
        click.echo(f"  {role:<14} user {username:<14} password: {password}")
    db.commit()


@click.group("kiosk")
def kiosk() -> None:
    """Kiosk credentials (docs/kiosk.md)."""


@kiosk.command("credential")
@click.argument("kiosk_id")
def kiosk_credential(kiosk_id: str) -> None:
    """A new credential for a kiosk and the hash of its secret for the site file."""
    secret = secrets.token_urlsafe(24)
    click.echo(f"credential for {kiosk_id} (give it to the kiosk PC only): {kiosk_id}:{secret}")
    click.echo(f'credential_hash = "{PasswordHasher().hash(secret)}"')


@kiosk.command("dev-url")
@click.argument("kiosk_id")
def kiosk_dev_url(kiosk_id: str) -> None:
    """Development only: the start URL of a kiosk (its secret derived from the settings)."""
    settings = get_settings() if has_app_context() else load_settings()
    if settings.production:
        click.echo("dev-url is for development only", err=True)
        sys.exit(2)
    web = settings.web
    click.echo(f"http://{web.bind}:{web.port}/kiosk/#{kiosk_id}:{dev_secret(settings, kiosk_id)}")


def init_app(app: Flask) -> None:
    app.cli.add_command(create_admin)
    app.cli.add_command(seed_dev)
    app.cli.add_command(kiosk)
