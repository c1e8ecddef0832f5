"""Transfers of an answered call to a staff extension or department (C4).

app_queue bridges the caller and the operator itself, outside Stasis. To transfer,
both legs are moved into the controller with one AMI ``Redirect`` (``ExtraChannel``),
which ends the queue part of the call (AgentComplete, reason "transfer"). From then on
the call is driven over ARI with one mixing bridge:

- blind: the operator's leg is released at once (they go on to their next call), the
  caller hears ringing while the staff phone rings; answered → caller and staff are
  bridged.
- attended: caller and operator are bridged again; the caller hears music on hold
  while the operator consults the staff member (operator and staff in the bridge);
  ``complete`` bridges the caller with the staff member and releases the operator,
  ``cancel`` releases the staff phone and returns the caller to the operator.
- the staff phone is busy, unreachable or does not answer: the caller hears why and
  goes back to the operator (their phone rings again), or, when the operator cannot
  take them, to the front of the queue. Never dropped.

Every step is on the call's timeline (kind ``transfer``) and published (``call.transfer``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from ari_app.ami import AmiConnection
from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError, AriNotFound, CommandError
from ari_app.session import CallActions, CallSession, Transfer
from ari_app.supervision import SupervisionService
from ari_app.survey import SurveyService
from ari_app.timeline import TimelineStore
from ari_app.transcription import TranscriptionService
from common.settings import Settings, staff_endpoint

logger = logging.getLogger(__name__)

# Q.850 causes that mean "the staff phone did not take the call"
FAILURE_REASONS = {17: "busy", 18: "no_answer", 19: "no_answer", 20: "unavailable",
                   21: "rejected", 3: "unavailable", 1: "unavailable", 34: "unavailable"}


class TransferService:
    def __init__(self, ari: AriClient, ami: AmiConnection, store: TimelineStore,
                 settings: Settings, calls: CallActions, supervision: SupervisionService,
                 survey: SurveyService, transcription: TranscriptionService | None) -> None:
        self.ari = ari
        self.ami = ami
        self.store = store
        self.settings = settings
        self.calls = calls
        self.supervision = supervision
        self.survey = survey
        self.transcription = transcription
        self.app = settings.asterisk.ari_app
        self.ring_seconds = 20

    # ---------------------------------------------------------- directory

    def resolve(self, tenant: str, target: str) -> tuple[str, str, str]:
        """(extension, endpoint, department) for an extension or a department id."""
        for dep in self.settings.departments:
            if dep.tenant != tenant:
                continue
            if target == dep.id and dep.extensions:
                ext = dep.extensions[0]
                return ext, staff_endpoint(ext), dep.id
            if target in dep.extensions:
                return target, staff_endpoint(target), dep.id
        raise CommandError("unknown_target", f"{target!r} is neither a staff extension nor a "
                           f"department of tenant {tenant!r}")

    # ------------------------------------------------------------ starting

    async def start(self, session: CallSession, kind: str, target: str, note: str) -> None:
        if kind not in ("blind", "attended"):
            raise CommandError("bad_kind", "transfer kind must be blind or attended")
        if session.transfer is not None:
            raise CommandError("transfer_in_progress", "this call is already being transferred")
        agent_channel = session.data.get("agent_channel", "")
        agent_channel_id = session.data.get("agent_channel_id", "")
        if not agent_channel or session.state != "queued":
            raise CommandError("not_connected", "the call is not connected to an operator")
        ext, endpoint, department = self.resolve(session.tenant, target)
        await self.supervision.stop(session, "transferred")
        transfer = Transfer(kind=kind, target=ext, endpoint=endpoint, department=department,
                            note=note, operator=session.data.get("agent", ""),
                            agent_channel=agent_channel_id,
                            started=asyncio.get_running_loop().time())
        caller_name = session.data.get("channel_name", "")
        session.legs.add(agent_channel_id)
        reply = await self._ami({"Action": "Redirect", "Channel": caller_name,
                                 "ExtraChannel": agent_channel, "Context": "mado-stasis",
                                 "Exten": "transfer", "Priority": "1",
                                 "ExtraContext": "mado-stasis", "ExtraExten": "transfer-agent",
                                 "ExtraPriority": "1"})
        if reply is not None and not getattr(reply, "success", True):
            raise CommandError("ami_refused", f"Redirect: {reply.get('Message', '')}")
        session.transfer = transfer
        await self._record(session, "started")

    async def _ami(self, action: dict[str, Any]) -> Any:
        try:
            reply = await self.ami.action(action)
        except ConnectionError as exc:
            raise CommandError("ami_down", f"AMI not connected: {exc}") from None
        return reply[0] if isinstance(reply, list) and reply else reply

    async def refer(self, session: CallSession, event: dict[str, Any]) -> None:
        """The operator's phone sent a REFER (its own transfer button): carry it out as a
        blind transfer, and tell the phone it worked (final NOTIFY)."""
        if "state" in event:
            return  # Asterisk's follow-up report on the same transfer
        refer_to = event.get("refer_to") or {}
        destination = str((refer_to.get("requested_destination") or {}).get(
            "destination", ""))
        channel_id = str(((event.get("referred_by") or {}).get("source_channel") or {}).get(
            "id", ""))
        logger.info("%s: operator's phone transfers to %s", session.call_id, destination)
        try:
            await self.start(session, "blind", destination,
                             session.data.get("note", "") or "(softphone transfer)")
            states = "channel_answered"
        except CommandError as exc:
            logger.info("%s: phone transfer refused: %s", session.call_id, exc)
            states = "channel_declined"
        if channel_id:
            await self._ignore_gone(self.ari.post(f"/channels/{channel_id}/transfer_progress",
                                                  states=states))

    # ------------------------------------------------------------- events

    async def stasis_start(self, session: CallSession, event: dict[str, Any]) -> None:
        transfer = session.transfer
        args = event.get("args") or []
        channel_id = str(event["channel"]["id"])
        if transfer is None:
            logger.warning("%s: transfer leg %s without a transfer", session.call_id, args)
            await self._hangup(channel_id)
            return
        role = args[1] if len(args) > 1 else ""
        if role == "caller":
            transfer.caller_in = True
        elif role == "agent":
            transfer.agent_in = True
            transfer.agent_channel = channel_id
        elif role == "staff":
            await self._staff_answered(session, transfer, channel_id)
            return
        elif role == "return":
            await self._operator_answered_again(session, transfer, channel_id)
            return
        if transfer.phase == "redirecting" and transfer.caller_in and transfer.agent_in:
            await self._both_in(session, transfer)

    async def _both_in(self, session: CallSession, transfer: Transfer) -> None:
        bridge = await self.ari.post("/bridges", type="mixing",
                                     name=f"transfer-{session.call_id}")
        transfer.bridge = bridge["id"]
        session.bridges.add(transfer.bridge)
        if transfer.kind == "blind":
            await self._hangup(transfer.agent_channel)
            transfer.agent_channel = ""
            await self._ignore_gone(self.ari.post(f"/channels/{session.channel_id}/ring"))
            transfer.phase = "ringing"
        else:
            await self.ari.post(f"/bridges/{transfer.bridge}/addChannel",
                                channel=transfer.agent_channel)
            await self._ignore_gone(self.ari.post(f"/channels/{session.channel_id}/moh"))
            transfer.phase = "consulting"
        await self._record(session, "ringing")
        await self._dial_staff(session, transfer)

    async def _dial_staff(self, session: CallSession, transfer: Transfer) -> None:
        staff_id = f"{session.call_id}-staff-{uuid.uuid4().hex[:6]}"
        transfer.staff_channel = staff_id
        session.legs.add(staff_id)
        caller = session.data.get("caller", "")
        try:
            await self.ari.post("/channels", endpoint=f"PJSIP/{transfer.endpoint}",
                                app=self.app, appArgs="transfer,staff", channelId=staff_id,
                                callerId=f'"{caller}" <{caller}>', timeout=self.ring_seconds,
                                variables=None)
        except AriError as exc:
            logger.info("%s: cannot call %s: %s", session.call_id, transfer.endpoint, exc)
            await self.staff_failed(session, "unavailable")

    async def _staff_answered(self, session: CallSession, transfer: Transfer,
                              channel_id: str) -> None:
        transfer.staff_up = True
        await self.ari.post(f"/bridges/{transfer.bridge}/addChannel", channel=channel_id)
        if transfer.kind == "blind" or not transfer.agent_channel:
            await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/ring"))
            await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/moh"))
            await self.ari.post(f"/bridges/{transfer.bridge}/addChannel",
                                channel=session.channel_id)
            transfer.phase = "connected"
            await self._record(session, "answered")
        else:
            await self._record(session, "consulting")

    async def complete(self, session: CallSession) -> None:
        transfer = session.transfer
        if transfer is None or transfer.kind != "attended":
            raise CommandError("no_consultation", "there is no consultation to complete")
        if transfer.phase != "consulting" or not transfer.staff_channel:
            raise CommandError("staff_not_answered", "the staff member has not answered yet")
        await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/moh"))
        await self.ari.post(f"/bridges/{transfer.bridge}/addChannel",
                            channel=session.channel_id)
        if transfer.agent_channel:
            await self._hangup(transfer.agent_channel)
            transfer.agent_channel = ""
        transfer.phase = "connected"
        await self._record(session, "answered")

    async def cancel(self, session: CallSession) -> None:
        transfer = session.transfer
        if transfer is None or transfer.kind != "attended" or transfer.phase == "connected":
            raise CommandError("no_consultation", "there is no consultation to cancel")
        staff = transfer.staff_channel
        transfer.staff_channel = ""
        if staff:
            await self._hangup(staff)
        await self._back_to_operator(session, transfer, "cancelled")

    async def leg_destroyed(self, session: CallSession, event: dict[str, Any]) -> None:
        """A leg other than the caller's ended (staff, operator)."""
        transfer = session.transfer
        channel_id = str(event["channel"]["id"])
        session.legs.discard(channel_id)
        if transfer is None:
            if channel_id == session.data.pop("adopted_staff", None):
                # the staff member of a transfer taken over after a restart hung up first
                await self._after_staff(session)
            return
        if channel_id == transfer.staff_channel:
            transfer.staff_channel = ""
            if not transfer.staff_up:
                cause = event.get("cause")
                reason = FAILURE_REASONS.get(cause if isinstance(cause, int) else -1,
                                             "no_answer")
                await self.staff_failed(session, reason)
            elif transfer.phase == "consulting":
                # the staff member hung up during the consultation
                await self._back_to_operator(session, transfer, "staff_hung_up")
            elif transfer.phase == "connected":
                await self._after_staff(session)
        elif channel_id == transfer.agent_channel:
            transfer.agent_channel = ""
            if transfer.phase == "consulting" and transfer.staff_channel and \
                    transfer.staff_up:
                # the operator hung up while consulting: the caller goes to the staff member
                await self.complete_without_operator(session, transfer)
            elif transfer.phase == "returning":
                await self._to_queue_front(session, transfer)

    async def _after_staff(self, session: CallSession) -> None:
        """The staff member hung up first: survey the caller, or end the call."""
        if self.survey.wanted(session):
            await self.survey.ask(session)
        else:
            await self._hangup(session.channel_id)

    async def complete_without_operator(self, session: CallSession,
                                        transfer: Transfer) -> None:
        await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/moh"))
        await self.ari.post(f"/bridges/{transfer.bridge}/addChannel",
                            channel=session.channel_id)
        transfer.phase = "connected"
        await self._record(session, "answered")

    async def staff_failed(self, session: CallSession, reason: str) -> None:
        transfer = session.transfer
        if transfer is None:
            return
        await self._record(session, "failed", reason=reason)
        await self._back_to_operator(session, transfer, reason)

    async def _back_to_operator(self, session: CallSession, transfer: Transfer,
                                reason: str) -> None:
        await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/ring"))
        await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/moh"))
        if reason not in ("cancelled",):
            await self.calls.play_prompt(session, "transfer_failed")
        if transfer.agent_channel:
            # attended: the operator is still in the bridge
            await self.ari.post(f"/bridges/{transfer.bridge}/addChannel",
                                channel=session.channel_id)
            transfer.phase = "connected_back"
            await self._record(session, "returned", reason=reason)
            session.transfer = None
            return
        # blind: ring the operator again
        transfer.phase = "returning"
        leg = f"{session.call_id}-return-{uuid.uuid4().hex[:6]}"
        session.legs.add(leg)
        transfer.agent_channel = leg
        try:
            await self.ari.post("/channels", endpoint=f"PJSIP/{transfer.operator}",
                                app=self.app, appArgs="transfer,return", channelId=leg,
                                timeout=self.ring_seconds)
        except AriError:
            await self._to_queue_front(session, transfer)

    async def _operator_answered_again(self, session: CallSession, transfer: Transfer,
                                       channel_id: str) -> None:
        await self.ari.post(f"/bridges/{transfer.bridge}/addChannel", channel=channel_id)
        await self.ari.post(f"/bridges/{transfer.bridge}/addChannel",
                            channel=session.channel_id)
        await self._record(session, "returned", reason="operator")
        session.transfer = None

    async def _to_queue_front(self, session: CallSession, transfer: Transfer) -> None:
        await self._record(session, "returned", reason="queue_front")
        session.transfer = None
        if transfer.bridge:
            session.bridges.discard(transfer.bridge)
            await self._ignore_gone(self.ari.delete(f"/bridges/{transfer.bridge}"))
        queue = session.service.queue if session.service else ""
        await self.ari.post(f"/channels/{session.channel_id}/continue",
                            context="mado-queue-front", extension=queue, priority=1)

    async def caller_gone(self, session: CallSession) -> None:
        """The caller hung up: release every other leg and every bridge of the call."""
        transfer = session.transfer
        if transfer is not None and transfer.phase not in ("connected",):
            await self._record(session, "abandoned")
        for leg in list(session.legs):
            await self._hangup(leg)
        for bridge in list(session.bridges):
            await self._ignore_gone(self.ari.delete(f"/bridges/{bridge}"))
        session.bridges.clear()

    # ----------------------------------------------------- after a restart

    async def take_over(self, session: CallSession) -> None:
        """After a restart: the caller is inside a transfer a previous controller began.
        Asterisk still has its channels and bridge (their ids and names derive from the
        call id); the call's last ``transfer`` row says what it was. It goes on from
        where it is: caller and staff talking stay so; a staff phone still ringing is
        waited for; one answered meanwhile is joined; one that stopped ringing (or a
        staff member who left the consultation) sends the caller back as usual."""
        call_id = session.call_id
        try:
            channels = {str(c["id"]): c for c in await self.ari.get("/channels") or []}
            bridge = next((b for b in await self.ari.get("/bridges") or []
                           if b.get("name") == f"transfer-{call_id}"), None)
        except AriError as exc:
            logger.warning("%s: transfer not taken over: %s", call_id, exc)
            return
        members = [str(c) for c in (bridge or {}).get("channels") or []]
        if bridge is not None:
            session.bridges.add(str(bridge["id"]))
        if session.channel_id in members:
            await self._take_over_connected(session, members)
            return
        row = await asyncio.to_thread(self.store.last_event, call_id, "transfer")
        result = str((row or {}).get("result", ""))
        if row is None or result not in ("started", "ringing", "consulting") or \
                (bridge is None) != (result == "started"):
            await self._drop_unrecorded(session, result, channels, bridge, members)
            return
        transfer = self._recorded(row)
        session.transfer = transfer
        if bridge is None:
            await self._take_over_redirected(session, transfer, channels)
            return
        await self._take_over_bridged(session, transfer, channels, bridge, members)
        await self._go_on_from_staff(session, transfer, result, channels)

    async def _take_over_connected(self, session: CallSession, members: list[str]) -> None:
        """Caller and staff were talking: the staff leg becomes the call's (its hang-up ends it)."""
        for leg in members:
            if leg != session.channel_id:
                await self._adopt(session, leg)
                session.data["adopted_staff"] = leg
        logger.info("%s watched again after a restart (transferred, %d leg(s))",
                    session.call_id, len(session.legs))

    async def _drop_unrecorded(self, session: CallSession, result: str, channels: dict[str, Any],
                               bridge: Any, members: list[str]) -> None:
        """No record matches what Asterisk has: release the legs, caller to the queue front."""
        call_id = session.call_id
        logger.warning("%s: caller left inside a transfer with no record of it (%s); to "
                       "the front of the queue", call_id, result or "no record")
        for leg in members + [c for c in channels if c.startswith(f"{call_id}-staff-")]:
            await self._hangup(leg)
        stray = Transfer(kind="blind", target="", endpoint="", department="", note="",
                         operator="", bridge=str((bridge or {}).get("id", "")))
        session.transfer = stray
        await self._to_queue_front(session, stray)

    @staticmethod
    def _recorded(row: dict[str, Any]) -> Transfer:
        """The transfer as its last timeline row describes it, the caller already in."""
        return Transfer(kind=str(row.get("kind", "blind")), target=str(row["target"]),
                        endpoint=staff_endpoint(str(row["target"])),
                        department=str(row.get("department", "")),
                        note=str(row.get("note", "")), operator=str(row.get("operator", "")),
                        caller_in=True, started=asyncio.get_running_loop().time())

    async def _take_over_redirected(self, session: CallSession, transfer: Transfer,
                                    channels: dict[str, Any]) -> None:
        """The controller died between the Redirect and the bridge: go on from there."""
        # the operator's leg waits in Stasis too, unless they hung up
        agent = next((cid for cid, c in channels.items()
                      if str((c.get("dialplan") or {}).get("app_data", "")).endswith(
                          "transfer,agent")
                      and str(c.get("name", "")).startswith(f"PJSIP/{transfer.operator}-")),
                     "")
        if agent:
            transfer.agent_channel, transfer.agent_in = agent, True
            await self._adopt(session, agent)
        else:
            transfer.kind = "blind"  # no operator left to consult with
        logger.info("%s watched again after a restart (transfer redirected, %s)",
                    session.call_id, "operator waiting" if agent else "operator gone")
        await self._both_in(session, transfer)

    async def _take_over_bridged(self, session: CallSession, transfer: Transfer,
                                 channels: dict[str, Any], bridge: Any, members: list[str]) -> None:
        """The bridge is up: rebuild who is in it (operator, staff) and watch them."""
        call_id = session.call_id
        staff = next((c for c in channels if c.startswith(f"{call_id}-staff-")), "")
        agent = next((m for m in members if m != staff), "")
        transfer.bridge = str(bridge["id"])
        transfer.agent_channel, transfer.agent_in = agent, bool(agent)
        transfer.staff_channel = staff
        transfer.staff_up = bool(staff) and staff in members
        transfer.phase = "consulting" if transfer.kind == "attended" else "ringing"
        for leg in (agent, staff):
            if leg:
                await self._adopt(session, leg)
        logger.info("%s watched again after a restart (transfer %s, staff %s)", call_id,
                    transfer.phase, "gone" if not staff else
                    "talking" if transfer.staff_up else
                    str(channels[staff].get("state", "")).lower())

    async def _go_on_from_staff(self, session: CallSession, transfer: Transfer, result: str,
                                channels: dict[str, Any]) -> None:
        """Act on what the staff phone did meanwhile (still ringing or consulting: nothing)."""
        staff = transfer.staff_channel
        if not staff:
            if result == "consulting":  # the staff member had answered and left
                await self._back_to_operator(session, transfer, "staff_hung_up")
            else:  # the staff phone stopped ringing while no controller was there
                await self.staff_failed(session, "no_answer")
        elif not transfer.staff_up and \
                (channels[staff].get("dialplan") or {}).get("app_name") == "Stasis":
            # answered while no controller was there: its StasisStart went to nobody
            await self._staff_answered(session, transfer, staff)
        elif transfer.staff_up and not transfer.agent_channel:
            # the operator left meanwhile (or a blind transfer was half joined): caller and
            # staff talk
            await self._ignore_gone(self.ari.delete(f"/channels/{session.channel_id}/ring"))
            await self.complete_without_operator(session, transfer)

    async def _adopt(self, session: CallSession, leg: str) -> None:
        session.legs.add(leg)
        await self.calls.resubscribe(leg)

    # ------------------------------------------------------------ helpers

    async def _record(self, session: CallSession, result: str, reason: str = "") -> None:
        transfer = session.transfer
        if transfer is None:
            return
        data = {"kind": transfer.kind, "target": transfer.target,
                "department": transfer.department, "operator": transfer.operator,
                "result": result, "reason": reason, "note": transfer.note}
        at = datetime.now(UTC)
        await asyncio.to_thread(self.store.record, session.call_id, "transfer", at,
                                data, f"transfer:{result}:{at.timestamp():.6f}")
        await self.calls.publish_transfer(session, data)
        if self.transcription is not None and result in ("answered", "returned"):
            await self.transcription.speaker(
                session, "staff" if result == "answered" else "operator")

    async def _hangup(self, channel_id: str) -> None:
        if channel_id:
            await self._ignore_gone(self.ari.delete(f"/channels/{channel_id}"))

    @staticmethod
    async def _ignore_gone(coro: Any) -> None:
        try:
            await coro
        except AriNotFound:
            pass
        except AriError as exc:
            if exc.status not in (404, 409, 422):
                raise
