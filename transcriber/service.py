"""The transcriber process: RTP in, masked segments out (Redis, SQL), FAQ suggestions.

One UDP port receives every stream (``transcription.rtp_bind``/``rtp_port``); a packet's
source address says which stream it belongs to, looked up in the Redis hash that
ari_app fills before the audio flows (``common.transcription.streams_key``). Nothing
about a stream is held only here, so a restarted transcriber picks its calls up again
from the next packet. See docs/transcription.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import insert

from common.bus import apublish
from common.console_events import suggestions_key, transcript_key
from common.db import init_schema, make_engine
from common.health import Heartbeat
from common.keys import Keys
from common.masking import join_japanese_words, mask_personal_data
from common.models.transcripts import TranscriptSegment
from common.process import cancel_tasks
from common.settings import Settings
from common.transcription import (
    COMPONENT,
    StreamInfo,
    TranscriptUpdated,
    control_key,
    segments_key,
    streams_key,
)
from faq.search import make_encoder
from faq.store import FaqSearch
from transcriber import rtp
from transcriber.engine import Engine, Segment, Stream
from transcriber.exceptions import ModelError
from transcriber.model import load_model
from transcriber.suggest import Searcher, Suggester

logger = logging.getLogger(__name__)

#: Live keys of a call expire this long after their last write even if no stop comes.
LIVE_TTL = 6 * 3600
#: Words of a stream that already ended (its last ones) expire this soon at the latest.
ENDED_TTL = 10
#: Seconds between two look-ups of an unknown source address.
LOOKUP_INTERVAL = 0.5
#: Most segments kept in memory while the database is unreachable.
MAX_UNSAVED = 20000


def clean_text(text: str) -> str:
    """What leaves the process: Japanese words joined, personal data masked."""
    return mask_personal_data(join_japanese_words(text))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, service: TranscriberService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.service.packet(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


class TranscriberService:
    def __init__(self, settings: Settings, instance: str | None = None,
                 searcher_factory: Callable[[], Searcher | None] | None = None,
                 model_loader: Callable[[str], Any] | None = None) -> None:
        self.settings = settings
        self.cfg = settings.transcription
        self.keys = Keys(settings.redis.prefix)
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.redis = aioredis.Redis.from_url(settings.redis.url)
        self.heartbeat = Heartbeat(self.redis, self.keys.health(COMPONENT, self.instance),
                                   settings.ari.heartbeat_interval, self._health_fields)
        self.model_loader = model_loader
        self.searcher_factory = searcher_factory or self._default_searcher
        self.engine: Engine | None = None
        self.state = "starting"
        self.detail = "loading the speech model"
        self.problem = ""  # ModelError.problem while the model cannot be used
        self.problem_path = ""
        self.streams: dict[str, Stream] = {}
        self._lookups: dict[str, float] = {}
        self._out: asyncio.Queue[tuple[Stream, Segment]] = asyncio.Queue()
        self._unsaved: list[dict[str, Any]] = []
        self._seq = 0
        self._partial_event_at: dict[str, float] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._db: Any = None
        self.suggester = Suggester(None, self._publish_suggestions,
                                   self.cfg.suggest_window_seconds,
                                   self.cfg.suggest_debounce_seconds, self.cfg.suggestions)

    # ------------------------------------------------------------------ life

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self.heartbeat.run(stop), name="heartbeat"))
        await self._start_model(stop)
        if self.engine is not None:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(self.cfg.rtp_bind, self.cfg.rtp_port))
            self._transport = transport
            self._tasks += [
                asyncio.create_task(self._writer(), name="writer"),
                asyncio.create_task(self._control(), name="control"),
                asyncio.create_task(self._sweep(), name="sweep"),
                asyncio.create_task(self._saver(), name="saver"),
            ]
            self.state, self.detail = "up", "ready"
            self.heartbeat.changed()
            logger.info("transcriber ready: RTP on %s:%d, %d recognizer thread(s)",
                        self.cfg.rtp_bind, self.cfg.rtp_port, self.cfg.workers)
            searcher = await asyncio.to_thread(self._make_searcher)
            self.suggester.searcher = searcher
        await stop.wait()

    async def _start_model(self, stop: asyncio.Event) -> None:
        """Load the model; while it cannot be loaded, say why and try again now and then
        (the folder may be fixed without restarting)."""
        while not stop.is_set():
            try:
                model = await asyncio.to_thread(self._load_model)
            except ModelError as exc:
                if self.state != "unavailable":
                    logger.error("transcription unavailable: %s", exc)
                self.state, self.detail = "unavailable", str(exc)
                self.problem, self.problem_path = exc.problem, exc.path
                self.heartbeat.changed()
                try:
                    await asyncio.wait_for(stop.wait(), 30)
                except TimeoutError:
                    pass
                continue
            self.problem = self.problem_path = ""
            self.engine = Engine(model, self._segment_from_thread, self.cfg.workers,
                                 self.cfg.vad_threshold_dbfs, self.cfg.vad_hangover_ms,
                                 self.cfg.partial_interval)
            return

    def _load_model(self) -> Any:
        """The configured model with the decoder settings (or a test's own loader)."""
        if self.model_loader is not None:
            return self.model_loader(self.cfg.model_path)
        cfg = self.cfg
        overrides = {"max-active": str(cfg.max_active) if cfg.max_active > 0 else "",
                     "beam": f"{cfg.beam:g}" if cfg.beam > 0 else "",
                     "lattice-beam": f"{cfg.lattice_beam:g}" if cfg.lattice_beam > 0 else ""}
        return load_model(cfg.model_path, overrides,
                          self.settings.data_dir / "speech-models")

    def _make_searcher(self) -> Searcher | None:
        try:
            return self.searcher_factory()
        except Exception:  # suggestions are optional: transcripts go on without them
            logger.exception("FAQ suggestions unavailable")
            return None

    def _default_searcher(self) -> Searcher | None:
        client = redis.Redis.from_url(self.settings.redis.url)
        searcher = FaqSearch(client, make_encoder(self.cfg.faq_encoder), self.keys.prefix)
        searcher.refresh(wait=True)
        return searcher

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for stream in list(self.streams.values()):
            if self.engine is not None:
                self.engine.close(stream)
        if self.engine is not None:
            await asyncio.to_thread(self.engine.shutdown)
        await self._drain()
        await self.suggester.close()
        await cancel_tasks(self._tasks)
        await self._save_batch()
        try:
            await self.redis.delete(self.keys.health(COMPONENT, self.instance))
        except RedisError:
            pass
        await self.redis.aclose()
        if self._db is not None:
            self._db.dispose()

    # ------------------------------------------------------------------ audio

    def packet(self, data: bytes, addr: tuple[Any, int]) -> None:
        key = f"{addr[0]}:{addr[1]}"
        stream = self.streams.get(key)
        if stream is None:
            self._lookup(key)
            return
        pkt = rtp.parse(data)
        if pkt is not None and self.engine is not None:
            self.engine.push(stream, pkt.payload, pkt.timestamp, time.time())

    def _lookup(self, key: str) -> None:
        now = time.monotonic()
        if now - self._lookups.get(key, -LOOKUP_INTERVAL) < LOOKUP_INTERVAL:
            return
        self._lookups[key] = now
        task = asyncio.get_running_loop().create_task(self._open(key))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _open(self, key: str) -> None:
        try:
            raw = await self.redis.hget(streams_key(self.keys), key)
        except RedisError as exc:
            logger.warning("cannot look up stream %s: %s", key, exc)
            return
        if raw is None or key in self.streams or self.engine is None:
            return
        try:
            info = StreamInfo.decode(raw)
        except (ValueError, KeyError) as exc:
            logger.warning("bad stream registration for %s: %s", key, exc)
            return
        self.streams[key] = self.engine.new_stream(key, info)
        self._lookups.pop(key, None)
        logger.info("%s: transcribing %s from %s", info.call_id, info.speaker, key)

    async def _control(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(control_key(self.keys))
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        body = json.loads(message["data"])
                    except (TypeError, ValueError):
                        continue
                    await self._command(str(body.get("op", "")), str(body.get("source", "")))
            except RedisError as exc:
                logger.warning("control channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1)
            finally:
                try:
                    await pubsub.aclose()
                except RedisError:
                    pass

    async def _command(self, op: str, source: str) -> None:
        stream = self.streams.get(source)
        if stream is None:
            return
        if op == "stop":
            self._close(stream, "stopped")
        elif op == "update":
            raw = await self.redis.hget(streams_key(self.keys), source)
            if raw is not None:
                stream.info = StreamInfo.decode(raw)
                logger.info("%s: stream %s is now %s", stream.info.call_id, source,
                            stream.info.speaker)

    def _close(self, stream: Stream, why: str) -> None:
        self.streams.pop(stream.key, None)
        assert self.engine is not None  # nosec B101 # type narrowing, not a check
        self.engine.close(stream)
        logger.info("%s: %s stream %s ended (%s; %d packets, %.1f s of speech)",
                    stream.info.call_id, stream.info.speaker, stream.key, why, stream.packets,
                    stream.voiced_frames * 0.02)
        if not any(s.info.call_id == stream.info.call_id for s in self.streams.values()):
            call_id = stream.info.call_id
            # after the recognizer's last words are out (the close is queued behind them)
            asyncio.get_running_loop().call_later(
                2.0, lambda: asyncio.ensure_future(self._call_done(call_id)))

    async def _call_done(self, call_id: str) -> None:
        if any(s.info.call_id == call_id for s in self.streams.values()):
            return
        self.suggester.forget(call_id)
        self._partial_event_at.pop(call_id, None)
        live = (segments_key(self.keys, call_id), transcript_key(self.keys, call_id),
                suggestions_key(self.keys, call_id))
        try:
            if self.cfg.live_keep_seconds > 0:
                for key in live:
                    await self.redis.expire(key, self.cfg.live_keep_seconds)
            else:
                await self.redis.delete(*live)
        except RedisError as exc:
            logger.warning("%s: live transcript not cleared (%s); it expires", call_id, exc)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for stream in list(self.streams.values()):
                if now - stream.last_packet > self.cfg.idle_timeout:
                    self._close(stream, "no audio")
            for key, at in list(self._lookups.items()):
                if now - at > 60:
                    self._lookups.pop(key, None)

    # ----------------------------------------------------------------- output

    def _segment_from_thread(self, stream: Stream, segment: Segment) -> None:
        assert self._loop is not None  # nosec B101 # type narrowing, not a check
        self._loop.call_soon_threadsafe(self._out.put_nowait, (stream, segment))

    async def _drain(self) -> None:
        while not self._out.empty():
            stream, segment = self._out.get_nowait()
            await self._write(stream, segment)

    async def _writer(self) -> None:
        while True:
            stream, segment = await self._out.get()
            try:
                await self._write(stream, segment)
            except RedisError as exc:
                logger.warning("%s: segment not published (Redis: %s)", stream.info.call_id,
                               exc)

    async def _write(self, stream: Stream, segment: Segment) -> None:
        info = stream.info
        text = clean_text(segment.text)
        if not text:
            return
        self._seq += 1
        now = time.time()
        fields: dict[Any, Any] = {
            "kind": segment.kind, "speaker": info.speaker, "text": text,
            "start": f"{segment.start:.2f}", "end": f"{segment.end:.2f}",
            "confidence": f"{segment.confidence:.3f}", "at": f"{now:.3f}",
            "recv_at": f"{segment.recv_at:.3f}", "seq": str(self._seq)}
        seg_key = segments_key(self.keys, info.call_id)
        # the last words after the hang-up must not give the live transcript its life back
        ttl = max(ENDED_TTL, self.cfg.live_keep_seconds) if stream.closed else LIVE_TTL
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(seg_key, fields, maxlen=5000, approximate=True)
            pipe.expire(seg_key, ttl)
            if segment.kind == "final":
                line = {"at": now, "speaker": info.speaker, "text": text,
                        "start": round(segment.start, 2), "end": round(segment.end, 2),
                        "confidence": segment.confidence}
                tkey = transcript_key(self.keys, info.call_id)
                pipe.rpush(tkey, json.dumps(line, ensure_ascii=False))
                pipe.expire(tkey, ttl)
            await pipe.execute()
        if segment.kind == "final":
            if self.cfg.retention_days > 0 and len(self._unsaved) < MAX_UNSAVED:
                self._unsaved.append({
                    "call_id": info.call_id, "tenant_id": info.tenant,
                    "speaker": info.speaker, "start": round(segment.start, 2),
                    "end": round(segment.end, 2), "confidence": segment.confidence,
                    "text": text, "created_at": datetime.now(UTC)})
            if info.speaker == "caller":
                self.suggester.note(info.call_id, info.tenant, info.channel, segment.end, text)
            await self._event(info, "final")
        else:
            last = self._partial_event_at.get(info.call_id, 0.0)
            if now - last >= 1.0:
                self._partial_event_at[info.call_id] = now
                await self._event(info, "partial")

    async def _event(self, info: StreamInfo, what: str) -> None:
        await apublish(self.redis, self.keys,
                       TranscriptUpdated(call_id=info.call_id, tenant=info.tenant, what=what),
                       self.settings.redis.event_stream_maxlen)

    async def _publish_suggestions(self, call_id: str, tenant: str,
                                   items: list[dict[str, Any]]) -> None:
        key = suggestions_key(self.keys, call_id)
        try:
            ended = call_id not in self.suggester.calls  # the call is over meanwhile
            await self.redis.set(key, json.dumps(items, ensure_ascii=False),
                                 ex=max(ENDED_TTL, self.cfg.live_keep_seconds) if ended
                                 else LIVE_TTL)
            await apublish(self.redis, self.keys,
                           TranscriptUpdated(call_id=call_id, tenant=tenant,
                                             what="suggestions"),
                           self.settings.redis.event_stream_maxlen)
        except RedisError as exc:
            logger.warning("%s: suggestions not published (Redis: %s)", call_id, exc)
        logger.info("%s: FAQ suggestions %s", call_id, [i["item_id"] for i in items])

    # --------------------------------------------------------------- database

    async def _saver(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._save_batch()

    async def _save_batch(self) -> None:
        if not self._unsaved:
            return
        batch, self._unsaved = self._unsaved, []
        try:
            await asyncio.to_thread(self._insert, batch)
        except Exception as exc:  # the database may be down: keep the rows, try again
            logger.warning("%d transcript segment(s) not saved yet: %s", len(batch), exc)
            self._unsaved = batch + self._unsaved

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self._db is None:
            engine = make_engine(self.settings.database_url)
            init_schema(engine)
            self._db = engine
        with self._db.begin() as conn:
            conn.execute(insert(TranscriptSegment), rows)

    # --------------------------------------------------------------- health

    def health_fields(self) -> dict[str, str]:
        host = self.cfg.advertise_host or self.cfg.rtp_bind
        engine = self.engine
        rtf = (engine.busy_seconds / engine.audio_seconds
               if engine is not None and engine.audio_seconds else 0.0)
        return {"state": self.state, "detail": self.detail, "problem": self.problem,
                "model_path": self.problem_path or self.cfg.model_path, "rtp_host": host,
                "rtp_port": str(self.cfg.rtp_port), "streams": str(len(self.streams)),
                "rtf": f"{rtf:.3f}", "pid": str(os.getpid())}

    async def _health_fields(self) -> dict[str, str]:
        return self.health_fields()


__all__ = ["TranscriberService", "clean_text"]
