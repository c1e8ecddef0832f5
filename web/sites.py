"""The two-site form on every page (docs/sites.md): which site this is, which site the
edge sends new calls to, and a banner when calls arrive here because another site was
lost.

The states come from this site's controller (``ari_app.sites``: the hash
``Keys.sites``), which checks the edge and every site's controller each second. When
that hash is missing or older than ``STALE_SECONDS`` the bar says the state is unknown
rather than repeating an old one. In the single-site form there is no bar.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis
from flask import Blueprint, abort, render_template
from flask_babel import get_locale
from flask_babel import gettext as _

from common.settings import Settings, Site
from web.access import login_required
from web.db import get_keys, get_redis, get_settings

bp = Blueprint("sites", __name__, url_prefix="/sites")
STALE_SECONDS = 5.0


@dataclass(frozen=True)
class SiteLine:
    id: str
    name: str
    state: str  # up | down | unknown
    label: str
    serving: bool
    own: bool


@dataclass(frozen=True)
class SiteBar:
    own: str  # this site's name
    serving: str  # the name of the site taking new calls ("" when none / unknown)
    known: bool  # the states are current
    lines: tuple[SiteLine, ...]
    banner: str  # "" when there is nothing to warn about
    level: str  # ok | warn | bad


def site_name(site: Site) -> str:
    return site.name_en if str(get_locale()) == "en" and site.name_en else site.name


def _labels() -> dict[str, str]:
    return {"up": _("In service"), "down": _("Stopped"), "unknown": _("Unknown")}


def site_bar(settings: Settings, client: redis.Redis, prefix_keys: str) -> SiteBar | None:
    """What the bar shows now; None in the single-site form."""
    own = settings.this_site
    if own is None:
        return None
    names = {s.id: site_name(s) for s in settings.sites}
    try:
        raw: dict[bytes | str, bytes | str] = client.hgetall(prefix_keys)
    except redis.RedisError:
        raw = {}
    data = {(k.decode() if isinstance(k, bytes) else k):
            (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
    try:
        checked = float(data.get("_checked", 0))
    except ValueError:
        checked = 0.0
    known = bool(data) and time.time() - checked <= STALE_SECONDS
    labels = _labels()
    lines = []
    states: dict[str, str] = {}
    for site in sorted(settings.sites, key=lambda s: -s.priority):
        try:
            view = json.loads(data.get(site.id, "{}"))
        except ValueError:
            view = {}
        state = str(view.get("state", "unknown")) if known else "unknown"
        states[site.id] = state
        lines.append(SiteLine(site.id, names[site.id], state, labels.get(state, state),
                              known and bool(view.get("serving")), site.id == own.id))
    serving_id = data.get("_serving", "") if known else ""
    serving = names.get(serving_id, "")
    higher_lost = [names[s.id] for s in settings.sites
                   if s.priority > own.priority and states.get(s.id) == "down"]
    if not known:
        banner = _("The state of the sites is unknown: this site's call controller is not "
                   "reporting it. Check the system status page.")
        level = "warn"
    elif higher_lost and serving_id == own.id:
        banner = _("%(lost)s has stopped. New calls now arrive at this site (%(own)s). "
                   "Calls cut at %(lost)s are listed first among the callbacks as cut "
                   "calls.", lost="、".join(higher_lost) if str(get_locale()) != "en"
                   else ", ".join(higher_lost), own=names[own.id])
        level = "bad"
    elif states.get(own.id) == "down":
        banner = _("This site (%(own)s) is not taking calls now.", own=names[own.id])
        level = "bad"
    elif any(state == "down" for state in states.values()):
        banner = _("A site has stopped; see the list of sites.")
        level = "warn"
    else:
        banner, level = "", "ok"
    return SiteBar(names[own.id], serving, known, tuple(lines), banner, level)


def current_site_bar() -> SiteBar | None:
    settings = get_settings()
    if settings.this_site is None:
        return None
    return site_bar(settings, get_redis(), get_keys().sites)


@bp.get("/bar")
@login_required
def bar() -> str:
    """The bar alone, for the consoles to redraw it when a ``site.*`` event arrives."""
    site = current_site_bar()
    if site is None:
        abort(404)
    return render_template("sites/_bar.html", site_bar=site)
