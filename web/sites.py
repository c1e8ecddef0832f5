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
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from common import audit
from common.edge import EdgeError, fetch_routes, set_site_state
from common.models.accounts import ADMINISTRATOR, SUPERVISOR
from common.settings import Settings, Site
from web.access import actor, login_required
from web.db import get_db, get_keys, get_redis, get_settings

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


@dataclass(frozen=True)
class EdgeLine:
    id: str
    name: str
    sip: str
    priority: int
    edge: str  # up | probing | down | unknown (the edge does not answer)
    label: str
    own: bool


def _edge_labels() -> dict[str, str]:
    return {"up": _("Takes new calls"), "probing": _("Missed a check; still takes calls"),
            "down": _("Takes no new calls"),
            "unknown": _("Unknown: the SIP edge does not answer")}


def edge_lines(settings: Settings) -> tuple[list[EdgeLine], str]:
    """Each site as the edge's dispatcher sees it now, and the reason when the edge does
    not answer ("" when it does)."""
    try:
        routes = fetch_routes(settings, timeout=1.0)
        problem = ""
    except EdgeError as exc:
        routes, problem = {}, str(exc)
    labels = _edge_labels()
    lines = []
    for site in sorted(settings.sites, key=lambda s: -s.priority):
        state = routes[site.id].state if site.id in routes else "unknown"
        lines.append(EdgeLine(site.id, site_name(site), site.sip, site.priority, state,
                              labels[state], site.id == settings.site.id))
    return lines, problem


SITE_ROLES = {ADMINISTRATOR, SUPERVISOR}


@bp.get("/")
@login_required(roles=SITE_ROLES)
def index() -> str:
    """The sites as this site's controller and the edge see them; an administrator can
    give a recovered site new calls again before its failback time, or take a site out."""
    settings = get_settings()
    if settings.this_site is None:
        abort(404)
    lines, problem = edge_lines(settings)
    return render_template("sites/index.html", lines=lines, edge_problem=problem,
                           failback_seconds=settings.edge.failback_seconds)


@bp.post("/<site_id>/<action>")
@login_required(roles={ADMINISTRATOR})
def change(site_id: str, action: str) -> WerkzeugResponse:
    """``failback``: the edge sends this site new calls again now (an administrator
    confirmed it has recovered); ``takeout``: it sends it none until it has answered the
    edge's checks for ``edge.failback_seconds`` again (maintenance). Audited."""
    settings = get_settings()
    if settings.this_site is None or action not in ("failback", "takeout") or \
            site_id not in {s.id for s in settings.sites}:
        abort(404)
    db = get_db()
    try:
        set_site_state(settings, site_id, "up" if action == "failback" else "down")
    except EdgeError as exc:
        audit.record(db, actor(), f"site.{action}", object_type="site", object_id=site_id,
                     outcome=audit.FAILED, reason="edge_refused")
        db.commit()
        flash(_("The SIP edge did not take the change: %(error)s", error=str(exc)), "error")
        return redirect(url_for("sites.index"))
    audit.record(db, actor(), f"site.{action}", object_type="site", object_id=site_id)
    db.commit()
    name = next(site_name(s) for s in settings.sites if s.id == site_id)
    flash(_("%(name)s takes new calls again.", name=name) if action == "failback" else
          _("%(name)s takes no new calls until it has answered the checks for %(seconds)s "
            "seconds again.", name=name, seconds=settings.edge.failback_seconds), "success")
    return redirect(url_for("sites.index"))


@bp.get("/bar")
@login_required
def bar() -> str:
    """The bar alone, for the consoles to redraw it when a ``site.*`` event arrives."""
    site = current_site_bar()
    if site is None:
        abort(404)
    return render_template("sites/_bar.html", site_bar=site)
