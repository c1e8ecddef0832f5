from __future__ import annotations

import json

import pytest

from common.events import REGISTRY, CallArrived, CallEnded, EventError, decode


def test_round_trip_keeps_type_version_and_fields() -> None:
    event = CallArrived(call_id="1.1", tenant="city", service="citizens", channel="phone",
                        did="0312345678", caller="0901234567", caller_name="山田")
    back = decode(event.encode())
    assert back == event
    wire = json.loads(event.encode())
    assert wire["type"] == "call.arrived" and wire["version"] == 1
    assert "山田" in event.encode()  # UTF-8, not escaped


@pytest.mark.parametrize(("text", "words"), [
    ("nope", "not JSON"),
    ("[]", "JSON object"),
    ('{"type": "call.unknown", "version": 1}', "unknown event type"),
    ('{"type": "call.ended", "version": 9, "id": "x", "at": "2026-01-01T00:00:00+00:00", '
     '"data": {}}', "version 9 not supported"),
    ('{"type": "call.ended", "version": 1, "id": "x", "at": "2026-01-01T00:00:00+00:00", '
     '"data": {"call_id": "1", "tenant": "c", "cause": "sixteen", "cause_txt": ""}}',
     "expected an integer"),
    ('{"type": "call.ended", "version": 1, "id": "x", "at": "2026-01-01T00:00:00+00:00", '
     '"data": {"call_id": "1", "extra": 1}}', "unknown fields"),
    ('{"type": "call.ended", "version": 1, "id": "x", "at": "2026-01-01T00:00:00+00:00", '
     '"data": {"call_id": "1"}}', "call.ended"),
    ('{"type": "call.ended", "version": 1, "at": "yesterday", "data": {}}', "bad envelope"),
])
def test_bad_events_are_rejected_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(EventError) as info:
        decode(text)
    assert words in str(info.value)


def test_every_event_type_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    for name in REGISTRY:
        assert f"`{name}`" in doc, f"{name} missing from docs/events.md"
    assert CallEnded.type == "call.ended"


def test_every_product_event_decodes_without_importing_its_module() -> None:
    import subprocess
    import sys

    code = ("from common.events import decode; "
            "import json; "
            "e = decode(json.dumps({'type': 'device.state', 'version': 1, 'id': 'x', "
            "'at': '2026-01-01T00:00:00+00:00', 'data': {'tenant': 'city', "
            "'extension': '2001', 'state': 'in_use'}})); print(e.state)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "in_use"
