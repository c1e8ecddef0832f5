"""Commands to the call controller: typed records on the ``{prefix}:commands`` stream.

The web console (or any process) sends a command with ``send_command``; one ari_app
instance takes it (Redis consumer group ``ari_app``), carries it out and publishes a
``command.result`` event with the command's id, then whatever state events follow
(e.g. ``queue.member``). Commands use the same typed, versioned form as events
(``common.events``); their type names start with ``cmd.``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from common.events import Event, event
from common.keys import Keys

PAUSE_REASONS = ("break", "after_call_work", "training", "meeting", "other")


@event("cmd.agent.login")
@dataclass(frozen=True, kw_only=True)
class AgentLogin(Event):
    """Put an operator's phone into the queues of their services."""

    tenant: str
    endpoint: str  # PJSIP endpoint of the operator's phone, e.g. op03
    operator: str = ""  # user id in the console, for the timeline
    queues: tuple[str, ...] | list[str] = ()
    paused: bool = False


@event("cmd.agent.logout")
@dataclass(frozen=True, kw_only=True)
class AgentLogout(Event):
    tenant: str
    endpoint: str
    queues: tuple[str, ...] | list[str] = ()


@event("cmd.agent.pause")
@dataclass(frozen=True, kw_only=True)
class AgentPause(Event):
    tenant: str
    endpoint: str
    reason: str  # one of PAUSE_REASONS


@event("cmd.agent.unpause")
@dataclass(frozen=True, kw_only=True)
class AgentUnpause(Event):
    tenant: str
    endpoint: str


@event("cmd.call.transfer")
@dataclass(frozen=True, kw_only=True)
class CallTransfer(Event):
    """Transfer an answered call to a staff extension or a department (its first
    extension). ``note`` is the operator's escalation note shown to the staff member."""

    tenant: str
    call_id: str
    kind: str  # blind | attended
    target: str  # extension ("2001") or department id ("koseki")
    note: str = ""


@event("cmd.call.transfer_complete")
@dataclass(frozen=True, kw_only=True)
class CallTransferComplete(Event):
    """Attended transfer: connect the caller with the consulted staff member."""

    tenant: str
    call_id: str


@event("cmd.call.transfer_cancel")
@dataclass(frozen=True, kw_only=True)
class CallTransferCancel(Event):
    """Attended transfer: end the consultation and return to the caller."""

    tenant: str
    call_id: str


@event("command.result")
@dataclass(frozen=True, kw_only=True)
class CommandResult(Event):
    """Outcome of a command: ``ok`` and, when not, a message for the user."""

    command_id: str
    command: str
    ok: bool
    code: str = ""  # machine-readable error code, e.g. unknown_endpoint
    error: str = ""


def send_command(client: redis.Redis, keys: Keys, command: Event, maxlen: int = 10000) -> str:
    client.xadd(keys.commands, {"c": command.encode()}, maxlen=maxlen, approximate=True)
    return command.id
