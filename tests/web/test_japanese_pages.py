"""Every page in Japanese mode reads as Japanese: no internal id, no English word.

A user holding every role (with a phone and an extension) and an anonymous visitor fetch
every GET page of the app, with data behind them: phone and kiosk calls with each
outcome, a transfer with a reason, a finished report, a kiosk that is offline, a
published FAQ item. The visible text and the attributes a person reads (title,
aria-label, placeholder, alt, an option's label) may contain no ASCII word other than
the terms a Japanese city office writes in Latin letters (FAQ, KPI, PDF, ...).
Identifiers with digits (op01, 2001) are the data the page shows, not its language, and so
is an element marked translate="no" (HTML's own mark for text that is not in a language).
The English walk of the same pages must find words, so that the scan can see text.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import redis
from flask import Flask
from flask.testing import FlaskClient

from common.keys import Keys
from common.kiosk import KioskKeys
from common.models.calls import Call, CallEvent
from common.models.reports import Report
from faq import services
from faq.content import Actor, Content
from tests.web.conftest import MakeUser, login
from web.db import resources

#: Words written in Latin letters in Japanese city documents and screens.
ALLOWED = {
    "FAQ", "KPI", "KPIs", "PDF", "CSV", "Excel", "SIP", "RTP", "PIN", "ID", "URL", "IP", "OK",
    "Wi-Fi", "WebRTC", "Web", "TOTP", "SLA", "Asterisk", "ARI", "AMI", "Redis", "rq",
    "Vosk", "PostgreSQL", "SQLite", "PC", "PC/SC", "pcscd", "USB", "QR", "A4", "JSON",
    "Madoguchi", "English", "Erlang", "AHT", "ASA", "FCR", "CSAT", "HTML", "BOM",
    "https", "csv", "xlsx",  # a link's scheme in an example; file name extensions
}
SKIP = {"static", "auth.logout", "sse.stream"}
#: Parts of a page that are not prose: code, data the user typed, machine values. Any
#: other element whose content is an identifier on purpose says so with translate="no".
SKIP_TAGS = {"script", "style", "code", "pre", "textarea", "svg", "noscript"}
VOID = {"br", "img", "input", "meta", "link", "hr", "wbr", "source", "col"}
READ_ATTRS = ("title", "aria-label", "placeholder", "alt", "label")
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*[A-Za-z0-9]|[A-Za-z]")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._stack: list[str] = []  # open elements inside one that is skipped

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in SKIP_TAGS or values.get("translate") == "no":
            self._stack.append(tag)
        elif self._stack and tag not in VOID:
            self._stack.append(tag)
        if tag in ("input", "img", "option", "optgroup", "button", "a", "span", "section",
                   "nav", "table", "div", "select", "dialog", "abbr", "label"):
            self.parts.extend(v for k, v in attrs if k in READ_ATTRS and v)
        if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
            self.parts.append(values["value"] or "")

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if not self._stack:
            self.parts.append(data)


def foreign_words(html: str) -> set[str]:
    """ASCII words a Japanese reader would see on the page."""
    parser = _Text()
    parser.feed(html)
    found = set()
    for word in WORD.findall(" ".join(parser.parts)):
        if word in ALLOWED or any(ch.isdigit() for ch in word):
            continue
        found.add(word)
    return found


def _seed(app: Flask, rds: redis.Redis) -> None:
    now = datetime.now(UTC)
    settings = resources(app).settings
    with resources(app).factory() as db:
        for i, (channel, outcome) in enumerate((
                ("phone", "answered"), ("phone", "abandoned"), ("phone", "out_of_hours"),
                ("phone", "rejected"), ("phone", "callback"), ("kiosk", "answered"))):
            at = now - timedelta(hours=i + 1)
            db.add(Call(id=f"past{i}", tenant_id="city",
                        service_id="citizens" if channel == "phone" else "remote-window",
                        channel=channel, did="0312345678",
                        caller="09012345678" if channel == "phone" else "k01",
                        caller_name="" if channel == "phone" else "中央公民館",
                        arrived_at=at, ended_at=at + timedelta(minutes=3), status="ended",
                        outcome=outcome, queue="citizens", agent="op01",
                        hours_reason="weekend" if outcome == "out_of_hours" else "open",
                        disposition="escalated" if i == 0 else None,
                        citizen_ref="tel:09012345678" if channel == "kiosk" else None))
        db.add(Call(id="live1", tenant_id="city", service_id="citizens", channel="phone",
                    did="0312345678", caller="09012345678", arrived_at=now, status="active",
                    queue="citizens", agent="op01", agent_connected_at=now))
        # a kiosk call on the line, whose citizen is not known yet
        db.add(Call(id="live2", tenant_id="city", service_id="remote-window", channel="kiosk",
                    caller="k01", caller_name="中央公民館", arrived_at=now - timedelta(hours=9),
                    status="active", queue="remote-window", agent="op01",
                    agent_connected_at=now - timedelta(hours=9)))
        for n, (result, reason) in enumerate((("started", ""), ("failed", "busy"),
                                              ("returned", "cancelled"))):
            db.add(CallEvent(call_id="live1", at=now + timedelta(seconds=n), kind="transfer",
                             source="ari", dedup_key=f"transfer:{n}",
                             data={"kind": "attended", "target": "2001",
                                   "department": "", "operator": "op01", "result": result,
                                   "reason": reason, "note": "戸籍の届出"}))
            db.add(CallEvent(call_id="past0", at=now - timedelta(hours=1), kind="transfer",
                             source="ari", dedup_key=f"transfer:{n}",
                             data={"kind": "blind", "target": "2001", "department": "",
                                   "operator": "op01", "result": "answered", "reason": "",
                                   "note": ""}))
        db.add(Report(tenant_id="city", kind="monthly", period_start=date(2026, 11, 1),
                      period_end=date(2026, 12, 1), status="done", progress=100,
                      requested_by="zen1", created_at=now, finished_at=now, files={}))
        db.commit()
        editor, city = Actor("zen1", frozenset({"supervisor"}), "city"), \
            Actor("appr1", frozenset({"approver"}), "city")
        item = services.create_item(db, editor, Content.make("住民票の写しの請求",
                                                             "窓口かコンビニで請求できます。"))
        v = services.submit(db, editor, item.item.id, expected_version=item.item.version)
        v2 = services.approve(db, city, item.item.id, expected_version=v.item.version)
        services.publish(db, city, item.item.id, expected_version=v2.item.version)
        db.commit()
    # a kiosk that reported once, long ago (offline), with a missing camera
    kk = KioskKeys(Keys(settings.redis.prefix))
    rds.hset(kk.heartbeat(settings.kiosks[0].id), mapping={
        "seen_at": f"{now.timestamp() - 3600:.0f}", "version": "1.0",
        "devices": '{"camera": "missing"}', "screen": "home"})


def _paths(app: Flask) -> list[str]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP or "GET" not in (rule.methods or ()):
            continue
        if rule.rule.endswith((".json", ".csv", ".xlsx", ".pdf", ".png")) or "/api/" in rule.rule:
            continue
        path = rule.rule
        for arg in rule.arguments:
            value = {"call_id": "live1", "report_id": "1"}.get(arg, "1")
            path = re.sub(rf"<(?:[a-z]+:)?{arg}>", value, path)
        out.append(path)
    return sorted(set(out))


def _walk(client: FlaskClient, paths: list[str], query: str) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for path in paths:
        resp = client.get(path + query)
        if resp.mimetype != "text/html" or resp.status_code >= 300 and resp.status_code != 503:
            resp.close()
            continue
        words = foreign_words(resp.get_data(as_text=True))
        if words:
            seen[path] = words
    return seen


def test_every_page_in_japanese_mode_has_no_english_word_or_internal_id(
        app: Flask, make_user: MakeUser, rds: redis.Redis) -> None:
    _seed(app, rds)
    make_user("zen1", {"operator", "staff", "supervisor", "administrator", "approver"},
              sip_endpoint="op01", extension="2001", display_name="全権")
    paths = [*_paths(app), "/calls/live2", "/calls/past5"]
    assert {"/operator/", "/staff/", "/kpi/", "/calls/live1"} <= set(paths)
    everyone = app.test_client()
    assert login(everyone, "zen1").status_code == 302
    anonymous = app.test_client()
    found = {}
    for who, client in (("all roles", everyone), ("anonymous", anonymous)):
        for path, words in _walk(client, paths, "").items():
            found[f"{who} {path}"] = sorted(words)
    assert not found, "\n".join(f"{k}: {v}" for k, v in sorted(found.items()))
    # the same scan sees the English pages' words (it is not blind)
    english = _walk(everyone, ["/operator/", "/kpi/", "/calls/live1"], "?lang=en")
    assert {"Transfer", "Earlier", "Service"} <= english.get("/operator/", set()) | \
        english.get("/calls/live1", set())
