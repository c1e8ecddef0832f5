"""Template helpers shared by every blueprint: the current user, the language, the tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, current_app, g, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from web.db import get_settings
from web.i18n import LANGUAGES
from web.sites import current_site_bar


def tenant_name(tenant_id: str | None) -> str:
    """The tenant's display name in the current language (the id if unknown)."""
    english = str(get_locale()) == "en"
    for tenant in get_settings().tenants:
        if tenant.id == tenant_id:
            return tenant.name_en if english and tenant.name_en else tenant.name
    return tenant_id or ""


def service_name(service_id: str | None) -> str:
    """The service's display name in the current language (the id if unknown)."""
    english = str(get_locale()) == "en"
    for service in get_settings().services:
        if service.id == service_id:
            return service.name_en if english and service.name_en else service.name
    return service_id or ""


def in_language(value: Any) -> Any:
    """A bilingual heading (``kpi.tables.Bilingual``) in the page's language only."""
    ja, en = getattr(value, "ja", None), getattr(value, "en", None)
    if isinstance(ja, str) and isinstance(en, str):
        return en if str(get_locale()) == "en" else ja
    return value


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A UTC datetime shown in the site's time zone."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(get_settings().site.timezone)).strftime(fmt)


def epoch_time(value: float | None) -> str:
    """A Unix time shown in the site's time zone."""
    if value is None:
        return ""
    return local_time(datetime.fromtimestamp(value, UTC))


OUTCOME_LABELS = {"ok": _l("Succeeded"), "denied": _l("Refused"), "failed": _l("Failed")}


def outcome_label(outcome: str) -> str:
    return str(OUTCOME_LABELS.get(outcome, outcome))


def lang_url(lang: str) -> str:
    """The current page with ``?lang=`` set (other query parameters kept)."""
    values: dict[str, Any] = {**request.args.to_dict(), **(request.view_args or {})}
    values["lang"] = lang
    endpoint = request.endpoint or "home.index"
    if request.method != "GET" or endpoint == "static":
        endpoint, values = "home.index", {"lang": lang}
    try:
        return url_for(endpoint, **values)
    except Exception:  # noqa: BLE001 - an endpoint that cannot be rebuilt: fall back
        return url_for("home.index", lang=lang)


def has_endpoint(endpoint: str) -> bool:
    return endpoint in current_app.view_functions


def _context() -> dict[str, Any]:
    return {
        "current_user": g.get("user"),
        "current_locale": str(get_locale() or "ja"),
        "languages": LANGUAGES,
        "lang_url": lang_url,
        "tenant_name": tenant_name,
        "service_name": service_name,
        "nav_items": nav_items,
        "has_endpoint": has_endpoint,
        "outcome_label": outcome_label,
        "site_bar": _site_bar,
    }


def _site_bar() -> Any:
    return current_site_bar()


def init_app(app: Flask) -> None:
    app.context_processor(_context)
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["in_language"] = in_language
    app.jinja_env.filters["epoch_time"] = epoch_time


@dataclass(frozen=True)
class NavEntry:
    """One link in the header menu, shown to users holding any of ``roles``."""

    endpoint: str
    label: LazyString
    roles: frozenset[str]
    order: int = 100


_NAV: list[NavEntry] = []


def register_nav(endpoint: str, label: LazyString, roles: frozenset[str] | set[str],
                 order: int = 100) -> None:
    """Add a header link (blueprints call this at import; duplicates are ignored)."""
    entry = NavEntry(endpoint, label, frozenset(roles), order)
    if all(e.endpoint != endpoint for e in _NAV):
        _NAV.append(entry)
        _NAV.sort(key=lambda e: e.order)


def nav_items() -> list[dict[str, Any]]:
    user = g.get("user")
    if user is None:
        return []
    roles = set(user.roles)
    out = []
    for entry in _NAV:
        if entry.roles & roles and entry.endpoint in current_app.view_functions:
            out.append({"url": url_for(entry.endpoint), "label": str(entry.label),
                        "current": request.endpoint == entry.endpoint})
    return out
