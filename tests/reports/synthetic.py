"""A synthetic October 2026 of call timelines with hand-computed KPIs.

Each call is written the way the controller writes it (summary columns plus timeline
rows of docs/events.md and docs/kpi.md). The expected values in EXPECTED were computed
by hand from the table in docs/kpi.md ("worked example"), not by the code under test.

Edge cases: a call crossing midnight and the month end (C9, counted in October by its
arrival, and its repeat call on 3 November still spoils its first-contact resolution),
a call just after local midnight that is still 30 September in UTC (C12), abandon during
ringing (C4), transfer then abandon (C6), a callback completed the next day (C7), a
public holiday (C8, Sports Day 12 October), a short abandon (C5), anonymous callers
(C17, C18), kiosk sessions with and without a location (C13-C15).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from common.models.calls import Call, CallEvent

JST = ZoneInfo("Asia/Tokyo")


def jst(month: int, day: int, hour: int, minute: int, second: int = 0,
        year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=JST)


@dataclass
class Spec:
    id: str
    at: datetime
    outcome: str | None
    wait: int | None = None
    talk: int | None = None
    hold: int | None = None
    wrapup: int | None = None
    agent: str | None = None
    disposition: str | None = None
    caller: str = ""
    survey: int | None = None
    channel: str = "phone"
    service: str = "citizens"
    hours: str = "open"
    location: str | None = None
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    # (seconds after arrival, kind, data) in addition to the standard ones


SPECS: list[Spec] = [
    Spec("C1", jst(10, 1, 9, 0), "answered", wait=10, talk=300, hold=20, wrapup=60,
         agent="op01", disposition="resolved_faq", caller="0900000001", survey=5),
    Spec("C2", jst(10, 1, 9, 5), "answered", wait=25, talk=200, wrapup=40, agent="op02",
         disposition="e_application_help", caller="0900000002", survey=4),
    Spec("C3", jst(10, 5, 10, 0), "answered", wait=20, talk=100, wrapup=20, agent="op01",
         disposition="escalated", caller="0900000002",
         events=[(60, "transfer", {"kind": "blind", "department": "koseki", "target": "2001",
                                   "result": "started"}),
                 (70, "transfer", {"kind": "blind", "department": "koseki", "target": "2001",
                                   "result": "answered"})]),
    Spec("C4", jst(10, 6, 11, 0), "abandoned", wait=12,
         events=[(5, "ring", {"agent": "op03", "ring_ms": 7000})], caller="0900000004"),
    Spec("C5", jst(10, 6, 11, 10), "abandoned", wait=3, caller="0900000005"),
    Spec("C6", jst(10, 7, 14, 0), "answered", wait=5, talk=90, agent="op02",
         disposition="escalated", caller="0900000006",
         events=[(40, "transfer", {"kind": "blind", "department": "juminhyo",
                                   "target": "2101", "result": "started"}),
                 (55, "transfer", {"kind": "blind", "department": "juminhyo",
                                   "target": "2101", "result": "abandoned"})]),
    Spec("C7", jst(10, 8, 10, 0), "callback", wait=40, caller="0900000007",
         events=[(40, "callback_requested", {"callback": 1, "queue": "citizens",
                                             "position": 3}),
                 (86400, "callback_completed", {"callback": 1, "result": "answered"})]),
    Spec("C8", jst(10, 12, 10, 0), "out_of_hours", hours="holiday", caller="0900000008"),
    Spec("C9", jst(10, 31, 23, 59, 50), "answered", wait=25, talk=120, wrapup=30,
         agent="op03", disposition="other", caller="0900000009", hours="special_open"),
    Spec("C10", jst(11, 3, 10, 0), "answered", wait=5, talk=60, agent="op01",
         disposition="other", caller="0900000009"),
    Spec("C11", jst(9, 30, 23, 59, 58), "out_of_hours", hours="after_closing",
         caller="0900000011"),
    Spec("C12", jst(10, 1, 0, 0, 5), "out_of_hours", hours="before_opening",
         caller="0900000012"),
    Spec("C13", jst(10, 15, 13, 0), "answered", wait=0, talk=600, wrapup=120, agent="op04",
         disposition="e_application_help", caller="kiosk01", survey=3, channel="kiosk",
         service="remote-window", location="中央公民館"),
    Spec("C14", jst(10, 20, 15, 0), "answered", wait=8, talk=300, agent="op04",
         disposition="resolved_faq", caller="kiosk02", survey=2, channel="kiosk",
         service="remote-window"),
    Spec("C15", jst(10, 21, 15, 30), "abandoned", wait=30, caller="kiosk01", channel="kiosk",
         service="remote-window", location="中央公民館"),
    Spec("C16", jst(10, 2, 9, 0), "rejected", hours="", caller="0900000016", service=""),
    Spec("C17", jst(10, 2, 10, 0), "answered", wait=0, talk=60, agent="op01",
         disposition="complaint", caller=""),
    Spec("C18", jst(10, 3, 10, 0), "abandoned", wait=6, caller=""),
]


def build_call(spec: Spec, tenant: str = "city") -> Call:
    """A ``Call`` with its timeline, as the controller (and survey/wrap-up) write it."""
    at = spec.at
    queue = "kiosk" if spec.channel == "kiosk" else "citizens"
    call = Call(id=spec.id, tenant_id=tenant, service_id=spec.service or None,
                channel=spec.channel, did="0312345678", caller=spec.caller, arrived_at=at,
                status="ended", outcome=spec.outcome, hours_reason=spec.hours or None,
                disposition=spec.disposition, survey_score=spec.survey,
                hold_seconds=spec.hold, wrapup_seconds=spec.wrapup, location=spec.location)
    events: list[tuple[int, str, dict[str, Any]]] = [(0, "arrived", {"did": call.did})]
    end = at + timedelta(seconds=1)
    if spec.outcome == "rejected":
        events.append((0, "rejected", {"reason": "unknown_did", "did": call.did}))
    else:
        events.append((0, "hours", {"open": spec.outcome != "out_of_hours",
                                    "reason": spec.hours}))
    if spec.wait is not None:
        call.answered_at = at
        call.queue = queue
        call.queued_at = at
        call.queue_position = 1
        call.wait_seconds = spec.wait
        events.append((0, "queue_join", {"queue": queue, "position": 1, "count": 1}))
        if spec.agent:
            call.agent = spec.agent
            call.agent_connected_at = at + timedelta(seconds=spec.wait)
            call.talk_seconds = spec.talk
            events.append((spec.wait, "agent_connect", {"agent": spec.agent,
                                                        "wait_seconds": spec.wait}))
            done = spec.wait + (spec.talk or 0)
            events.append((done, "agent_complete", {"agent": spec.agent,
                                                    "talk_seconds": spec.talk,
                                                    "reason": "caller"}))
            if spec.hold:
                events.append((spec.wait + 30, "hold", {"agent": spec.agent}))
                events.append((spec.wait + 30 + spec.hold, "unhold",
                               {"agent": spec.agent, "seconds": spec.hold}))
            if spec.wrapup is not None:
                events.append((done + spec.wrapup, "wrapup_end",
                               {"agent": spec.agent, "seconds": spec.wrapup,
                                "disposition": spec.disposition}))
            if spec.survey is not None:
                events.append((done + 5, "survey", {"score": spec.survey,
                                                    "channel": spec.channel}))
            end = at + timedelta(seconds=done)
        elif spec.outcome == "abandoned":
            call.abandoned_position = 1
            events.append((spec.wait, "abandon", {"queue": queue, "position": 1,
                                                  "original_position": 1,
                                                  "wait_seconds": spec.wait}))
            end = at + timedelta(seconds=spec.wait)
        else:
            end = at + timedelta(seconds=spec.wait)
    events.extend(spec.events)
    call.ended_at = end
    events.append((int((end - at).total_seconds()), "ended", {"cause": 16}))
    for i, (offset, kind, data) in enumerate(events):
        call.events.append(CallEvent(at=at + timedelta(seconds=offset), kind=kind,
                                     source="ari", dedup_key=f"{kind}:{i}", data=data))
    return call


def load(session: Session, tenant: str = "city") -> None:
    session.add_all(build_call(spec, tenant) for spec in SPECS)


# Hand-computed (see the module docstring and docs/kpi.md, "worked example").
EXPECTED_TOTAL: dict[str, float | int | None] = {
    "contacts": 16, "offered": 13, "answered": 8, "abandoned": 4, "short_abandoned": 1,
    "abandon_rate": 25.0, "service_level": 50.0, "service_level_asterisk": 75.0,
    "asa": 11.625, "max_wait": 25, "aht": 255.0, "callbacks_requested": 1,
    "callbacks_completed": 1, "escalated": 1, "fcr": 50.0, "faq_resolved_share": 25.0,
    "satisfaction": 3.5, "surveys": 4, "kiosk_sessions": 3, "out_of_hours": 2,
}
EXPECTED_COUNTS: dict[str, int] = {
    "rejected": 1, "callback_outcome": 1, "answered_in_sl": 6, "abandoned_in_sl": 3,
    "wait_sum": 93, "talk_sum": 1770, "hold_sum": 20, "wrapup_sum": 270, "fcr": 4,
    "resolved_faq": 2, "survey_sum": 14, "s1": 0, "s2": 1, "s3": 1, "s4": 1, "s5": 1,
}
