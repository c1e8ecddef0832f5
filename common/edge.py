"""What the SIP edge (Kamailio, the two-site form) sees of the sites, over its JSON-RPC.

The edge keeps the sites in dispatcher set 1, each destination carrying the attribute
``duid=<site id>``. ``fetch_routes`` / ``afetch_routes`` read ``dispatcher.list`` and
return each site's state as the edge routes calls:

- ``up``: active (``A``): new calls go to it (by priority);
- ``probing``: trying (``T``): it missed probes but fewer than edge.probe_failures in a
  row; it still gets calls;
- ``down``: inactive (``I``: missed edge.probe_failures probes, or a call it did not
  answer at all): no new calls until it answers probes for edge.failback_seconds or an
  administrator brings it back (``set_site_state``); or disabled (``D``, by hand only).

``rpc_call``/``arpc_call`` raise ``EdgeUnreachable`` when the edge does not answer and
``EdgeRpcError`` when it answers with an error (both ``EdgeError``); ``fetch_routes`` and
``afetch_routes`` raise ``EdgeUnreachable`` in both cases (the edge's view is not to be had),
so a caller that only reads the routes catches that one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from common.settings import Settings, Site

#: The dispatcher set holding the sites (edge/kamailio.cfg.j2)
SITE_SET = 1
RPC_PATH = "/RPC"

State = Literal["up", "down", "probing"]

_ids = itertools.count(1)


class EdgeError(Exception):
    """The edge's JSON-RPC could not be used."""


class EdgeUnreachable(EdgeError):
    """The edge's JSON-RPC did not answer (not running, wrong address, too slow)."""


class EdgeRpcError(EdgeError):
    """The edge answered a JSON-RPC request with an error."""


@dataclass(frozen=True)
class SiteRoute:
    site_id: str
    uri: str
    priority: int
    state: State
    flags: str  # the dispatcher's two letters, e.g. "AP"


def site_uri(site: Site) -> str:
    """The site's destination in the edge's dispatcher list."""
    return f"sip:{site.sip}"


def rpc_url(settings: Settings) -> str:
    """Where the edge answers JSON-RPC (loopback when it listens on every address)."""
    host = settings.edge.bind
    if host in ("0.0.0.0", "", "*"):  # nosec B104 # a listen address, mapped to loopback
        host = "127.0.0.1"
    return f"http://{host}:{settings.edge.rpc_port}{RPC_PATH}"


def flags_state(flags: str) -> State:
    """The state of a destination from the dispatcher's flags (A/T/I/D then P/X)."""
    first = flags[:1].upper()
    if first == "A":
        return "up"
    if first == "T":
        return "probing"
    if first in ("I", "D"):
        return "down"
    raise ValueError(f"unknown dispatcher flags {flags!r}")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _duid(attrs: Any) -> str:
    if not isinstance(attrs, dict):
        return ""
    duid = attrs.get("DUID")
    if isinstance(duid, str) and duid:
        return duid
    for part in str(attrs.get("BODY", "")).split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "duid":
            return value.strip()
    return ""


def parse_dispatcher_list(result: dict[str, Any]) -> dict[str, SiteRoute]:
    """Site id -> route, from the result of the ``dispatcher.list`` RPC (Kamailio 5.6:
    ``{"NRSETS": n, "RECORDS": [{"SET": {"ID": 1, "TARGETS": [{"DEST": {"URI": ...,
    "FLAGS": "AP", "PRIORITY": 20, "ATTRS": {"BODY": "duid=a", "DUID": "a", ...}}}]}}]}``).
    Destinations of other sets, or without a duid, are left out."""
    routes: dict[str, SiteRoute] = {}
    for record in _as_list(result.get("RECORDS")):
        dset = record.get("SET") if isinstance(record, dict) else None
        if not isinstance(dset, dict) or dset.get("ID") != SITE_SET:
            continue
        for target in _as_list(dset.get("TARGETS")):
            dest = target.get("DEST") if isinstance(target, dict) else None
            if not isinstance(dest, dict):
                continue
            site_id = _duid(dest.get("ATTRS"))
            if not site_id:
                continue
            flags = str(dest.get("FLAGS", ""))
            routes[site_id] = SiteRoute(site_id=site_id, uri=str(dest.get("URI", "")),
                                        priority=int(dest.get("PRIORITY", 0)),
                                        state=flags_state(flags), flags=flags)
    return routes


def _request(method: str, params: tuple[Any, ...]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(_ids)}


def _result(url: str, method: str, response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise EdgeRpcError(f"the edge at {url} answered {method} with HTTP "
                           f"{response.status_code} and no JSON: {response.text[:200]!r}"
                           ) from None
    if not isinstance(body, dict):
        raise EdgeRpcError(f"the edge at {url} answered {method} with {body!r}")
    if "error" in body:
        error = body["error"] or {}
        raise EdgeRpcError(f"the edge at {url} refused {method}: "
                           f"{error.get('code')} {error.get('message')}")
    return body.get("result")


def _unreachable(url: str, method: str, exc: Exception) -> EdgeUnreachable:
    return EdgeUnreachable(f"the SIP edge's JSON-RPC at {url} did not answer {method} "
                           f"({type(exc).__name__}: {exc or 'timeout'}); is Kamailio "
                           "running (edge.bind, edge.rpc_port)?")


def rpc_call(settings: Settings, method: str, *params: Any, timeout: float = 1.0) -> Any:
    """One JSON-RPC 2.0 request to the edge; its result."""
    url = rpc_url(settings)
    try:
        response = httpx.post(url, json=_request(method, params), timeout=timeout)
    except httpx.HTTPError as exc:
        raise _unreachable(url, method, exc) from None
    return _result(url, method, response)


async def arpc_call(settings: Settings, method: str, *params: Any,
                    client: httpx.AsyncClient | None = None, timeout: float = 1.0) -> Any:
    """``rpc_call`` for asyncio; uses ``client`` when given (its connections are kept)."""
    url = rpc_url(settings)
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=timeout) as own:
                response = await own.post(url, json=_request(method, params))
        else:
            response = await client.post(url, json=_request(method, params), timeout=timeout)
    except httpx.HTTPError as exc:
        raise _unreachable(url, method, exc) from None
    return _result(url, method, response)


def _routes(result: Any) -> dict[str, SiteRoute]:
    if not isinstance(result, dict):
        raise EdgeUnreachable(f"the edge's dispatcher.list returned {result!r}")
    try:
        return parse_dispatcher_list(result)
    except (TypeError, ValueError) as exc:
        raise EdgeUnreachable(f"the edge's dispatcher.list cannot be read: {exc}") from None


def fetch_routes(settings: Settings, timeout: float = 1.0) -> dict[str, SiteRoute]:
    """Site id -> route, as the edge sees the sites now."""
    try:
        result = rpc_call(settings, "dispatcher.list", timeout=timeout)
    except EdgeRpcError as exc:
        raise EdgeUnreachable(str(exc)) from None
    return _routes(result)


async def afetch_routes(settings: Settings, client: httpx.AsyncClient | None = None,
                        timeout: float = 1.0) -> dict[str, SiteRoute]:
    """``fetch_routes`` for asyncio; uses ``client`` when given."""
    try:
        result = await arpc_call(settings, "dispatcher.list", client=client, timeout=timeout)
    except EdgeRpcError as exc:
        raise EdgeUnreachable(str(exc)) from None
    return _routes(result)


#: set_site_state's states -> the dispatcher's (probing kept: every site is probed)
_SET_STATES = {"up": "ap", "down": "ip"}


def set_site_state(settings: Settings, site_id: str, state: str,
                   timeout: float = 1.0) -> None:
    """An administrator's failover or failback: ``up`` makes the site active at once
    (dispatcher state ``ap``), ``down`` inactive (``ip``): it takes no new calls, and is
    still probed, so it comes back by itself after answering probes for
    edge.failback_seconds."""
    if state not in _SET_STATES:
        raise ValueError(f"state must be 'up' or 'down', not {state!r}")
    site = next((s for s in settings.sites if s.id == site_id), None)
    if site is None:
        raise ValueError(f"{site_id!r} is not one of the sites "
                         f"({', '.join(s.id for s in settings.sites) or 'none'})")
    rpc_call(settings, "dispatcher.set_state", _SET_STATES[state], SITE_SET,
             site_uri(site), timeout=timeout)
