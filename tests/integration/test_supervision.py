"""Supervisor listen / whisper / barge through ARI snoop on a real call."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.commands import AgentLogin
from common.console_events import SupervisorListen, SupervisorListenStop
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, send, start_phones
from tests.integration.test_queue import calls, members
from tests.integration.test_transfer import ari, assert_nothing_left, connected_call

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]


@pytest.mark.parametrize("mode", ["listen", "barge"])
def test_supervisor_listens_to_an_operator_call(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings, tmp_path: Path,
        mode: str) -> None:
    # op01 takes the call; the supervisor's phone is op07 (not logged in to the queue)
    phones = start_phones(call_settings, ["op01", "op07"], tmp_path / "phones")
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("status") ==
                   "not_in_use", 30, "op01 not ready")
        caller, call_id = connected_call(call_settings, tmp_path, 14000)
        bad = send(call_settings, SupervisorListen(tenant="city", call_id=call_id, mode="spy",
                                                   endpoint="op07"))
        assert not bad["ok"] and bad["code"] == "bad_mode"
        result = send(call_settings, SupervisorListen(tenant="city", call_id=call_id,
                                                      mode=mode, endpoint="1007",
                                                      supervisor="sv1"))
        assert result["ok"], result

        def supervision(result: str) -> bool:
            call = next(c for c in calls(call_settings) if c.id == call_id)
            return any(e.kind == "supervision" and e.data["result"] == result
                       for e in call.events)

        wait_until(lambda: supervision("connected"), 15,
                   f"supervisor not connected:\n{ari_app.output()[-2000:]}")
        names = [c["name"] for c in ari(call_settings, "/channels")]
        assert any(n.startswith("Snoop/") for n in names), names
        assert any(n.startswith("PJSIP/op07") for n in names), names
        again = send(call_settings, SupervisorListen(tenant="city", call_id=call_id,
                                                     mode=mode, endpoint="op07"))
        assert not again["ok"] and again["code"] == "already_listening"
        assert send(call_settings, SupervisorListenStop(tenant="city", call_id=call_id,
                                                        endpoint="op07"))["ok"]
        wait_until(lambda: supervision("stopped"), 10, "supervision not stopped")
        wait_until(lambda: not [c for c in ari(call_settings, "/channels")
                                if c["name"].startswith(("Snoop/", "PJSIP/op07"))], 10,
                   "snoop or supervisor leg left behind")
        assert caller.wait(60) == 0  # the call itself went on undisturbed
        assert_nothing_left(call_settings, asterisk)
    finally:
        phones.stop()
