"""The first call, end to end, on real parts: SIPp -> Asterisk 22 -> ari_app -> SQL/Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from common.bus import read_events
from common.db import make_engine, session_factory
from common.events import decode
from common.keys import Keys
from common.models import Call
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, run_sipp
from tests.integration.rtp import RtpListener

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("postgresql")]

DID = "0312345678"


def timeline(settings: Settings, call_id: str | None = None) -> list[Call]:
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            stmt = select(Call)
            if call_id:
                stmt = stmt.where(Call.id == call_id)
            calls = list(session.scalars(stmt))
            for call in calls:
                _ = call.events  # load while the session is open
            return calls
    finally:
        engine.dispose()


def events_of(settings: Settings) -> list:  # type: ignore[type-arg]
    client = redis.Redis.from_url(settings.redis.url)
    try:
        return [decode(body) for _sid, body in read_events(client, Keys(settings.redis.prefix))]
    finally:
        client.close()


def test_call_to_did_is_answered_greeted_and_recorded(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    result = run_sipp(call_settings, "uac_pcap_wait_bye.xml", DID, tmp_path,
                      keys={"caller": "0901234567"})
    # SIPp: INVITE answered with 200 OK, speech played, the system's BYE answered.
    assert result.returncode == 0, result.stdout
    assert result.successful == 1 and result.failed == 0, result.stats

    def ended() -> list[Call]:
        calls = timeline(call_settings)
        return calls if calls and calls[0].status == "ended" else []

    (call,) = wait_until(ended, 15, "the call's timeline was not completed")
    assert call.did == DID
    assert call.caller == "0901234567"
    assert call.tenant_id == "city" and call.service_id == "citizens"
    assert call.answered_at is not None and call.ended_at is not None
    assert call.arrived_at <= call.answered_at <= call.ended_at
    assert call.hangup_cause == 16  # normal clearing: the system hung up after the queue
    kinds = [e.kind for e in call.events]
    # StasisStart seen by ari_app -> arrived; on to the queue, the greeting as early media,
    # answered once it was heard (docs/security.md: no answer before the queue), end.
    assert kinds[0] == "arrived", kinds
    assert "prompt" in kinds and "prompt_end" in kinds and "to_queue" in kinds
    assert kinds.index("prompt_end") < kinds.index("answered") < kinds.index("ended"), kinds
    assert kinds[-1] == "ended"
    greeting_end = next(e for e in call.events if e.kind == "prompt_end")
    assert greeting_end.data == {"prompt": "greeting", "state": "finished"}
    assert greeting_end.at <= call.answered_at
    assert call.events[0].data["channel_name"].startswith("PJSIP/carrier-")

    # The same facts were published on Redis for the console.
    published = [e for e in events_of(call_settings) if e.type.startswith("call.")]
    types = [e.type for e in published]
    assert types[0] == "call.arrived", types
    assert types.index("call.prompt") < types.index("call.answered") < types.index("call.ended")
    assert "call.ended" in types
    arrived = published[0]
    assert arrived.call_id == call.id and arrived.did == DID and arrived.caller == "0901234567"


def test_caller_hears_the_greeting(asterisk: AsteriskInstance, ari_app: Proc,
                                   call_settings: Settings, tmp_path: Path) -> None:
    listener = RtpListener()
    try:
        result = run_sipp(call_settings, "uac_listen_wait_bye.xml", DID, tmp_path,
                          keys={"caller": "0901234567", "rtp_port": str(listener.port)})
    finally:
        listener.close()
    assert result.returncode == 0, result.stdout
    assert listener.packets > 50, "no audio reached the caller"
    # hello-world (~1.3 s) then the no-operator announcement: real speech, not silence
    assert listener.voiced_seconds() > 1.0, listener.rms_dbfs()


def test_unknown_did_gets_an_announcement_and_is_logged(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    listener = RtpListener()
    try:
        result = run_sipp(call_settings, "uac_listen_wait_bye.xml", "0399999999", tmp_path,
                          keys={"caller": "0901234567", "rtp_port": str(listener.port)})
    finally:
        listener.close()
    assert result.returncode == 0, result.stdout
    assert listener.voiced_seconds() > 1.0

    def ended() -> list[Call]:
        calls = timeline(call_settings)
        return calls if calls and calls[0].status == "ended" else []

    (call,) = wait_until(ended, 15, "the rejected call was not recorded")
    assert call.outcome == "rejected" and call.service_id is None
    assert "rejected" in [e.kind for e in call.events]
    assert "call.rejected" in [e.type for e in events_of(call_settings)]
