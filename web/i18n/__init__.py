"""Languages: Japanese by default, English selectable (``?lang=en`` or the header switch).

Message ids in code and templates are English; ``web/translations/ja`` holds the Japanese
catalog (``messages.po`` and the compiled ``messages.mo``, both committed). A test checks
that every message in the source has a Japanese translation and that the ``.mo`` file
matches the ``.po`` file; ``python -m web.i18n`` (``web/i18n/__main__.py``) re-extracts,
updates and compiles.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, has_request_context, request, session
from flask_babel import Babel

from common.settings import Settings
from web.db import get_settings

LANGUAGES = ("ja", "en")
TRANSLATIONS = Path(__file__).resolve().parents[1] / "translations"
LANG_PARAM = "lang"


def select_locale() -> str:
    if not has_request_context():  # CLI commands: the site's language
        return get_settings().site.language
    wanted = request.args.get(LANG_PARAM)
    if wanted in LANGUAGES:
        return wanted
    stored = session.get("lang") if _session_ready() else None
    if stored in LANGUAGES:
        return str(stored)
    return get_settings().site.language


def _session_ready() -> bool:
    try:
        return session is not None and not getattr(session, "unavailable", False)
    except RuntimeError:
        return False


def remember_language() -> None:
    """``?lang=xx`` on any page switches the language for the rest of the session."""
    wanted = request.args.get(LANG_PARAM)
    if wanted in LANGUAGES and _session_ready() and session.get("lang") != wanted:
        session["lang"] = wanted


def init_app(app: Flask, settings: Settings) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", settings.site.language)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", settings.site.timezone)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    Babel(app, locale_selector=select_locale)
    app.before_request(remember_language)
