"""The satisfaction survey on a real call: the operator hangs up first, the caller
answers 4 on the keypad (RFC 4733), the score is stored on the call."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.commands import AgentLogin
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, run_sipp, send, start_phones
from tests.integration.test_queue import calls, members

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]


def test_caller_scores_the_call_after_the_operator_hangs_up(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    # the operator's phone answers, talks 3 s and hangs up
    phones = start_phones(call_settings, ["op01"], tmp_path / "phones",
                          scenario="uas_answer_hangup.xml", extra_args=("-d", "3000"))
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: members(call_settings).get("op01", {}).get("status") ==
                   "not_in_use", 30, "op01 not ready")
        result = run_sipp(call_settings, "uac_survey.xml", "0312345678", tmp_path / "caller",
                          duration_ms=9000, keys={"caller": "0901234567", "rtp_port": "4000"},
                          timeout=60)
        assert result.returncode == 0, result.stdout  # type: ignore[union-attr]
        call = wait_until(lambda: (c := calls(call_settings)) and c[0].status == "ended"
                          and c[0], 15, "call not ended")
        kinds = [e.kind for e in call.events]
        assert "agent_complete" in kinds and "survey_asked" in kinds
        survey = next(e for e in call.events if e.kind == "survey")
        assert survey.data == {"score": 4, "channel": "phone"}
        assert call.survey_score == 4
    finally:
        phones.stop()
