"""Typed, versioned events: every record that crosses a process boundary.

An event is a frozen dataclass registered under a dotted ``type`` name with a
``version``. ``encode()`` gives the wire form (JSON text); ``decode()`` turns it back
into the registered class and rejects unknown types, newer versions and bad fields
with ``EventError``. The catalogue is documented in docs/events.md.

Wire form::

    {"type": "call.arrived", "version": 1, "id": "...", "at": "2026-11-25T09:00:00+00:00",
     "data": {...fields of the dataclass...}}
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

REGISTRY: dict[str, type[Event]] = {}

E = TypeVar("E", bound="Event")


class EventError(ValueError):
    """An event that cannot be decoded: unknown type, unsupported version, bad fields."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def event(type_name: str, version: int = 1) -> typing.Callable[[type[E]], type[E]]:
    """Class decorator: register a dataclass as the event ``type_name``."""

    def register(cls: type[E]) -> type[E]:
        if type_name in REGISTRY:
            raise ValueError(f"event type {type_name} registered twice")
        cls.type = type_name
        cls.version = version
        REGISTRY[type_name] = cls
        return cls

    return register


@dataclass(frozen=True, kw_only=True)
class Event:
    type: ClassVar[str] = ""
    version: ClassVar[int] = 1
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: datetime = field(default_factory=utcnow)

    def payload(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("id", "at")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "version": self.version,
            "id": self.id,
            "at": self.at.isoformat(),
            "data": self.payload(),
        }

    def encode(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


CATALOG = ("common.commands", "common.console_events", "common.faq_events",
           "common.transcription", "common.kiosk")


def load_catalog() -> None:
    """Register every event type of the product (the modules that define them import
    this one, so they are loaded on demand here rather than at import time)."""
    for module in CATALOG:
        importlib.import_module(module)


def decode(text: str | bytes) -> Event:
    try:
        raw = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise EventError("an event is a JSON object")
    type_name = raw.get("type")
    cls = REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None and isinstance(type_name, str):
        load_catalog()
        cls = REGISTRY.get(type_name)
    if cls is None:
        raise EventError(f"unknown event type {type_name!r}")
    version = raw.get("version")
    if not isinstance(version, int) or version > cls.version or version < 1:
        raise EventError(f"{type_name}: version {version!r} not supported (this build reads "
                         f"up to {cls.version})")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise EventError(f"{type_name}: 'data' must be an object")
    try:
        at = datetime.fromisoformat(raw["at"])
        event_id = str(raw["id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EventError(f"{type_name}: bad envelope: {exc}") from None
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {"id", "at"}
    unknown = set(data) - names
    if unknown:
        raise EventError(f"{type_name}: unknown fields {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        tp = hints[name]
        if tp is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise EventError(f"{type_name}.{name}: expected an integer")
        if tp is bool and not isinstance(value, bool):
            raise EventError(f"{type_name}.{name}: expected true or false")
        if typing.get_origin(tp) in (tuple, list, types.UnionType) and \
                isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise EventError(f"{type_name}.{name}: expected a list of text")
            value = tuple(value)
        if tp is str and not isinstance(value, str):
            raise EventError(f"{type_name}.{name}: expected text")
        kwargs[name] = value
    try:
        return cls(id=event_id, at=at, **kwargs)
    except TypeError as exc:
        raise EventError(f"{type_name}: {exc}") from None


# ---------------------------------------------------------------------------- calls


@event("call.arrived")
@dataclass(frozen=True, kw_only=True)
class CallArrived(Event):
    """A call entered ari_app (StasisStart of the caller's channel)."""

    call_id: str
    tenant: str
    service: str
    channel: str  # "phone" | "kiosk"
    did: str
    caller: str
    caller_name: str = ""


@event("call.answered")
@dataclass(frozen=True, kw_only=True)
class CallAnswered(Event):
    """The system answered the caller's channel."""

    call_id: str
    tenant: str


@event("call.prompt")
@dataclass(frozen=True, kw_only=True)
class CallPrompt(Event):
    """An announcement was played to the caller (finished or stopped)."""

    call_id: str
    tenant: str
    prompt: str
    state: str  # "started" | "finished" | "failed"


@event("call.rejected")
@dataclass(frozen=True, kw_only=True)
class CallRejected(Event):
    """A call that could not be routed (unknown DID, ...)."""

    call_id: str
    did: str
    reason: str
    tenant: str = ""


@event("call.ended")
@dataclass(frozen=True, kw_only=True)
class CallEnded(Event):
    """The caller's channel is gone."""

    call_id: str
    tenant: str
    cause: int
    cause_txt: str


@event("call.transfer")
@dataclass(frozen=True, kw_only=True)
class CallTransferState(Event):
    """A step of a transfer to staff. The staff member's console shows the case card when
    ``target`` (their extension) rings: ``result`` ringing (blind) or consulting."""

    call_id: str
    tenant: str
    kind: str  # blind | attended
    target: str  # staff extension
    department: str
    operator: str  # operator phone endpoint that transferred
    # started | ringing | consulting | answered | failed | returned | abandoned
    result: str
    reason: str = ""  # failed/returned: busy, no_answer, unavailable, cancelled, ...
    note: str = ""


# ---------------------------------------------------------------------------- queues


@event("queue.member")
@dataclass(frozen=True, kw_only=True)
class QueueMemberState(Event):
    """An operator's line in a queue: logged in/out, paused (with reason), busy."""

    queue: str
    endpoint: str
    logged_in: bool
    paused: bool = False
    reason: str = ""
    status: str = ""  # app_queue device status: not_in_use, in_use, ringing, unavailable...
    in_call: bool = False
    calls_taken: int = 0


@event("queue.caller")
@dataclass(frozen=True, kw_only=True)
class QueueCallerState(Event):
    """A caller joined, was connected to an operator, left or abandoned a queue."""

    queue: str
    call_id: str
    state: str  # joined | connected | left | abandoned
    position: int = 0
    waiting: int = 0  # callers waiting in the queue after this change
    wait_seconds: int = 0
    agent: str = ""


@event("system.component")
@dataclass(frozen=True, kw_only=True)
class ComponentState(Event):
    """A process's view of a dependency changed (e.g. ARI connected/disconnected)."""

    component: str
    instance: str
    state: str  # "up" | "down"
    detail: str = ""


@event("site.state")
@dataclass(frozen=True, kw_only=True)
class SiteState(Event):
    """The two-site form (docs/sites.md): a site's state as one site's controller sees
    it -- the edge's probes and the site's own controller -- changed."""

    site: str
    state: str  # up | down | unknown
    edge: str = ""  # up | down | probing | unreachable (the edge's dispatcher)
    controller: str = ""  # up | down (the site's ari_app reports ARI connected)
    seen_by: str = ""  # the site whose controller saw it
    serving: str = ""  # the site the edge sends new calls to now ("" none / unknown)


@event("site.takeover")
@dataclass(frozen=True, kw_only=True)
class SiteTakeover(Event):
    """A lost site's cut calls were listed as callbacks at the surviving site."""

    lost: str
    by: str
    calls: int  # calls of the lost site closed as cut
    callbacks: int  # of those, listed as callbacks (a number to call back)


__all__ = [
    "SiteState",
    "SiteTakeover",
    "QueueCallerState",
    "QueueMemberState",
    "CallAnswered",
    "CallArrived",
    "CallEnded",
    "CallPrompt",
    "CallRejected",
    "ComponentState",
    "Event",
    "EventError",
    "REGISTRY",
    "decode",
    "event",
    "utcnow",
]
