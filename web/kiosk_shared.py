"""What the kiosk blueprints share (``web.kiosk``, ``web.kiosk_console``,
``web.kiosk_fleet``), without routes: the Redis keys, the JSON error of the kiosk
API, requests to kiosk_bridge and their replies, and the kiosk's rows on a call's
timeline (docs/kiosk.md).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify

from common.events import EventError, decode
from common.kiosk import KioskBridgeReply, KioskBridgeRequest, KioskKeys
from common.models.calls import Call, CallEvent
from web.db import get_redis, get_settings, resources

logger = logging.getLogger(__name__)

#: The devices a kiosk reports in its heartbeat (the fleet view shows them).
DEVICES = ("camera", "document_camera", "microphone", "speaker", "card_reader", "keypad")
#: Longest SDP offer accepted from a browser (the kiosk page's or a console's).
MAX_SDP = 64 * 1024


def kk() -> KioskKeys:
    return KioskKeys(resources().keys)


def api_error(status: int, code: str, message: str) -> Response:
    response = jsonify({"ok": False, "code": code, "error": message})
    response.status_code = status
    return response


def bridge_request(req: KioskBridgeRequest, instance: str = "",
                   timeout: float | None = None) -> KioskBridgeReply | None:
    """Hand a request to kiosk_bridge and wait for its reply (None: no bridge answered)."""
    settings = get_settings()
    r = get_redis()
    keys = kk()
    target = keys.bridge_instance(instance) if instance else keys.bridge_requests
    body = req.encode()
    r.rpush(target, body)
    deadline = time.monotonic() + (timeout or settings.kiosk_bridge.answer_timeout)
    while time.monotonic() < deadline:
        wait = max(1, min(3, math.ceil(deadline - time.monotonic())))
        item: Any = r.blpop([keys.reply(req.id)], timeout=wait)
        if item is None:
            continue
        try:
            reply = decode(item[1])
        except EventError:
            return None
        return reply if isinstance(reply, KioskBridgeReply) else None
    r.lrem(target, 1, body)  # nobody took it: do not leave it for a later bridge
    return None


def add_timeline_event(call_id: str, kind: str, data: dict[str, Any], dedup: str) -> None:
    """A kiosk row (a still, a card step) on the call's timeline, if the call exists."""
    try:
        with resources().factory() as db, db.begin():
            if db.get(Call, call_id) is not None:
                db.add(CallEvent(call_id=call_id, at=datetime.now(UTC), kind=kind,
                                 source="web", dedup_key=dedup, data=data))
    except Exception:  # noqa: BLE001 - the still or step is kept; only this row is missing
        logger.exception("timeline row %s for %s not written", kind, call_id)
