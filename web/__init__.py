"""The web process: console, administration, health page (Flask, server-rendered).

``create_app`` is the one place that wires the app, like flaskr's factory: settings,
database and Redis (``web.db``), languages (``web.i18n``), server-side sessions
(``web.sessions``), security headers and CSRF (``web.security``), one blueprint per
audience, error pages and CLI commands.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from common.settings import Settings, load_settings
from web import (
    access,
    admin,
    auth,
    cases,
    cli,
    dashboard,
    db,
    errors,
    faq_admin,
    health,
    home,
    i18n,
    kiosk,
    kiosk_console,
    kiosk_fleet,
    operator,
    security,
    sessions,
    sites,
    sse,
    staff,
    supervisor,
    views,
)


def create_app(test_config: dict[str, Any] | None = None,
               settings: Settings | None = None) -> Flask:
    if settings is None:
        settings = load_settings()
    app = Flask(__name__)
    development = settings.site.env == "development"
    app.config.from_mapping(
        SECRET_KEY=settings.web.secret_key,
        DEVELOPMENT=development,
        CSRF_ENABLED=True,
        MAX_CONTENT_LENGTH=1024 * 1024,
        MAX_FORM_MEMORY_SIZE=256 * 1024,
        MAX_FORM_PARTS=200,
        SESSION_COOKIE_NAME="mado_session" if development else "__Host-mado_session",
        SESSION_COOKIE_SECURE=not development,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep "status" first
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config["SECRET_KEY"]:
        raise RuntimeError("web.secret_key is empty; set MADOGUCHI_WEB__SECRET_KEY")

    proxies = settings.web.trusted_proxy_count
    if proxies > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)

    res = db.init_app(app, settings)
    sessions.init_app(app, res.redis, res.keys, settings)
    access.init_app(app)  # loads g.user first
    i18n.init_app(app, settings)
    security.init_app(app)
    views.init_app(app)
    errors.init_app(app)
    cli.init_app(app)

    app.register_blueprint(home.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(sites.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(operator.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(supervisor.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(sse.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(faq_admin.bp)
    app.register_blueprint(kiosk.bp)
    app.register_blueprint(kiosk_console.console_bp)
    app.register_blueprint(kiosk_fleet.fleet_bp)
    return app
