"""Nothing unapproved reaches operators, staff or anonymous visitors.

Items in every unapproved state (draft, submitted, returned, approved, discarded, a new
draft over a published revision, a pending withdrawal) carry unique marker text. Every
GET route of the app, with every item id for integer arguments, is fetched as an
operator, a staff member and an anonymous visitor, in both languages; no response may
contain a marker. A supervisor's walk over the same routes must find them (so the walk
can see text at all).
"""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from faq import services
from faq.content import Actor, Content
from tests.web.conftest import MakeUser, login
from web.db import resources

EDITOR = Actor("sup", frozenset({"supervisor"}), "city")
CITY = Actor("appr", frozenset({"approver"}), "city")
SKIP = {"static", "auth.logout", "sse.stream"}  # a stream never ends; it carries ids only
STREAM_TYPES = ("text/event-stream",)


def marker(state: str) -> str:
    return f"MARKER-{state}-7f3a"


def _seed(app: Flask) -> tuple[list[int], dict[str, str]]:
    """One item per unapproved state; returns the ids and the markers by state."""
    markers: dict[str, str] = {}
    ids: list[int] = []

    def content(state: str, manual: bool = False) -> Content:
        markers[state] = marker(state)
        text = f"{marker(state)} 本文"
        if manual:
            return Content.make(marker(state), "", manual_type="operation",
                                sections=[(f"{marker(state)} 見出し", text)])
        return Content.make(f"{marker(state)} の質問", text, category=marker(state),
                            keywords=marker(state))

    with resources(app).factory() as db:
        def create(state: str, manual: bool = False) -> tuple[int, int]:
            change = services.create_item(db, EDITOR, content(state, manual),
                                          kind="manual" if manual else "faq",
                                          reason=f"{marker(state)} 理由",
                                          requested_by_city=False)
            ids.append(change.item.id)
            return change.item.id, change.item.version

        create("draft")
        create("manualdraft", manual=True)
        item, v = create("submitted")
        services.submit(db, EDITOR, item, expected_version=v)
        item, v = create("returned")
        v = services.submit(db, EDITOR, item, expected_version=v).item.version
        services.return_for_changes(db, CITY, item, expected_version=v,
                                    comment=f"{marker('returned')} コメント")
        item, v = create("approved")
        v = services.submit(db, EDITOR, item, expected_version=v).item.version
        services.approve(db, CITY, item, expected_version=v)
        item, v = create("discarded")
        services.discard_draft(db, EDITOR, item, expected_version=v)
        # a published item (shown) with an unpublished new draft (not shown)
        live = services.create_item(db, EDITOR, Content.make("公開済みの質問", "公開済みの回答"))
        item, v = live.item.id, live.item.version
        ids.append(item)
        v = services.submit(db, EDITOR, item, expected_version=v).item.version
        v = services.approve(db, CITY, item, expected_version=v).item.version
        v = services.publish(db, CITY, item, expected_version=v).item.version
        services.revise(db, EDITOR, item, content("newdraft"), expected_version=v,
                        reason="改訂")
        db.commit()
    return ids, markers


def _paths(app: Flask, ids: list[int]) -> list[str]:
    out: set[str] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP or "GET" not in (rule.methods or ()):
            continue
        paths = [rule.rule]
        for arg in rule.arguments:
            converter = type(rule._converters[arg]).__name__  # noqa: SLF001
            values = [str(i) for i in ids] if converter == "IntegerConverter" else ["city"]
            paths = [p.replace(f"<int:{arg}>", v).replace(f"<{arg}>", v)
                     for p in paths for v in values]
        out.update(paths)
    return sorted(out)


def _walk(client: FlaskClient, paths: list[str], markers: dict[str, str]) -> tuple[int, set[str]]:
    """Fetch every path (both languages, also with ?partial=1); the markers seen."""
    seen: set[str] = set()
    fetched = 0
    for path in paths:
        for query in ("", "?lang=en", "?partial=1", "?format=csv&scope=working",
                      "?format=xlsx&scope=working"):
            if query.startswith("?format") and "export" not in path:
                continue
            resp = client.get(path + query)
            unhealthy = path.startswith("/health") and resp.status_code == 503  # no ari_app
            assert resp.status_code < 500 or unhealthy, (path, resp.status_code)
            if resp.mimetype in STREAM_TYPES:
                resp.close()
                continue
            body = resp.get_data()
            resp.close()
            fetched += 1
            text = body.decode("utf-8", "replace")
            if "xlsx" in query and resp.status_code == 200:
                text = _xlsx_text(body)
            for state, value in markers.items():
                if value in text or value.encode() in body:
                    seen.add(f"{state}@{path}{query}")
    return fetched, seen


def _xlsx_text(data: bytes) -> str:
    import io

    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(data), read_only=True)
    cells = [str(c) for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
             for c in row if c is not None]
    wb.close()
    return "\n".join(cells)


def test_unapproved_text_never_reaches_operators(app: Flask, make_user: MakeUser) -> None:
    ids, markers = _seed(app)
    paths = _paths(app, ids)
    assert any(p.startswith("/faq-admin/") for p in paths)
    assert "/operator/faq" in paths

    make_user("op", {"operator"})
    make_user("stf", {"staff"}, sip_endpoint=None, extension="2001")
    make_user("sup", {"supervisor"}, sip_endpoint=None)
    outsiders: dict[str, FlaskClient] = {"anonymous": app.test_client()}
    for name in ("op", "stf"):
        c = app.test_client()
        assert login(c, name).status_code == 302
        outsiders[name] = c
    for name, client in outsiders.items():
        fetched, seen = _walk(client, paths, markers)
        assert fetched > len(paths), name
        assert not seen, f"{name} saw unapproved text: {sorted(seen)[:10]}"

    # the published item is visible to editors; so are the markers (the walk can see)
    editor = app.test_client()
    assert login(editor, "sup").status_code == 302
    _fetched, seen = _walk(editor, [p for p in paths if p.startswith("/faq-admin")], markers)
    states = {s.split("@", 1)[0] for s in seen}
    assert states == set(markers), sorted(set(markers) - states)


def test_published_search_reads_published_only(app: Flask) -> None:
    """The reading functions operators and kiosks use return the published text only."""
    _ids, markers = _seed(app)
    with resources(app).factory() as db:
        live = services.list_published(db, tenant="city")
        texts = " ".join(f"{p.content.title} {p.content.body} {p.content.category}"
                         for p in live)
    assert [p.content.title for p in live] == ["公開済みの質問"]
    assert not any(m in texts for m in markers.values())

