"""Live transcription of an answered call: snoop channels and ExternalMedia to the
transcriber (docs/transcription.md).

When an operator answers (phone or kiosk: both are queued calls), or the citizen
answers a queued callback, two snoop channels are put on the citizen's channel (the
caller's, or the one the callback dialled): ``spy=in`` (what they say) and ``spy=out``
(what the caller hears: the operator, later the staff member). Each snoop is bridged
with an ExternalMedia channel (``slin16``, one-way) that sends RTP to a transcriber
chosen from the heartbeats. The stream is registered in Redis under the address
Asterisk sends from before any audio flows. Because the snoops hang on the caller's
channel, they follow the call through transfers; the ``out`` stream is relabelled
``staff`` when a staff member takes over. At hang-up everything is released: the
snoops end with the caller's channel, the ExternalMedia channels and bridges are
hung up and deleted here, the registrations removed. A transcriber that is not
running or has no model leaves the call alone; the console says so, and the call is
transcribed from the moment one is up (``retry_waiting``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError
from ari_app.notifier import Notifier
from ari_app.session import CallSession
from common.console_events import suggestions_key, transcript_key
from common.keys import Keys
from common.settings import Settings
from common.transcription import (
    COMPONENT,
    StreamInfo,
    TranscriptUpdated,
    control_key,
    segments_key,
    state_key,
    streams_key,
)

logger = logging.getLogger(__name__)

#: Seconds to wait for the new channels' StasisStart before bridging them.
ENTER_TIMEOUT = 5.0
STATE_TTL = 6 * 3600
#: Seconds the live transcript may outlive the hang-up (the transcriber's last words).
HANGUP_GRACE = 10
#: Seconds between looks for a transcriber while answered calls wait for one.
RETRY_SECONDS = 3.0
DIRECTIONS = ("in", "out")  # what the caller says, what the caller hears


class TranscriptionService:
    def __init__(self, ari: AriClient, notifier: Notifier, settings: Settings,
                 client: aioredis.Redis, keys: Keys) -> None:
        self.ari = ari
        self.notifier = notifier
        self.settings = settings
        self.redis = client
        self.keys = keys
        self.cfg = settings.transcription
        self.app = settings.asterisk.ari_app
        self._entered: dict[str, asyncio.Future[None]] = {}
        # answered calls no transcriber took (none up): started when one is
        self._waiting: dict[str, CallSession] = {}

    # --------------------------------------------------------- dispatcher hooks

    def channel_entered(self, channel_id: str) -> None:
        """StasisStart of a channel that is not a call (the dispatcher skips those)."""
        future = self._entered.pop(channel_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _expect(self, channel_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._entered[channel_id] = future
        return future

    # ------------------------------------------------------------------- start

    async def start(self, session: CallSession) -> None:
        """The operator answered: start transcribing in the background (the call's own
        events never wait for it)."""
        running = session.data.get("tx_task")
        if not self.cfg.enabled or session.data.get("tx") or \
                (running is not None and not running.done()):
            return
        if session.kind == "callback" and not session.data.get("tx_target"):
            return  # the citizen has not answered yet (ari_app.callbacks sets the target)
        task = asyncio.create_task(self._start(session), name=f"tx-{session.call_id}")
        session.data["tx_task"] = task

    async def _pick(self) -> tuple[str, int] | str:
        """(host, port) of the least busy transcriber that is up, or why there is none."""
        best: tuple[int, str, int] | None = None
        reason = "the transcriber is not running"
        try:
            async for key in self.redis.scan_iter(match=self.keys.health_pattern(COMPONENT),
                                                  count=100):
                raw: Any = await self.redis.hgetall(key)
                beat = {(k.decode() if isinstance(k, bytes) else k):
                        (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
                if beat.get("state") != "up":
                    reason = f"the transcriber is {beat.get('state', 'down')}: " \
                             f"{beat.get('detail', '')}"
                    continue
                load = int(beat.get("streams", "0") or 0)
                if best is None or load < best[0]:
                    best = (load, beat["rtp_host"], int(beat["rtp_port"]))
        except (RedisError, KeyError, ValueError) as exc:
            return f"cannot find a transcriber: {exc}"
        return (best[1], best[2]) if best else reason

    async def _start(self, session: CallSession) -> None:
        call_id = session.call_id
        target = await self._pick()
        if isinstance(target, str):
            logger.info("%s: no transcription yet (%s)", call_id, target)
            self._waiting[call_id] = session
            await self._state(session, "unavailable", target)
            return
        self._waiting.pop(call_id, None)
        host, port = target
        tx: dict[str, Any] = {"channels": [], "bridges": [], "sources": []}
        session.data["tx"] = tx
        started_at = time.time()
        try:
            for direction in DIRECTIONS:
                speaker = "caller" if direction == "in" else \
                    session.data.get("tx_hears", "operator")
                await self._direction(session, tx, direction, speaker, host, port,
                                      started_at)
        except asyncio.CancelledError:
            raise
        except (AriError, TimeoutError, RedisError) as exc:
            logger.warning("%s: transcription not started: %s", call_id, exc)
            await self._release(session)
            await self._state(session, "unavailable", f"could not start: {exc}")
            return
        logger.info("%s: transcribing to %s:%d", call_id, host, port)
        await self._state(session, "live")

    async def _direction(self, session: CallSession, tx: dict[str, Any], direction: str,
                         speaker: str, host: str, port: int, started_at: float) -> None:
        snoop = f"{session.call_id}-tx-{direction}"
        media = f"{session.call_id}-txm-{direction}"
        entered = [self._expect(snoop), self._expect(media)]
        tx["channels"] += [snoop, media]
        # the citizen's channel: the caller's, or the one a callback dialled
        target = session.data.get("tx_target") or session.channel_id
        await self.ari.post(f"/channels/{target}/snoop", app=self.app,
                            appArgs="transcription", spy=direction, snoopId=snoop)
        reply = await self.ari.post("/channels/externalMedia", app=self.app,
                                    channelId=media, external_host=f"{host}:{port}",
                                    format="slin16", direction="both")
        variables = (reply or {}).get("channelvars") or {}
        local = str(variables.get("UNICASTRTP_LOCAL_ADDRESS", ""))
        if local in ("", "0.0.0.0", "::"):  # nosec B104 # compares an address, binds nothing
            local = self.settings.asterisk.host
        source = f"{local}:{variables.get('UNICASTRTP_LOCAL_PORT', '')}"
        info = StreamInfo(call_id=session.call_id, tenant=session.tenant, speaker=speaker,
                          started_at=started_at,
                          channel=session.service.channel if session.service else "phone",
                          direction=direction)
        await self.redis.hset(streams_key(self.keys), source, info.encode())
        tx["sources"].append(source)
        tx.setdefault("by_direction", {})[direction] = source
        await asyncio.wait_for(asyncio.gather(*entered), ENTER_TIMEOUT)
        bridge = await self.ari.post("/bridges", type="mixing",
                                     name=f"tx-{session.call_id}-{direction}")
        tx["bridges"].append(bridge["id"])
        await self.ari.post(f"/bridges/{bridge['id']}/addChannel",
                            channel=f"{snoop},{media}")

    async def take_over(self, session: CallSession) -> None:
        """A call found talking after a restart: adopt the snoops, ExternalMedia channels,
        bridges and registrations a previous controller made for it (their ids derive
        from the call id), so the hang-up releases them; start afresh when there are
        none."""
        call_id = session.call_id
        try:
            channels = {str(c["id"]) for c in await self.ari.get("/channels") or []}
            bridges = [b for b in await self.ari.get("/bridges") or []
                       if str(b.get("name", "")).startswith(f"tx-{call_id}-")]
            raw: Any = await self.redis.hgetall(streams_key(self.keys))
        except (AriError, RedisError) as exc:
            logger.warning("%s: transcription not taken over: %s", call_id, exc)
            return
        mine = [f"{call_id}-{kind}-{direction}" for direction in DIRECTIONS
                for kind in ("tx", "txm")]
        tx: dict[str, Any] = {"channels": [c for c in mine if c in channels],
                              "bridges": [str(b["id"]) for b in bridges], "sources": [],
                              "by_direction": {}}
        for source, value in (raw or {}).items():
            source = source.decode() if isinstance(source, bytes) else str(source)
            try:
                info = StreamInfo.decode(value)
            except (ValueError, KeyError):
                continue
            if info.call_id == call_id:
                tx["sources"].append(source)
                tx["by_direction"][info.direction] = source
        if not tx["channels"] and not tx["sources"]:
            await self.start(session)
            return
        session.data["tx"] = tx
        logger.info("%s: transcription taken over (%d channel(s), %d bridge(s))", call_id,
                    len(tx["channels"]), len(tx["bridges"]))

    async def retry_waiting(self) -> None:
        """Runs for the controller's life: calls answered while no transcriber was up are
        transcribed from the moment one is (the console's pane turns live)."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            if not self._waiting:
                continue
            if isinstance(await self._pick(), str):
                continue
            waiting, self._waiting = self._waiting, {}
            for call_id, session in waiting.items():
                if session.state == "ended":
                    continue
                logger.info("%s: a transcriber is up; transcription starts now", call_id)
                await self.start(session)  # in the background; waits again if none is up

    # ------------------------------------------------------------- transfers

    async def speaker(self, session: CallSession, speaker: str) -> None:
        """Who the caller hears now (``staff`` after a transfer, ``operator`` again)."""
        session.data["tx_hears"] = speaker  # for a transcription that starts later
        tx = session.data.get("tx")
        source = (tx or {}).get("by_direction", {}).get("out")
        if not source:
            return
        try:
            raw = await self.redis.hget(streams_key(self.keys), source)
            if raw is None:
                return
            data = json.loads(raw)
            if data.get("speaker") == speaker:
                return
            data["speaker"] = speaker
            await self.redis.hset(streams_key(self.keys), source,
                                  json.dumps(data, ensure_ascii=False))
            await self.redis.publish(control_key(self.keys),
                                     json.dumps({"op": "update", "source": source}))
        except RedisError as exc:
            logger.warning("%s: speaker not updated (%s)", session.call_id, exc)

    # ------------------------------------------------------------------ stop

    async def stop(self, session: CallSession) -> None:
        """The call ended: release every channel, bridge and registration."""
        self._waiting.pop(session.call_id, None)
        task = session.data.pop("tx_task", None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if await self._release(session):
            await self._expire_live(session)
            await self._state(session, "ended")

    async def _expire_live(self, session: CallSession) -> None:
        """The live transcript goes at hang-up even when no transcriber hears the stop
        (it was down): it expires ``live_keep_seconds`` after the hang-up, at least
        ``HANGUP_GRACE`` seconds for the transcriber's last words (a running transcriber
        deletes it itself once they are out)."""
        ttl = max(self.cfg.live_keep_seconds, HANGUP_GRACE)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in (segments_key(self.keys, session.call_id),
                            transcript_key(self.keys, session.call_id),
                            suggestions_key(self.keys, session.call_id)):
                    pipe.expire(key, ttl)
                await pipe.execute()
        except RedisError as exc:
            logger.warning("%s: live transcript not set to expire (%s)", session.call_id, exc)

    async def _release(self, session: CallSession) -> bool:
        tx = session.data.pop("tx", None)
        if not tx:
            return False
        for channel in tx["channels"]:
            self._entered.pop(channel, None)
            try:
                await self.ari.delete(f"/channels/{channel}")
            except AriError:
                pass  # the snoops already ended with the caller's channel
        for bridge in tx["bridges"]:
            try:
                await self.ari.delete(f"/bridges/{bridge}")
            except AriError:
                pass
        try:
            if tx["sources"]:
                await self.redis.hdel(streams_key(self.keys), *tx["sources"])
            for source in tx["sources"]:
                await self.redis.publish(control_key(self.keys),
                                         json.dumps({"op": "stop", "source": source}))
        except RedisError as exc:
            logger.warning("%s: transcription registrations not removed (%s)",
                           session.call_id, exc)
        return True

    async def _state(self, session: CallSession, state: str, reason: str = "") -> None:
        value = f"{state}: {reason}" if reason else state
        ttl = STATE_TTL if state != "ended" else max(60, self.cfg.live_keep_seconds)
        try:
            await self.redis.set(state_key(self.keys, session.call_id), value, ex=ttl)
        except RedisError as exc:
            logger.warning("%s: transcription state not saved (%s)", session.call_id, exc)
        await self.notifier.publish(TranscriptUpdated(
            call_id=session.call_id, tenant=session.tenant, what="state", state=state))
