"""Languages: Japanese by default, English selectable (``?lang=en`` or the header switch).

Message ids in code and templates are English; ``web/translations/ja`` holds the Japanese
catalog (``messages.po`` and the compiled ``messages.mo``, both committed). A test checks
that every message in the source has a Japanese translation and that the ``.mo`` file
matches the ``.po`` file; ``python -m web.i18n`` re-extracts, updates and compiles.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, has_request_context, request, session
from flask_babel import Babel

from common.settings import Settings

LANGUAGES = ("ja", "en")
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LANG_PARAM = "lang"


def select_locale() -> str:
    from web.db import get_settings

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


def _rebuild() -> None:  # pragma: no cover - developer tool
    """Extract messages, merge them into the Japanese catalog and compile it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent
    pot = root / "translations" / "messages.pot"
    cfg = root / "babel.cfg"
    babel = [sys.executable, "-m", "babel.messages.frontend"]
    subprocess.run([*babel, "extract", "-F", str(cfg), "-k", "_l", "-o", str(pot),
                    "--no-location", "--project", "Madoguchi",
                    "--copyright-holder", "Madoguchi contributors", str(root)], check=True)
    subprocess.run([*babel, "update", "-i", str(pot), "-d", str(root / "translations"),
                    "-l", "ja", "--no-fuzzy-matching"], check=True)
    subprocess.run([*babel, "compile", "-d", str(root / "translations"), "-l", "ja"],
                   check=True)
    pot.unlink()


if __name__ == "__main__":  # pragma: no cover
    _rebuild()
