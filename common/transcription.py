"""Contract of live transcription between ari_app, the transcriber and web.

ari_app snoops on an answered call (one snoop channel per direction) and sends each
direction to the transcriber over ExternalMedia RTP (``slin16``). Before the audio
flows it registers the stream in the Redis hash ``streams_key``: the field is the
address Asterisk sends from (``host:port`` of the UnicastRTP channel), the value a
``StreamInfo`` as JSON. The transcriber looks a new source address up there, so a
transcriber that restarts mid-call finds its streams again. ari_app ends a stream by
deleting the field and announcing it on the pub/sub channel ``control_key``
(``{"op": "stop"|"update", "source": ...}``); a speaker change (the staff member after
a transfer) is an ``update`` after the field was rewritten.

Output per call (documented in docs/transcription.md):

- ``segments_key``: a Redis stream of every partial and final segment (masked text,
  speaker, start/end seconds from the operator's answer, confidence);
- ``common.console_events.transcript_key``: the list of final segments the case card shows;
- ``common.console_events.suggestions_key``: the current FAQ suggestions;
- ``state_key``: ``live`` or ``unavailable: <why>`` (set by ari_app), ``ended`` at hang-up;
- the event ``transcript.updated`` (no text) tells consoles to refresh the panes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from common.events import Event, event
from common.keys import Keys

#: Speakers of a stream: the caller, the operator, and the staff member after a transfer.
SPEAKERS = ("caller", "operator", "staff")
#: Health component name (heartbeat ``Keys.health("transcriber", instance)``).
COMPONENT = "transcriber"
#: Sample rate of the ``slin16`` ExternalMedia feed.
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class StreamInfo:
    """One direction of one call, as ari_app registers it for the transcriber."""

    call_id: str
    tenant: str
    speaker: str  # one of SPEAKERS
    started_at: float  # epoch seconds when transcription of the call started
    channel: str = "phone"  # phone | kiosk (for the FAQ channel filter)
    direction: str = "in"  # snoop direction: in (the caller) | out (what the caller hears)

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def decode(cls, raw: str | bytes) -> StreamInfo:
        data = json.loads(raw)
        return cls(call_id=str(data["call_id"]), tenant=str(data.get("tenant", "")),
                   speaker=str(data["speaker"]), started_at=float(data["started_at"]),
                   channel=str(data.get("channel", "phone")),
                   direction=str(data.get("direction", "in")))


def streams_key(keys: Keys) -> str:
    """Hash ``host:port`` (where Asterisk sends from) -> StreamInfo JSON."""
    return f"{keys.prefix}:transcription:streams"


def control_key(keys: Keys) -> str:
    """Pub/sub channel: ``{"op": "stop"|"update", "source": "host:port"}``."""
    return f"{keys.prefix}:transcription:control"


def segments_key(keys: Keys, call_id: str) -> str:
    """Stream of one call's segments (fields: kind, speaker, text, start, end, ...)."""
    return f"{keys.prefix}:call:{call_id}:segments"


def state_key(keys: Keys, call_id: str) -> str:
    """String: ``live``, ``unavailable: <reason>`` or ``ended``."""
    return f"{keys.prefix}:call:{call_id}:transcription"


@event("transcript.updated")
@dataclass(frozen=True, kw_only=True)
class TranscriptUpdated(Event):
    """A call's transcript, suggestions or transcription state changed (no text: the
    console fetches the panes over the audited case-card route)."""

    call_id: str
    tenant: str
    what: str  # final | partial | suggestions | state
    state: str = "live"  # live | unavailable | ended


__all__ = [
    "COMPONENT",
    "SAMPLE_RATE",
    "SPEAKERS",
    "StreamInfo",
    "TranscriptUpdated",
    "control_key",
    "segments_key",
    "state_key",
    "streams_key",
]
