"""Callers who hang up at once (a CANCEL right after the INVITE), many times: wherever
the CANCEL lands (before the controller sees the call, between StasisStart and the
``continue`` that sends it to the greeting, or while that request is under way), every
call the controller saw ends on the record at once, as ``cancelled_early``, which the
KPIs count as a contact but neither offered nor abandoned; and the race on the ARI
request is no error in the controller's log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.db import make_engine, session_factory
from common.models import Call
from common.settings import Settings
from kpi.query import aggregate
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, SippResult, run_sipp
from tests.integration.test_queue import calls

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

DID = "0312345678"
#: Calls per round, and rounds at most: a round repeats only while too few of its CANCELs
#: landed after StasisStart (most land before it; a handful per round land after).
CALLS, ROUNDS, RACED = 30, 3, 5
#: Calls a second: under trunk.max_calls_per_second (10), which refuses more with 503.
RATE = 8


def summary(rows: list[Call]) -> str:
    return "\n".join(f"{c.id}: {c.status} outcome={c.outcome} cause={c.hangup_cause} "
                     f"{c.hangup_cause_txt!r} {[e.kind for e in c.events]}" for c in rows)


def test_callers_who_cancel_at_once_end_at_once_and_the_race_is_no_error(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    started = datetime.now(UTC)
    rows: list[Call] = []
    for round_ in range(ROUNDS):
        workdir = tmp_path / f"round{round_}"
        result = run_sipp(call_settings, "uac_cancel_early.xml", DID, workdir,
                          calls=CALLS, rate=RATE, keys={"caller": "0901000001"},
                          timeout=60)
        assert isinstance(result, SippResult)
        errors = workdir / "uac_cancel_early.xml.errors.log"
        assert result.successful == CALLS and result.failed == 0, (
            f"{result.stats}\n{errors.read_text()[-3000:] if errors.exists() else ''}")

        def all_ended() -> list[Call]:
            found = calls(call_settings)
            return found if all(c.status == "ended" for c in found) else []

        try:  # at once: well before any resync or sweep could close them
            rows = wait_until(all_ended, 3, "calls left active")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{summary(calls(call_settings))}") from None
        if len(rows) >= RACED:
            break
    assert len(rows) >= RACED, (
        f"only {len(rows)} of {ROUNDS * CALLS} CANCELs landed after StasisStart; "
        f"the race was not exercised:\n{summary(rows)}")

    # all of them hung up before the greeting answered (one that answered first is hung
    # up with a BYE by the scenario: none did here, or its outcome would differ)
    assert {c.outcome for c in rows} == {"cancelled_early"}, summary(rows)
    assert all(c.ended_at is not None for c in rows), summary(rows)
    assert all([e.kind for e in c.events].count("ended") == 1 for c in rows), summary(rows)
    # the cause Asterisk gave the hang-up (a CANCEL: 127), from ChannelHangupRequest or,
    # after the continue, ChannelDestroyed; none when the channel was already hanging up
    # as it entered the application (StasisStart, then StasisEnd, nothing else)
    assert {c.hangup_cause for c in rows} <= {127, None}, summary(rows)
    assert {c.hangup_cause_txt for c in rows} <= {
        "caller hung up before the greeting", "Interworking, unspecified"}, summary(rows)

    # the KPIs: contacts, but neither offered nor abandoned
    engine = make_engine(call_settings.database_url)
    try:
        with session_factory(engine)() as session:
            counts = aggregate(session, tenant="city", start=started - timedelta(minutes=1),
                               end=datetime.now(UTC) + timedelta(minutes=1),
                               kpi=call_settings.kpi, tz=call_settings.site.timezone)[()]
    finally:
        engine.dispose()
    assert (counts.contacts, counts.offered, counts.abandoned, counts.answered) == \
        (len(rows), 0, 0, 0), counts

    log = ari_app.output()
    assert "Traceback" not in log and " ERROR " not in log, log[-6000:]
    # the race itself, at INFO (a CANCEL just after the continue ends as any hang-up)
    assert 1 <= log.count("the caller hung up before the greeting") <= len(rows), \
        log[-6000:]
