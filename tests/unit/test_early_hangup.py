"""A caller who hangs up between StasisStart and the ``continue`` (ari_app.services): the
request fails with 409 (no longer in Stasis) or 404 (gone), or is accepted while the
hang-up is under way; ARI then sends ChannelHangupRequest and StasisEnd, and no
ChannelDestroyed (the subscription came too late). The events are the ones Asterisk 22
sent in tests/integration/test_early_cancel.py, trimmed; ARI is a stand-in answering as
Asterisk did, Redis and the database are real."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from ari_app.exceptions import AriError, AriNotFound
from ari_app.notifier import Notifier
from ari_app.services import CallService
from ari_app.session import CallSession
from ari_app.timeline import CachedCalendar, CalendarStore, Recorder, TimelineStore
from common.db import init_schema, make_engine, session_factory
from common.keys import Keys
from common.models import Call
from common.settings import Settings, load_settings, settings_override

SITE = Path(__file__).resolve().parents[1] / "integration" / "site-test.toml"
CHANNEL = "1796419743.2"
CHANNEL_JSON = {"id": CHANNEL, "name": "PJSIP/carrier-00000002", "state": "Ring",
                "caller": {"name": "0901000001", "number": "0901000001"},
                "dialplan": {"context": "from-trunk", "exten": "0312345678", "priority": 4,
                             "app_name": "Stasis", "app_data": "mado-test,inbound"}}
START = {"type": "StasisStart", "timestamp": "2026-12-04T21:29:03.101+0000",
         "args": ["inbound"], "channel": CHANNEL_JSON}
HANGUP = {"type": "ChannelHangupRequest", "timestamp": "2026-12-04T21:29:03.104+0000",
          "cause": 127, "channel": CHANNEL_JSON}
END = {"type": "StasisEnd", "timestamp": "2026-12-04T21:29:03.104+0000",
       "channel": CHANNEL_JSON}


class Ari:
    """ARI as it answered when the CANCEL won: the continue with ``status`` (204:
    accepted), the subscription with 422 once the channel is gone."""

    app = "mado-test"

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[str] = []

    async def post(self, path: str, **_params: Any) -> Any:
        self.requests.append(path)
        if path.endswith("/continue"):
            if self.status == 404:
                raise AriNotFound("POST", path, '{"message":"Channel not found"}')
            if self.status == 409:
                raise AriError("POST", path, 409,
                               '{"message":"Channel not in Stasis application"}')
            return None
        if self.status != 204 and "/subscription" in path:
            raise AriError("POST", path, 422, '{"message":"Event source does not exist"}')
        return None

    async def get(self, path: str, **_params: Any) -> Any:
        return {}


@pytest.fixture
def site(settings: Settings) -> Settings:
    """The integration site (a service open around the clock for the DID)."""
    base = load_settings({"MADOGUCHI_SITE__DATA_DIR": settings.site.data_dir,
                          "MADOGUCHI_CONFIG": str(SITE)})
    return settings_override(base, redis={"url": settings.redis.url},
                             database={"url": settings.database_url})


@pytest.mark.parametrize("status", [409, 404, 204], ids=["not-in-stasis", "gone", "accepted"])
def test_a_hang_up_before_the_continue_ends_the_call_at_stasis_end(
        site: Settings, status: int, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(site.database_url)
    init_schema(engine)
    factory = session_factory(engine)

    async def scenario() -> Call:
        client = aioredis.Redis.from_url(site.redis.url)
        recorder = Recorder(Notifier(client, Keys(site.redis.prefix), 1000).publish)
        writer = asyncio.ensure_future(recorder.run())
        service = CallService(Ari(status), TimelineStore(factory), Notifier(  # type: ignore[arg-type]
            client, Keys(site.redis.prefix), 1000), site,
            CachedCalendar(CalendarStore(factory)), recorder=recorder)
        session = CallSession(channel_id=CHANNEL, call_id=CHANNEL)
        try:
            await service.inbound(session, START)
            service.hangup_requested(session, HANGUP)
            await service.left_app(session, END)
            assert session.state == "ended"
            await recorder.flush()
        finally:
            writer.cancel()
            await client.aclose()
        with factory() as db:
            call = db.scalars(select(Call).where(Call.id == CHANNEL)).one()
            _ = call.events
            return call

    with caplog.at_level(logging.INFO):
        call = asyncio.run(scenario())
    engine.dispose()
    assert call.status == "ended" and call.outcome == "cancelled_early"
    assert (call.hangup_cause, call.hangup_cause_txt) == (127, "caller hung up before the greeting")
    assert [e.kind for e in call.events].count("ended") == 1
    assert call.queued_at is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "the caller hung up before the greeting" in caplog.text
    if status != 204:
        assert f"continue -> {status}" in caplog.text
