"""The state of one call, and what the feature modules may ask of the rest.

Supervision, survey, transcription, transfers, callbacks and the kiosk leg import this
module, never ``ari_app.services`` or ``ari_app.stasis``: the controller builds each of
them with its collaborators, and the two protocols below name what they call back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.hours import HoursDecision
from common.settings import Service


@dataclass
class Transfer:
    kind: str  # blind | attended
    target: str  # extension
    endpoint: str  # PJSIP endpoint of the staff phone
    department: str
    note: str
    operator: str  # operator phone endpoint
    agent_channel: str = ""  # operator leg (channel id)
    staff_channel: str = ""
    bridge: str = ""
    phase: str = "redirecting"  # redirecting | ringing | consulting | connected | returning
    caller_in: bool = False
    agent_in: bool = False
    staff_up: bool = False
    started: float = 0.0


@dataclass
class CallSession:
    """Live state of one caller channel inside the controller."""

    channel_id: str
    call_id: str
    tenant: str = ""
    service: Service | None = None
    state: str = "new"  # new | greeting | rejecting | queued | ended
    playback_id: str | None = None
    after_playback: Callable[[], Awaitable[None]] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    kind: str = "call"  # call | callback (a placeholder that reached an operator)
    transfer: Transfer | None = None
    # other channels of this call the controller owns (operator, staff), and its bridges
    legs: set[str] = field(default_factory=set)
    bridges: set[str] = field(default_factory=set)


class CallActions(Protocol):
    """What a feature module asks of the call service (``ari_app.services.CallService``):
    the prompts it plays and the steps every kind of call shares."""

    prompts: dict[str, str]

    def prompt_sound(self, prompt: str, service: Service | None) -> str: ...

    async def play_then(self, session: CallSession, prompt: str,
                        then: Callable[[], Awaitable[None]]) -> None: ...

    async def play_prompt(self, session: CallSession, prompt: str) -> None: ...

    async def hangup(self, session: CallSession) -> None: ...

    def hours(self, service: Service) -> HoursDecision: ...

    async def resubscribe(self, channel_id: str) -> None: ...

    async def publish_transfer(self, session: CallSession, data: dict[str, Any]) -> None: ...

    async def channel_destroyed(self, session: CallSession, event: dict[str, Any]) -> None: ...


class CallRegistry(Protocol):
    """The calls in progress, each with its own task (``ari_app.stasis.StasisDispatcher``)."""

    sessions: dict[str, CallSession]

    def open_session(self, session: CallSession) -> None: ...

    def later(self, call_id: str, kind: str, delay: float) -> None: ...
