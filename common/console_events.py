"""Events and commands of the live console (web) that the other processes share.

The transfer commands (``cmd.call.transfer``, ``cmd.call.transfer_complete``,
``cmd.call.transfer_cancel``) and the ``call.transfer`` event are defined in
``common.commands`` and ``common.events`` (the controller already carries them out);
this module adds what only the console needs so far. Documented in docs/console.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.events import Event, event
from common.keys import Keys

#: Supervisor snoop modes (ARI snoop ``spy``/``whisper`` directions).
LISTEN_MODES = ("listen", "whisper", "barge")
#: Disposition codes an operator (or staff member) sets after a call.
DISPOSITIONS = ("resolved_faq", "e_application_help", "complaint", "escalated", "other")
#: Device states the console shows for staff extensions (``unknown`` until published).
PRESENCE_STATES = ("not_in_use", "in_use", "ringing", "busy", "unavailable", "on_hold",
                   "unknown")


@event("cmd.supervisor.listen")
@dataclass(frozen=True, kw_only=True)
class SupervisorListen(Event):
    """Listen to, whisper to, or barge in on an operator's call.

    The controller creates an ARI snoop channel on the operator's leg of ``call_id``
    (``spy=both`` for listen; ``whisper=out`` for whisper; a bridge join for barge) and
    dials the supervisor's phone ``endpoint`` into it. Answered by ``command.result``.
    """

    tenant: str
    call_id: str
    mode: str  # one of LISTEN_MODES
    endpoint: str  # the supervisor's phone (PJSIP endpoint or extension)
    supervisor: str = ""  # user id in the console, for the timeline


@event("cmd.supervisor.listen_stop")
@dataclass(frozen=True, kw_only=True)
class SupervisorListenStop(Event):
    """End the supervisor's snoop on ``call_id`` (hang up the snoop leg)."""

    tenant: str
    call_id: str
    endpoint: str


@event("case.note")
@dataclass(frozen=True, kw_only=True)
class CaseNote(Event):
    """An operator or staff member added a note to a call's case card (web → web).

    Carries no text: consoles that show the case fetch the notes over HTTP, so that every
    read of personal data goes through the audited page.
    """

    call_id: str
    tenant: str
    note_id: int
    author_role: str  # operator | staff | supervisor


@event("case.outcome")
@dataclass(frozen=True, kw_only=True)
class CaseOutcome(Event):
    """A disposition was saved for a call (by the operator or, after a transfer, staff)."""

    call_id: str
    tenant: str
    disposition: str  # one of DISPOSITIONS
    author_role: str


@event("device.state")
@dataclass(frozen=True, kw_only=True)
class DeviceState(Event):
    """Presence of a phone (Asterisk device state), for the console's staff directory.

    Producer: ari_app (ari_app/presence.py). It also mirrors the state into the Redis hash
    ``presence_key(keys)`` (extension -> state) so that a page can render it at once.
    """

    tenant: str
    extension: str
    state: str  # one of PRESENCE_STATES


def presence_key(keys: Keys) -> str:
    """Hash extension -> device state (one of PRESENCE_STATES) of staff phones."""
    return f"{keys.prefix}:presence"


def transcript_key(keys: Keys, call_id: str) -> str:
    """List of JSON lines ``{"at": epoch, "speaker": "caller"|"operator", "text": ...}``
    of one call's live transcript (filled by the transcriber, read by the case card)."""
    return f"{keys.prefix}:call:{call_id}:transcript"


def suggestions_key(keys: Keys, call_id: str) -> str:
    """JSON list of FAQ suggestions ``[{"item_id", "title", "score"}]`` for a call."""
    return f"{keys.prefix}:call:{call_id}:suggestions"


__all__ = [
    "CaseNote",
    "CaseOutcome",
    "DISPOSITIONS",
    "DeviceState",
    "LISTEN_MODES",
    "PRESENCE_STATES",
    "SupervisorListen",
    "SupervisorListenStop",
    "presence_key",
    "suggestions_key",
    "transcript_key",
]
