"""The Japanese catalog covers every message, and the committed .mo matches the .po."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask.testing import FlaskClient

WEB = Path(__file__).resolve().parents[2] / "web"
CATALOG = WEB / "translations" / "ja" / "LC_MESSAGES"
METHOD_MAP = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None,
            "lazy_gettext": None}


def _source_messages() -> set[str]:
    found: set[str] = set()
    for _file, _line, message, _comments, _ctx in extract_from_dir(
            str(WEB), METHOD_MAP, keywords=KEYWORDS):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_message_has_a_japanese_translation() -> None:
    with (CATALOG / "messages.po").open("rb") as fh:
        po = read_po(fh)
    translated = {m.id if isinstance(m.id, str) else m.id[0]: m.string for m in po if m.id}
    source = _source_messages()
    assert source, "no messages extracted"
    missing = sorted(m for m in source if not translated.get(m))
    assert not missing, f"untranslated (run python -m web.i18n and translate): {missing}"
    fuzzy = [m.id for m in po if m.id and m.fuzzy]
    assert not fuzzy


def test_compiled_catalog_matches_po() -> None:
    with (CATALOG / "messages.po").open("rb") as fh:
        po = read_po(fh)
    mo = read_mo(BytesIO((CATALOG / "messages.mo").read_bytes()))
    po_map = {m.id: m.string for m in po if m.id}
    mo_map = {m.id: m.string for m in mo if m.id}
    assert po_map == mo_map, "messages.mo is stale: run python -m web.i18n"


def test_language_switch(client: FlaskClient) -> None:
    assert "ログイン" in client.get("/auth/login").get_data(as_text=True)
    page = client.get("/auth/login?lang=en").get_data(as_text=True)
    assert '<html lang="en">' in page and "User name" in page
    assert '<html lang="en">' in client.get("/auth/login").get_data(as_text=True)
    assert '<html lang="ja">' in client.get("/auth/login?lang=ja").get_data(as_text=True)
    assert '<html lang="ja">' in client.get("/auth/login?lang=xx").get_data(as_text=True)


def test_language_switch_links_keep_the_page(client: FlaskClient) -> None:
    page = client.get("/health?lang=ja").get_data(as_text=True)
    assert 'href="/health?lang=en"' in page
