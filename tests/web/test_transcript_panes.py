"""The case card's live panes: transcript, FAQ suggestions with matched words, and
"transcription unavailable"; the transcript.updated event reaches the console without
text."""

from __future__ import annotations

import json
from typing import Any

import redis
from flask import Flask

from common.console_events import suggestions_key, transcript_key
from common.keys import Keys
from common.models.accounts import User
from common.transcription import TranscriptUpdated, state_key
from tests.web.test_console import add_call, keys, people, signed_in  # noqa: F401
from web.sse import Viewer, project


def test_live_panes_show_transcript_suggestions_and_state(
        app: Flask, people: dict[str, User], rds: redis.Redis, keys: Keys) -> None:  # noqa: F811
    add_call(app, "c1")
    client = signed_in(app, "op1")
    rds.rpush(transcript_key(keys, "c1"), json.dumps(
        {"at": 0, "speaker": "caller", "text": "住民票を取りたいです"}))
    rds.set(suggestions_key(keys, "c1"), json.dumps(
        [{"item_id": 7, "title": "住民票の写しの取り方", "score": 0.9,
          "matched": ["住民票"]}]))
    rds.set(state_key(keys, "c1"), "live")
    live = client.get("/calls/c1/live").get_data(as_text=True)
    assert "住民票を取りたいです" in live and "#7" in live
    assert "住民票の写しの取り方" in live and "(住民票)" in live
    assert "利用できません" not in live
    rds.set(state_key(keys, "c1"), "unavailable: the transcriber is not running")
    card = client.get("/calls/c1?partial=1").get_data(as_text=True)
    assert "この通話の音声認識は利用できません。" in card
    assert signed_in(app, "op2").get("/calls/c1/live").status_code == 404


def test_transcript_event_is_projected_without_text() -> None:
    ev = TranscriptUpdated(call_id="c1", tenant="city", what="final")
    viewer: Any = Viewer(user_id=1, tenant="city", roles=frozenset({"operator"}),
                         endpoint="op01", extension="")
    assert project(ev, viewer, {}, lambda _i: None) == \
        {"call_id": "c1", "what": "final", "state": "live"}
    other: Any = Viewer(user_id=2, tenant="town", roles=frozenset({"operator"}),
                        endpoint="op04", extension="")
    assert project(ev, other, {}, lambda _i: None) is None
