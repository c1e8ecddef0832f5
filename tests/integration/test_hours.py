"""Service hours on a real call: out of hours and holidays announce the hours and never
queue; a special closed day set by the city applies at once."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from common.db import init_schema, make_engine, session_factory, transaction
from common.models import SpecialDay
from common.prompts import load_prompts, said_name, service_texts
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from stack.voice import BUILD_DIR
from tests.conftest import wait_until
from tests.integration.conftest import (
    Proc,
    ThreadedController,
    ari_app_heartbeat,
    run_sipp,
)
from tests.integration.rtp import RtpListener
from tests.integration.test_first_call import timeline

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

DID = "0312345678"
JST = ZoneInfo("Asia/Tokyo")


@pytest.fixture
def controller_at(call_settings: Settings) -> Iterator[Callable[[datetime], None]]:
    started: list[ThreadedController] = []

    def start(moment: datetime) -> None:
        # the default city rules (weekdays 08:30-17:15, holidays, year end), not the
        # around-the-clock test site
        from common.settings import load_settings

        city = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(call_settings.data_dir)})
        settings = dataclasses.replace(call_settings, services=city.services)
        started.append(ThreadedController(settings, clock=lambda: moment))
        wait_until(lambda: ari_app_heartbeat(call_settings).get("ari") == "up", 15,
                   "controller did not connect")

    yield start
    for controller in started:
        controller.stop()


def call_and_listen(settings: Settings, tmp_path: Path) -> RtpListener:
    listener = RtpListener()
    try:
        result = run_sipp(settings, "uac_listen_wait_bye.xml", DID, tmp_path,
                          keys={"caller": "0901234567", "rtp_port": str(listener.port)})
    finally:
        listener.close()
    assert result.returncode == 0, result.stdout  # answered, announced, hung up by us
    return listener


def ended_call(settings: Settings):  # type: ignore[no-untyped-def]
    def done():  # type: ignore[no-untyped-def]
        calls = timeline(settings)
        return calls[0] if calls and calls[0].status == "ended" else None
    return wait_until(done, 15, "the call was not recorded as ended")


# A closure by the calendar and one by the clock, each a real call (about 27 s: the
# announcement reads the hours out); every other reason (the weekend, 12/29-1/3, special
# days) is the same path with another HoursDecision, decided in tests/unit/test_hours.py.
@pytest.mark.parametrize(("moment", "reason", "detail"), [
    (datetime(2026, 11, 23, 10, 0, tzinfo=JST), "holiday", "勤労感謝の日"),
    (datetime(2026, 11, 25, 18, 0, tzinfo=JST), "after_closing", "17:15"),
])
def test_closed_calls_hear_the_hours_and_are_not_queued(
        asterisk: AsteriskInstance, call_settings: Settings, tmp_path: Path,
        controller_at: Callable[[datetime], None], moment: datetime, reason: str,
        detail: str) -> None:
    controller_at(moment)
    offset = asterisk.full_log.stat().st_size
    heard = call_and_listen(call_settings, tmp_path)
    assert heard.voiced_seconds() > 1.0  # the out-of-hours announcement
    call = ended_call(call_settings)
    assert call.outcome == "out_of_hours" and call.hours_reason == reason
    hours = next(e for e in call.events if e.kind == "hours")
    assert hours.data["open"] is False and hours.data["detail"] == detail
    assert hours.data["next_open"] is not None
    kinds = [e.kind for e in call.events]
    assert "to_queue" not in kinds and "queue_join" not in kinds
    prompt = next(e for e in call.events if e.kind == "prompt")
    assert prompt.data["prompt"] == "out_of_hours"
    # the service's own announcement, in Japanese, with the hours this Asterisk was
    # configured with read out (stack.voice's manifest holds what each file says)
    with asterisk.full_log.open("rb") as fh:
        fh.seek(offset)
        log = fh.read().decode(errors="replace")
    # (signed linear: the synthesised file, not the English core sound's GSM)
    played = re.findall(r"Playing '([^']+)\.sl\w+' \(language 'ja'\)", log)
    assert played and played[0].endswith("/sounds/out_of_hours__citizens"), log[-3000:]
    text = service_texts(load_prompts(), call_settings.services)["out_of_hours__citizens"]
    assert "受付時間は、毎日、24時間です。" in text
    said = asterisk.host_dir / "sounds" / "ja" / "out_of_hours__citizens.sln"
    assert said.read_bytes() == (BUILD_DIR / f"{said_name(text)}.sln").read_bytes()


def test_open_hours_with_an_injected_clock(
        asterisk: AsteriskInstance, call_settings: Settings, tmp_path: Path,
        controller_at: Callable[[datetime], None]) -> None:
    controller_at(datetime(2026, 11, 25, 10, 0, tzinfo=JST))  # a Wednesday morning
    call_and_listen(call_settings, tmp_path)
    call = ended_call(call_settings)
    assert call.hours_reason == "open"
    assert "to_queue" in [e.kind for e in call.events]


def test_special_closed_day_applies_to_the_running_controller(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    engine = make_engine(call_settings.database_url)
    init_schema(engine)
    today = datetime.now(UTC).astimezone(JST).date()
    with transaction(session_factory(engine)) as session:
        session.add(SpecialDay(service_id="citizens", day=today, open=False,
                               note="庁舎停電のため休業", updated_by="admin",
                               updated_at=datetime.now(UTC)))
        session.add(SpecialDay(service_id="citizens", day=date(2000, 1, 1), open=False))
    engine.dispose()
    call_and_listen(call_settings, tmp_path)
    call = ended_call(call_settings)
    assert call.outcome == "out_of_hours" and call.hours_reason == "special_closed"
    assert next(e for e in call.events if e.kind == "hours").data["detail"] == \
        "庁舎停電のため休業"
