"""Bad input gets a clear error, and nothing is lost: real processes, real Asterisk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from common.db import make_engine, session_factory
from common.health import collect
from common.keys import Keys
from common.models import Call
from common.settings import PROJECT_ROOT, Settings, settings_override, to_environ
from stack.asterisk import (
    AsteriskInstance,
    AsteriskStartError,
    AsteriskUnavailable,
    provide,
)
from tests.conftest import wait_until
from tests.integration.conftest import Processes, ari_app_heartbeat, run_sipp
from tests.integration.rtp import RtpListener

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("postgresql")]

DID = "0312345678"


def test_no_asterisk_gives_a_clear_message(stack_settings: Settings, tmp_path: Path) -> None:
    settings = settings_override(stack_settings, asterisk={
        "mode": "rootfs", "rootfs": str(tmp_path / "nowhere")})
    with pytest.raises(AsteriskUnavailable) as info:
        provide(settings, build=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "python -m stack.asterisk provide" in message


def test_second_asterisk_on_a_running_instance_is_refused(asterisk: AsteriskInstance) -> None:
    twin = AsteriskInstance(asterisk.install, asterisk.settings, asterisk.name)
    with pytest.raises(AsteriskStartError) as info:
        twin.start(timeout=5)
    assert "already running" in str(info.value)
    assert "make down" in str(info.value)
    # the running Asterisk was not disturbed
    assert asterisk.responding()
    assert "madoguchi" in asterisk.cli("pjsip show endpoint op01").lower() or \
        "op01" in asterisk.cli("pjsip show endpoint op01")


def test_wrong_ari_password_is_reported_and_retried(
        asterisk: AsteriskInstance, call_settings: Settings, processes: Processes) -> None:
    wrong = settings_override(call_settings, asterisk={"ari_password": "not-the-password"},
                              ari={"backoff_initial": 0.2, "backoff_max": 0.5})
    proc = processes.start("ari_app", "ari_app.main", wrong)

    def retried() -> bool:
        return proc.output().count("ARI refused the credentials") >= 2

    wait_until(retried, 20, "ari_app did not report and retry the refused ARI log-in")
    assert proc.alive(), "ari_app must keep running and retrying"
    assert "MADOGUCHI_ASTERISK__ARI_PASSWORD" in proc.output()
    assert "not-the-password" not in proc.output(), "a secret was logged"
    beat = wait_until(
        lambda: (b := ari_app_heartbeat(call_settings)) and "refused" in b.get("ari_detail", "")
        and b, 10, "the heartbeat does not report the refused ARI log-in")
    assert beat["ari"] == "down" and "refused the credentials" in beat["ari_detail"]
    # the health view says the same
    client = redis.Redis.from_url(call_settings.redis.url)
    engine = make_engine(call_settings.database_url)
    try:
        health = {c.component: c for c in collect(client, Keys(call_settings.redis.prefix),
                                                  engine, call_settings)}
    finally:
        client.close()
        engine.dispose()
    assert not health["ari"].ok and "refused the credentials" in health["ari"].detail
    assert health["ami"].ok, health["ami"].detail  # AMI is independent and fine


def test_call_without_ari_app_reaches_the_dialplan_fallback(
        asterisk: AsteriskInstance, call_settings: Settings, tmp_path: Path) -> None:
    # No ari_app is running: Stasis() fails at once and the dialplan takes over.
    listener = RtpListener()
    try:
        result = run_sipp(call_settings, "uac_listen_wait_bye.xml", DID, tmp_path,
                          keys={"caller": "0901234567", "rtp_port": str(listener.port)},
                          timeout=40)
    finally:
        listener.close()
    assert result.returncode == 0, result.stdout  # answered, and the call ended (BYE)
    assert result.successful == 1
    # the caller heard the apology and the no-operator message, not silence
    assert listener.voiced_seconds() > 1.5, listener.rms_dbfs()
    full_log = asterisk.full_log.read_text(errors="replace")
    assert "citizens@mado-fallback:1" in full_log, "the dialplan fallback was not used"


def test_malformed_settings_name_the_key(call_settings: Settings) -> None:
    env = to_environ(call_settings)
    env["MADOGUCHI_ASTERISK__AMI_PORT"] = "fifty"
    env["PATH"] = os.environ["PATH"]
    out = subprocess.run([sys.executable, "-m", "ari_app.main"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "asterisk.ami_port" in out.stderr
    assert "MADOGUCHI_ASTERISK__AMI_PORT" in out.stderr
    assert "expected a whole number" in out.stderr


def test_ari_app_restart_closes_calls_that_ended_meanwhile(
        asterisk: AsteriskInstance, call_settings: Settings, processes: Processes,
        tmp_path: Path) -> None:
    """A call recorded as active whose channel vanished while ari_app was down is closed
    on resync, not left open forever."""
    from datetime import UTC, datetime

    from ari_app.timeline import NewCall, TimelineStore
    from common.db import init_schema

    engine = make_engine(call_settings.database_url)
    init_schema(engine)
    store = TimelineStore(session_factory(engine))
    store.call_arrived(NewCall("1700000000.1", "city", "citizens", "phone", DID, "0901234567",
                               "", datetime.now(UTC)), {})
    proc = processes.start("ari_app", "ari_app.main", call_settings)

    def closed() -> Call | None:
        with session_factory(engine)() as session:
            call = session.scalars(select(Call)).one()
            return call if call.status == "ended" else None

    call = wait_until(closed, 20, f"resync did not close the stale call:\n{proc.output()}")
    assert call.hangup_cause_txt == "ended while the controller was disconnected"
    engine.dispose()
