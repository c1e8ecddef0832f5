"""Reading the FAQ pages' input, without routes: the list's filters and the item form,
each value bounded and checked, with the messages shown next to the fields; an item's
content back as form values for editing, and the item version a form was built from.
The library checks the content again (docs/faq.md); these checks keep a bad form from
reaching it and say which field is wrong.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from flask import request
from flask_babel import gettext as _

from faq import services
from faq.content import CHANNELS, MANUAL_TYPES, Content
from web.forms import field, has_control_chars

TITLE_MAX = 500
BODY_MAX = 20000
SHORT_MAX = 100
LIST_MAX = 1000
REASON_MAX = 1000
SECTIONS_MAX = 30
STATUSES = tuple(services.STATUS_LABELS)
KINDS = ("faq", "manual")


def bad_text(text: str) -> bool:
    """Control characters other than line breaks and tabs (PostgreSQL refuses NUL)."""
    return has_control_chars(text.replace("\n", "").replace("\r", "").replace("\t", ""))


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


# ------------------------------------------------------------------- the list's filters


@dataclass(frozen=True)
class Filters:
    """The list page's filters, each valid or empty."""

    kind: str = ""
    status: str = ""
    category: str = ""
    department: str = ""
    channel: str = ""
    q: str = ""


def list_filters() -> tuple[Filters, dict[str, str]]:
    """The filters from the query string, and the errors of those that were refused."""
    def arg(name: str, limit: int = SHORT_MAX) -> str:
        raw = request.args.get(name, "")
        return unicodedata.normalize("NFC", raw).strip()[: limit * 2]

    errors: dict[str, str] = {}
    values = {n: arg(n) for n in ("kind", "status", "category", "department", "channel", "q")}
    for name, allowed in (("kind", KINDS), ("status", STATUSES), ("channel", CHANNELS)):
        if values[name] and values[name] not in allowed:
            errors[name] = _("Choose a value from the list.")
            values[name] = ""
    for name in ("category", "department", "q"):
        if len(values[name]) > SHORT_MAX or has_control_chars(values[name]):
            errors[name] = _("At most %(n)d characters, without control characters.",
                             n=SHORT_MAX)
            values[name] = ""
    return Filters(**values), errors


def matches_filters(view: services.ItemView, f: Filters) -> bool:
    """Whether the item's latest revision passes the text and channel filters."""
    c = view.head.content
    if f.category and _norm(f.category) not in _norm(c.category):
        return False
    if f.department and _norm(f.department) not in _norm(c.department):
        return False
    if f.channel and c.channels not in (f.channel, "both"):
        return False
    if f.q:
        hay = _norm(" ".join([c.title, c.body, " ".join(c.keywords), " ".join(c.procedures),
                              " ".join(h + " " + b for h, b in c.sections)]))
        if _norm(f.q) not in hay:
            return False
    return True


# ------------------------------------------------------------------- the item form


def form_content(kind: str) -> tuple[Content | None, dict[str, Any], dict[str, str]]:
    """Content from the posted form, the raw values for re-display, and field errors."""
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {
        "title": field("title", TITLE_MAX), "body": field("body", BODY_MAX),
        "category": field("category", SHORT_MAX), "department": field("department", SHORT_MAX),
        "procedures": field("procedures", LIST_MAX), "keywords": field("keywords", LIST_MAX),
        "channels": field("channels", 16) or "both", "manual_type": field("manual_type", 32),
        "reason": field("reason", REASON_MAX),
        "requested_by_city": request.form.get("requested_by_city") == "1",
    }
    headings = [str(h)[:TITLE_MAX * 2] for h in request.form.getlist("section_heading")]
    bodies = [str(b)[:BODY_MAX * 2] for b in request.form.getlist("section_body")]
    sections: list[tuple[str, str]] = []
    for n in range(max(len(headings), len(bodies))):
        heading = unicodedata.normalize("NFC", headings[n] if n < len(headings) else "").strip()
        body = unicodedata.normalize("NFC", bodies[n] if n < len(bodies) else "").strip()
        if heading or body:
            sections.append((heading, body))
    raw["sections"] = sections
    limits = {"title": TITLE_MAX, "body": BODY_MAX, "category": SHORT_MAX,
              "department": SHORT_MAX, "procedures": LIST_MAX, "keywords": LIST_MAX,
              "reason": REASON_MAX}
    for name, limit in limits.items():
        if len(raw[name]) > limit:
            errors[name] = _("At most %(n)d characters.", n=limit)
    for name in ("title", "category", "department", "procedures", "keywords", "reason"):
        if name not in errors and has_control_chars(raw[name]):
            errors[name] = _("Remove the control characters.")
    if "body" not in errors and bad_text(raw["body"]):
        errors["body"] = _("Remove the control characters.")
    if any(bad_text(h) or bad_text(b) for h, b in sections):
        errors["sections"] = _("Remove the control characters.")
    if raw["channels"] not in CHANNELS:
        errors["channels"] = _("Choose a value from the list.")
    if not raw["title"]:
        errors["title"] = (_("Enter the question.") if kind == "faq"
                           else _("Enter the title."))
    if kind == "faq" and not raw["body"]:
        errors["body"] = _("Enter the answer.")
    if not raw["reason"]:
        errors["reason"] = _("Enter the reason for the change.")
    if kind == "manual":
        if raw["manual_type"] not in MANUAL_TYPES:
            errors["manual_type"] = _("Choose a value from the list.")
        if len(sections) > SECTIONS_MAX:
            errors["sections"] = _("At most %(n)d sections.", n=SECTIONS_MAX)
        elif not sections:
            errors["sections"] = _("A manual needs at least one section.")
        elif any(not h for h, _b in sections):
            errors["sections"] = _("Every section needs a heading.")
        elif any(len(h) > TITLE_MAX or len(b) > BODY_MAX for h, b in sections):
            errors["sections"] = _("A section is too long.")
    else:
        raw["manual_type"] = ""
        raw["sections"] = []
    if errors:
        return None, raw, errors
    content = Content.make(raw["title"], raw["body"], category=raw["category"],
                           department=raw["department"], procedures=raw["procedures"],
                           keywords=raw["keywords"], channels=raw["channels"],
                           manual_type=raw["manual_type"], sections=raw["sections"])
    return content, raw, errors


def form_values(content: Content) -> dict[str, Any]:
    """An item's content as the form's values (editing starts from them)."""
    return {"title": content.title, "body": content.body, "category": content.category,
            "department": content.department, "procedures": "|".join(content.procedures),
            "keywords": "|".join(content.keywords), "channels": content.channels,
            "manual_type": content.manual_type, "sections": list(content.sections),
            "reason": "", "requested_by_city": False}


def posted_version() -> int | None:
    """The item version the posted form was built from (None when missing or bad)."""
    raw = field("version", 12)
    return int(raw) if raw.isdigit() else None
