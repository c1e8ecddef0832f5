"""The kiosk bridge: one aiortc ``RTCPeerConnection`` per kiosk session (docs/kiosk.md).

Requests come from web over Redis (``kiosk.request`` records): a new session's offer on
the shared list (any instance takes it), later requests for a session on the list of
the instance that holds it. Answers go back on a per-request reply list. The audio leg
toward Asterisk is asked of ari_app with ``cmd.kiosk.start``; ari_app's ``kiosk.call``
events (queued / connected / ended) arrive on the live event channel.

Shaped like aiortc's ``examples/server/server.py``: one handler per offer, a dict of
sessions, ``connectionstatechange`` ends a session whose network failed, and shutdown
closes every peer connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from redis.exceptions import RedisError

from common.db import init_schema, make_engine, session_factory
from common.events import EventError, decode
from common.health import Heartbeat
from common.keys import Keys
from common.kiosk import (
    KioskBridgeReply,
    KioskBridgeRequest,
    KioskCallState,
    KioskEnd,
    KioskKeys,
    KioskStart,
    purge_session,
)
from common.process import cancel_tasks
from common.settings import Settings
from kiosk_bridge.media import AsteriskAudioTrack, KioskAudioPump, ProxyVideoTrack, RtpLeg

logger = logging.getLogger(__name__)

LEG_TIMEOUT = 20.0  # seconds for ari_app to report the audio leg queued


def ice_servers(settings: Settings) -> list[RTCIceServer]:
    """``kiosk_bridge.ice_servers`` entries: ``url`` or ``url|username|credential``.
    Empty (the default) means host candidates only: never a public STUN server."""
    out = []
    for entry in settings.kiosk_bridge.ice_servers:
        url, _, rest = entry.partition("|")
        username, _, credential = rest.partition("|")
        out.append(RTCIceServer(urls=url, username=username or None,
                                credential=credential or None))
    return out


@dataclass
class Session:
    session_id: str
    kiosk: str
    tenant: str
    pc: RTCPeerConnection
    leg: RtpLeg
    proxy_video: ProxyVideoTrack = field(default_factory=ProxyVideoTrack)
    relay: MediaRelay = field(default_factory=MediaRelay)
    kiosk_video: MediaStreamTrack | None = None
    pump: KioskAudioPump | None = None
    viewers: dict[str, RTCPeerConnection] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    state: str = "connecting"
    closed: bool = False
    started: float = field(default_factory=time.monotonic)


class Bridge:
    def __init__(self, settings: Settings, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.keys = Keys(settings.redis.prefix)
        self.kkeys = KioskKeys(self.keys)
        self.redis = aioredis.Redis.from_url(settings.redis.url)
        self.heartbeat = Heartbeat(self.redis, self.keys.health("kiosk_bridge", self.instance),
                                   settings.ari.heartbeat_interval, self._health_fields)
        self.sync_redis = redis.Redis.from_url(settings.redis.url)
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._factory: Any = None
        self._engine: Any = None
        self.rtc_config = RTCConfiguration(iceServers=ice_servers(settings))

    def _db(self) -> Any:
        if self._factory is None:
            self._engine = make_engine(self.settings.database_url)
            init_schema(self._engine)
            self._factory = session_factory(self._engine)
        return self._factory

    def log(self, session_id: str, msg: str, *args: Any) -> None:
        logger.info("%s " + msg, session_id[:8], *args)

    # ------------------------------------------------------------------ loops

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._db)
        loops = [asyncio.create_task(self._requests(), name="requests"),
                 asyncio.create_task(self._events(), name="events"),
                 asyncio.create_task(self.heartbeat.run(stop), name="heartbeat")]
        await stop.wait()
        await cancel_tasks(loops)
        await self.shutdown()

    async def _requests(self) -> None:
        lists = [self.kkeys.bridge_instance(self.instance), self.kkeys.bridge_requests]
        delay = 0.5
        while True:
            try:
                item: Any = await self.redis.blpop(lists, timeout=1)
                delay = 0.5
            except RedisError as exc:
                logger.warning("request lists unavailable (Redis: %s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            if item is None:
                continue
            try:
                request = decode(item[1])
            except EventError as exc:
                logger.error("rejected a malformed request: %s", exc)
                continue
            if not isinstance(request, KioskBridgeRequest):
                logger.error("rejected a %s on the request list", request.type)
                continue
            self._spawn(self._serve(request), f"request-{request.action}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: KioskBridgeRequest) -> None:
        try:
            if request.action == "offer":
                reply = await self.offer(request)
            elif request.action == "view":
                reply = await self.view(request)
            elif request.action == "hangup":
                session = self.sessions.get(request.session_id)
                if session is not None:
                    await self.close(session, request.reason or "kiosk_hangup")
                reply = KioskBridgeReply(request_id=request.id, ok=True)
            else:
                reply = KioskBridgeReply(request_id=request.id, ok=False, code="bad_action",
                                         error=f"unknown action {request.action!r}")
        except Exception as exc:
            logger.exception("request %s for %s failed", request.action, request.session_id)
            reply = KioskBridgeReply(request_id=request.id, ok=False, code="internal",
                                     error=f"bridge error: {exc}")
        reply = KioskBridgeReply(request_id=reply.request_id, ok=reply.ok, sdp=reply.sdp,
                                 code=reply.code, error=reply.error, instance=self.instance)
        key = self.kkeys.reply(request.id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, reply.encode())
                pipe.expire(key, 60)
                await pipe.execute()
        except RedisError as exc:
            logger.warning("reply to %s not sent (Redis: %s)", request.action, exc)

    async def _events(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.events_live)
                async for message in pubsub.listen():
                    data = message.get("data")
                    if not isinstance(data, bytes) or b'"kiosk.call"' not in data:
                        continue
                    try:
                        event = decode(data)
                    except EventError:
                        continue
                    if isinstance(event, KioskCallState):
                        await self._call_state(event)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("event channel unavailable (Redis: %s); retrying", exc)
                await asyncio.sleep(1)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    async def _call_state(self, event: KioskCallState) -> None:
        session = self.sessions.get(event.session_id)
        if session is None:
            return
        session.state = event.state
        if event.state == "queued" and session.leg.remote is None and event.asterisk_rtp:
            host, _, port = event.asterisk_rtp.rpartition(":")
            if host and port.isdigit():
                session.leg.remote = (host, int(port))
        if event.state == "ended":
            rule = "call_end" if event.reason in ("operator_hangup", "ended") else event.reason
            await self.close(session, rule or "call_end", tell_ari=False)

    async def _health_fields(self) -> dict[str, str]:
        return {"sessions": str(len(self.sessions)), "pid": str(os.getpid())}

    # --------------------------------------------------------------- sessions

    async def offer(self, request: KioskBridgeRequest) -> KioskBridgeReply:
        sid = request.session_id
        raw: Any = await self.redis.hgetall(self.kkeys.session(sid))
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        if "kiosk" not in meta or meta.get("purged"):
            return KioskBridgeReply(request_id=request.id, ok=False, code="unknown_session",
                                    error="no such kiosk session (expired or ended)")
        if sid in self.sessions:
            return KioskBridgeReply(request_id=request.id, ok=False, code="duplicate",
                                    error="this session is already connected")
        bset = self.settings.kiosk_bridge
        leg = await RtpLeg.open(bset.bind, bset.rtp_format, bset.jitter_max_ms, sid[:8])
        pc = RTCPeerConnection(configuration=self.rtc_config)
        session = Session(session_id=sid, kiosk=meta["kiosk"], tenant=meta.get("tenant", ""),
                          pc=pc, leg=leg)
        self.sessions[sid] = session

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.log(sid, "kiosk %s track", track.kind)
            if track.kind == "audio":
                short_audio_buffer(pc, track)
                session.pump = KioskAudioPump(track, leg, bset.jitter_max_ms, sid[:8])
                session.pump.start()
                pc.addTrack(AsteriskAudioTrack(leg))
            elif track.kind == "video" and session.kiosk_video is None:
                session.kiosk_video = track
                sink = session.relay.subscribe(track, buffered=False)
                session.tasks.append(asyncio.get_running_loop().create_task(_drain(sink)))
                pc.addTrack(session.proxy_video)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            self.log(sid, "connection %s", state)
            if state in ("failed", "closed"):
                # not awaited here: closing the connection from its own event handler
                # can wait on itself
                self._spawn(self.close(session, "network"), f"close-{sid[:8]}")
            elif state == "disconnected":
                self._spawn(self._grace(session), f"grace-{sid[:8]}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=request.sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, AttributeError) as exc:  # aiortc's errors for a bad offer
            await self.close(session, "error", tell_ari=False)
            return KioskBridgeReply(request_id=request.id, ok=False, code="bad_offer",
                                    error=f"the kiosk's SDP offer was refused: {exc}")
        host, port = leg.local_address
        await self.redis.hset(self.kkeys.session(sid), mapping={
            "bridge": self.instance, "state": "connecting"})
        start = KioskStart(session_id=sid, tenant=session.tenant, kiosk=session.kiosk,
                           location=meta.get("location", ""), category=meta.get("category", ""),
                           rtp_host=host, rtp_port=port, rtp_format=bset.rtp_format)
        await self.redis.xadd(self.keys.commands, {"c": start.encode()}, maxlen=10000,
                              approximate=True)
        self._spawn(self._watch_leg(session), f"leg-{sid[:8]}")
        self.log(sid, "kiosk %s connected; audio leg asked at %s:%d", session.kiosk, host, port)
        return KioskBridgeReply(request_id=request.id, ok=True, sdp=pc.localDescription.sdp)

    async def view(self, request: KioskBridgeRequest) -> KioskBridgeReply:
        """A console (operator, or staff after a transfer) receives the kiosk's camera and
        sends its own camera to the kiosk."""
        session = self.sessions.get(request.session_id)
        if session is None:
            return KioskBridgeReply(request_id=request.id, ok=False, code="unknown_session",
                                    error="this kiosk session is not connected here")
        old = session.viewers.pop(request.viewer, None)
        if old is not None:
            await old.close()
        pc = RTCPeerConnection(configuration=self.rtc_config)
        session.viewers[request.viewer] = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                session.proxy_video.set_source(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                if session.viewers.get(request.viewer) is pc:
                    session.viewers.pop(request.viewer, None)
                await pc.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=request.sdp, type="offer"))
        except (ValueError, AttributeError) as exc:
            session.viewers.pop(request.viewer, None)
            await pc.close()
            return KioskBridgeReply(request_id=request.id, ok=False, code="bad_offer",
                                    error=f"the console's SDP offer was refused: {exc}")
        if session.kiosk_video is not None:
            pc.addTrack(session.relay.subscribe(session.kiosk_video, buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        self.log(request.session_id, "viewer %s connected", request.viewer)
        return KioskBridgeReply(request_id=request.id, ok=True, sdp=pc.localDescription.sdp)

    async def _grace(self, session: Session) -> None:
        await asyncio.sleep(self.settings.kiosk_bridge.network_grace_seconds)
        if session.pc.connectionState == "disconnected":
            await self.close(session, "network")

    async def _watch_leg(self, session: Session) -> None:
        await asyncio.sleep(LEG_TIMEOUT)
        if session.state == "connecting" and not session.closed:
            logger.error("%s: ari_app did not create the audio leg in %.0f s",
                         session.session_id[:8], LEG_TIMEOUT)
            await self.close(session, "error")

    async def close(self, session: Session, rule: str, tell_ari: bool = True) -> None:
        """End a session: the Asterisk leg and the purge first (they must happen even if
        tearing down the media hangs), then the media."""
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.session_id, None)
        self.log(session.session_id, "closing (%s)", rule)
        if tell_ari:
            end = KioskEnd(session_id=session.session_id, tenant=session.tenant, reason=rule)
            try:
                await self.redis.xadd(self.keys.commands, {"c": end.encode()}, maxlen=10000,
                                      approximate=True)
            except RedisError as exc:
                logger.error("%s: could not ask ari_app to end the leg (Redis: %s)",
                             session.session_id[:8], exc)
        try:
            await asyncio.to_thread(purge_session, self.settings, self.sync_redis,
                                    session.session_id, rule, self._db())
        except RedisError as exc:
            logger.error("%s: purge failed (Redis: %s); the session expires on its own",
                         session.session_id[:8], exc)
        if session.pump is not None:
            await session.pump.stop()
        for task in session.tasks:
            task.cancel()
        session.proxy_video.stop()
        session.leg.close()
        for pc in [*session.viewers.values(), session.pc]:
            try:
                await asyncio.wait_for(pc.close(), 5)
            except TimeoutError:
                logger.warning("%s: a peer connection did not close in 5 s",
                               session.session_id[:8])

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.close(s, "bridge_restart") for s in
                               list(self.sessions.values())), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
        self.sync_redis.close()
        if self._engine is not None:
            self._engine.dispose()


def short_audio_buffer(pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
    """aiortc holds 4 audio packets (80 ms, fixed) before decoding; the bridge has its own
    adaptive buffer behind the decoder (``KioskAudioPump``), so aiortc's is cut to the one
    packet it needs to see a frame complete. Measured in bench/kiosk_bridge.py."""
    for receiver in pc.getReceivers():
        if receiver.track is track:
            receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(  # type: ignore[attr-defined]
                capacity=16, prefetch=1)


async def _drain(track: MediaStreamTrack) -> None:
    """Read a relayed track and drop its frames, so the kiosk's video is decoded once and
    never piles up while no console is watching."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        return
