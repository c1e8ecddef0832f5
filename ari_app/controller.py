"""Wiring of the call controller: ARI, AMI, Redis, the database, dispatch, heartbeat."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ari_app.ami import AmiConnection
from ari_app.ari_ import AriClient
from ari_app.callbacks import CallbackService, callback_of_channel
from ari_app.channels import ChannelLister
from ari_app.commands import CommandConsumer
from ari_app.exceptions import AriError, AriUnavailable, CommandError
from ari_app.kiosk import KioskService
from ari_app.notifier import Notifier
from ari_app.presence import PresenceMonitor
from ari_app.queues import QueueManager
from ari_app.services import CallService
from ari_app.session import CallSession
from ari_app.sites import SiteWatch
from ari_app.stasis import StasisDispatcher
from ari_app.supervision import SupervisionService
from ari_app.survey import SurveyService
from ari_app.timeline import CachedCalendar, CalendarStore, Recorder, TimelineStore
from ari_app.transcription import TranscriptionService
from ari_app.transfers import TransferService
from common import commands as cmds
from common.console_events import SupervisorListen, SupervisorListenStop
from common.db import init_schema, make_engine, session_factory
from common.events import ComponentState
from common.health import Heartbeat
from common.keys import Keys
from common.kiosk import KioskEnd, KioskStart
from common.process import cancel_tasks
from common.settings import Settings

logger = logging.getLogger(__name__)


class Controller:
    def __init__(self, settings: Settings, instance: str | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        ast = settings.asterisk
        self.keys = Keys(settings.redis.prefix)
        self.ari = AriClient(ast.ari_url, ast.ari_user, ast.ari_password, ast.ari_app,
                             settings.ari.backoff_initial, settings.ari.backoff_max)
        self.ami = AmiConnection(ast.host, ast.ami_port, ast.ami_user, ast.ami_secret,
                                 reconnect_delay=max(1.0, settings.ari.backoff_initial))
        # a blocking pool: under a burst, a publish waits for a free connection instead
        # of failing with "Too many connections"
        self.redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis.url, max_connections=64, timeout=20))
        self.engine = make_engine(settings.database_url)
        init_schema(self.engine)
        factory = session_factory(self.engine)
        self.store = TimelineStore(factory, settings.site.id)
        self.notifier = Notifier(self.redis, self.keys, settings.redis.event_stream_maxlen)
        self.recorder = Recorder(self.notifier.publish)
        self.transcription = TranscriptionService(self.ari, self.notifier, settings,
                                                  self.redis, self.keys)
        self.service = CallService(self.ari, self.store, self.notifier, settings,
                                   CachedCalendar(CalendarStore(factory)), clock=clock,
                                   recorder=self.recorder, transcription=self.transcription)
        self.queues = QueueManager(self.ami, self.redis, self.keys, self.store, self.notifier,
                                   settings, self.recorder)
        self.commands = CommandConsumer(self.redis, self.keys, self.notifier, self.instance)
        self.commands.register(cmds.AgentLogin, self.queues.login)
        self.commands.register(cmds.AgentLogout, self.queues.logout)
        self.commands.register(cmds.AgentPause, self.queues.pause)
        self.commands.register(cmds.AgentUnpause, self.queues.pause)
        self.commands.register(cmds.CallTransfer, self._transfer)
        self.commands.register(cmds.CallTransferComplete, self._transfer_complete)
        self.commands.register(cmds.CallTransferCancel, self._transfer_cancel)
        self.commands.register(SupervisorListen, self._listen)
        self.commands.register(SupervisorListenStop, self._listen_stop)
        self.presence = PresenceMonitor(self.ami, self.redis, self.keys, self.notifier, settings)
        self.queues.on_agent_connect = self._agent_connected
        self.queues.resolve_call = self._resolve_queue_caller
        # each feature gets what it needs; none of them knows the call service itself
        self.supervision = SupervisionService(self.ari, self.store, settings)
        self.survey = SurveyService(self.ari, self.store, settings, self.service)
        self.transfers = TransferService(self.ari, self.ami, self.store, settings,
                                         self.service, self.supervision, self.survey,
                                         self.transcription)
        self.callbacks = CallbackService(self.ari, self.store, settings, factory,
                                         self.service, self.transcription)
        self.dispatcher = StasisDispatcher(self.service, self.transfers, self.callbacks,
                                           self.survey, self.supervision, self.transcription)
        self.kiosk = KioskService(self.ari, self.store, self.recorder, settings, self.service,
                                  self.transfers, self.dispatcher, self.redis, self.keys)
        self.dispatcher.kiosk = self.kiosk
        self.commands.register(KioskStart, self.kiosk.start)
        self.commands.register(KioskEnd, self.kiosk.end)
        self.ari.on_event = self.dispatcher.on_event
        self.heartbeat = Heartbeat(self.redis, self.keys.health("ari_app", self.instance),
                                   settings.ari.heartbeat_interval, self._health_fields)
        self.ari.on_connect.append(self.resync)
        self.ari.on_disconnect.append(self._ari_down)
        self.lister = ChannelLister(self.ari, self.ami, ast.ari_app, settings.ari.orphan_seconds)
        self._synced = False  # a resync finished since ARI last connected
        # the health page sees ARI and AMI come and go when it happens
        self.ari.on_connect.append(self._health_changed)
        self.ami.on_login.append(self.heartbeat.changed)
        self.ami.on_disconnect.append(self.heartbeat.changed)
        self.asterisk_state: dict[str, str] = {"asterisk": "down",
                                               "asterisk_detail": "not contacted yet"}
        # the two-site form: every site's state, and a lost site's cut calls (docs/sites.md)
        self.sites = SiteWatch(settings, self.redis, self.keys, self.notifier.publish,
                               factory, self.store) if settings.this_site else None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        await self.ami.start()
        self._tasks = [
            asyncio.create_task(self.ari.run(), name="ari-websocket"),
            asyncio.create_task(self.heartbeat.run(), name="heartbeat"),
            asyncio.create_task(self.commands.run(), name="commands"),
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self.callbacks.run_due(), name="callbacks"),
            asyncio.create_task(self.transcription.retry_waiting(),
                                name="transcription-retry"),
            asyncio.create_task(self._sweep_orphans(), name="orphan-sweep"),
        ]
        if self.sites is not None:
            self._tasks.append(asyncio.create_task(self.sites.run(), name="sites"))
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        try:  # what the calls already reported goes to the database before we stop
            await asyncio.wait_for(self.recorder.flush(), 10)
        except TimeoutError:
            logger.error("timeline writes still pending at shutdown")
        await cancel_tasks(self._tasks)
        await self.dispatcher.close()
        self.ami.close()
        await self.ari.close()
        try:
            await self.redis.delete(self.keys.health("ari_app", self.instance))
        except RedisError:
            pass
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()
        self.engine.dispose()

    def _resolve_queue_caller(self, event: Any) -> tuple[str, bool]:
        """(call id, is a callback placeholder) of an AMI queue event's caller."""
        cb_id = callback_of_channel(str(event.get("Channel", "")))
        if cb_id is None:
            return str(event.get("Uniqueid", "")), False
        call_id = self.callbacks.call_of.get(cb_id)
        if call_id is None:
            callback = self.callbacks.load(cb_id)
            call_id = callback.call_id if callback else ""
            if call_id:
                self.callbacks.call_of[cb_id] = call_id
        return call_id, True

    # --------------------------------------------------------------- transfers

    def _agent_connected(self, call_id: str, agent: str, channel_name: str,
                         channel_id: str) -> None:
        self.dispatcher.submit(call_id, "MadoAgentConnected", agent=agent,
                               channel_name=channel_name, agent_channel_id=channel_id)
        self.kiosk.agent_connected(call_id, agent)

    async def _on_call(self, tenant: str, call_id: str,
                       action: Callable[[CallSession], Awaitable[None]]) -> None:
        async def guarded(session: CallSession) -> None:
            if session.tenant != tenant:
                raise CommandError("unknown_call", f"no call {call_id} for tenant {tenant}")
            await action(session)

        future = self.dispatcher.submit(call_id, "MadoCall", call=guarded)
        if future is None:
            raise CommandError("unknown_call", f"no call {call_id} in progress here")
        await asyncio.wait_for(future, 15)

    async def _transfer(self, cmd: cmds.CallTransfer) -> None:
        await self._on_call(cmd.tenant, cmd.call_id,
                            lambda s: self.transfers.start(s, cmd.kind, cmd.target, cmd.note))

    async def _transfer_complete(self, cmd: cmds.CallTransferComplete) -> None:
        await self._on_call(cmd.tenant, cmd.call_id, self.transfers.complete)

    async def _transfer_cancel(self, cmd: cmds.CallTransferCancel) -> None:
        await self._on_call(cmd.tenant, cmd.call_id, self.transfers.cancel)

    async def _listen(self, cmd: SupervisorListen) -> None:
        await self._on_call(cmd.tenant, cmd.call_id, lambda s: self.supervision.start(
            s, cmd.mode, cmd.endpoint, cmd.supervisor))

    async def _listen_stop(self, cmd: SupervisorListenStop) -> None:
        await self._on_call(cmd.tenant, cmd.call_id,
                            lambda s: self.supervision.stop(s, "stopped"))

    # ------------------------------------------------------------------ resync

    async def resync(self) -> None:
        """After every (re)connect: reconcile our calls with what Asterisk has now.

        Asterisk does not resend StasisStart after a reconnect, so: calls we think are
        active but whose channel is gone are closed on the timeline; calls still alive
        are watched again; callers left inside our Stasis app are sent on.
        """
        await self._publish_component("ari", "up")
        await self.service.load_prompts_from_asterisk()
        channels = await self.lister.channels()
        # channels inside Stasis right now (the application's channel_ids also lists the
        # channels it merely watches)
        in_app = {cid for cid, c in channels.items()
                  if (c.get("dialplan") or {}).get("app_name") == "Stasis"}
        # of those, callers that arrived and were never sent on (the others are in a
        # transfer or another step of ours: they are watched, not routed afresh)
        inbound = {cid for cid in in_app if f"{self.settings.asterisk.ari_app},inbound" in
                   str((channels[cid].get("dialplan") or {}).get("app_data", ""))}
        await self.recorder.flush()
        active = await asyncio.to_thread(self.store.active_call_ids)
        for call_id in active:
            if call_id in self.dispatcher.sessions:
                continue
            channel = channels.get(call_id)
            if channel is None:
                await self.service.ended_while_away(call_id)
            else:
                self.dispatcher.adopt(channel, in_stasis=call_id in inbound)
        for channel_id in inbound - set(active):
            self.dispatcher.adopt(channels[channel_id], in_stasis=True)
        logger.info("resync: %d channel(s) in Asterisk, %d active call(s) on record, "
                    "%d in our app", len(channels), len(active), len(in_app))
        self._synced = True
        self.heartbeat.changed()  # (the RTP ports just counted)

    async def _sweep_orphans(self) -> None:
        """Every few seconds, once resynced: inbound callers stranded in the application
        with no session (ari_app.channels)."""
        every = max(1.0, self.settings.ari.orphan_seconds / 2)
        while True:
            await asyncio.sleep(every)
            if self._synced and self.ari.connected.is_set():
                try:
                    await self.lister.sweep(set(self.dispatcher.sessions))
                except Exception:  # noqa: BLE001 - the next sweep tries again
                    logger.exception("orphan sweep failed")

    async def _ari_down(self) -> None:
        self._synced = False
        self.heartbeat.changed()
        await self._publish_component("ari", "down", self.ari.last_error)

    async def _publish_component(self, component: str, state: str, detail: str = "") -> None:
        await self.notifier.publish(ComponentState(component=component, instance=self.instance,
                                                   state=state, detail=detail))

    # --------------------------------------------------------------- heartbeat

    async def _probe_asterisk(self) -> None:
        if not self.ari.connected.is_set():
            self.asterisk_state = {"asterisk": "down", "asterisk_detail":
                                   self.ari.last_error or "ARI not connected"}
            return
        try:
            info = await self.ari.get("/asterisk/info")
            system = info.get("system", {})
            status = info.get("status", {})
            self.asterisk_state = {
                "asterisk": "up",
                "asterisk_detail": f"Asterisk {system.get('version', '?')}, up since "
                                   f"{status.get('startup_time', '?')}",
            }
        except (AriError, AriUnavailable) as exc:
            self.asterisk_state = {"asterisk": "down", "asterisk_detail": str(exc)}

    async def _health_fields(self) -> dict[str, str]:
        await self._probe_asterisk()
        return {
            **self.asterisk_state,
            "ari": "up" if self.ari.connected.is_set() else "down",
            "ari_detail": "connected" if self.ari.connected.is_set()
            else (self.ari.last_error or "connecting"),
            "ami": "up" if self.ami.logged_in.is_set() else "down",
            "ami_detail": "logged in" if self.ami.logged_in.is_set()
            else (self.ami.last_error or "connecting"),
            "active_calls": str(len(self.dispatcher.sessions)),
            "rtp_in_use": "" if self.lister.rtp_in_use is None else str(self.lister.rtp_in_use),
            "rtp_ports": str(self.settings.asterisk.rtp_end - self.settings.asterisk.rtp_start
                             + 1),
            "pid": str(os.getpid()),
        }

    async def _health_changed(self) -> None:
        self.heartbeat.changed()
