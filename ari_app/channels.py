"""What channels Asterisk has, even when ARI cannot say, and the callers stranded in our
Stasis application that no handler owns.

ARI answers ``GET /channels`` with 500 while one channel cannot be encoded as JSON
(bytes that are not UTF-8 in a SIP header it carries): one such channel would make every
resync fail. So the list falls back to AMI's ``CoreShowChannels`` and reads each channel
over ARI on its own; a channel that ARI still cannot read is hung up over AMI when it
sits in our application (its StasisStart could not be encoded either, so nobody handles
it: the caller would ring there forever).

Both count the RTP ports the channels use (health: ``rtp``). The sweep does the same
for an inbound caller that has been inside the application for
``ari.orphan_seconds`` without a session of ours (a StasisStart that never reached us).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from ari_app.ami import AmiConnection
from ari_app.ari_ import AriClient
from ari_app.exceptions import AriError

logger = logging.getLogger(__name__)


def _seconds(duration: str) -> float:
    """AMI's ``Duration`` (``HH:MM:SS``) in seconds."""
    try:
        parts = [int(p) for p in duration.split(":")]
    except ValueError:
        return 0.0
    total = 0
    for part in parts:
        total = total * 60 + part
    return float(total)


def _carries_audio(name: str) -> bool:
    """A channel with an RTP instance: SIP legs and ExternalMedia (Local and Snoop
    channels have none)."""
    return name.startswith(("PJSIP/", "UnicastRTP/"))


class ChannelLister:
    def __init__(self, ari: AriClient, ami: AmiConnection, app: str,
                 orphan_seconds: float) -> None:
        self.ari = ari
        self.ami = ami
        self.app = app
        self.orphan_seconds = orphan_seconds
        self.reaped = 0
        #: RTP ports the channels use now (two per channel carrying audio); None until
        #: first counted
        self.rtp_in_use: int | None = None

    async def channels(self) -> dict[str, dict[str, Any]]:
        """Every channel as ARI describes it, by id (the resync's view)."""
        try:
            listed = {c["id"]: c for c in await self.ari.get("/channels")}
            self.rtp_in_use = 2 * sum(1 for c in listed.values()
                                      if _carries_audio(str(c.get("name", ""))))
            return listed
        except AriError as exc:
            logger.warning("ARI cannot list the channels (%s): listing them over AMI and "
                           "reading each one over ARI", exc)
        out: dict[str, dict[str, Any]] = {}
        entries = await self._ami_channels()
        self.rtp_in_use = 2 * sum(1 for e in entries if _carries_audio(str(e.get("Channel"))))
        for entry in entries:
            uid = str(entry.get("Uniqueid", ""))
            try:
                channel = await self.ari.get(f"/channels/{uid}")
            except AriError as exc:
                if exc.status == 404:
                    continue  # gone meanwhile
                await self._unreadable(entry, f"ARI cannot read it ({exc.status})")
                continue
            if isinstance(channel, dict) and channel.get("id"):
                out[uid] = channel
            else:  # (over the websocket ARI answers such a channel with an empty body)
                await self._unreadable(entry, "ARI cannot read it (no channel in its answer)")
        return out

    async def sweep(self, owned: Collection[str]) -> int:
        """Hang up inbound callers inside our application for longer than
        ``orphan_seconds`` that no session owns; how many were hung up."""
        reaped = 0
        try:
            entries = await self._ami_channels()
        except ConnectionError as exc:
            logger.debug("orphan sweep skipped: %s", exc)
            return 0
        self.rtp_in_use = 2 * sum(1 for e in entries if _carries_audio(str(e.get("Channel"))))
        for entry in entries:
            if str(entry.get("Uniqueid", "")) in owned or not self._inbound(entry):
                continue
            if _seconds(str(entry.get("Duration", ""))) < self.orphan_seconds:
                continue
            await self._unreadable(entry, f"in the application for over "
                                          f"{self.orphan_seconds:g} s with no handler")
            reaped += 1
        return reaped

    def _inbound(self, entry: dict[str, Any]) -> bool:
        return (str(entry.get("Application", "")) == "Stasis"
                and str(entry.get("ApplicationData", "")).startswith(f"{self.app},inbound"))

    async def _ami_channels(self) -> list[dict[str, Any]]:
        replies = await self.ami.action({"Action": "CoreShowChannels"}, as_list=True)
        return [dict(r) for r in replies or [] if r.get("Event") == "CoreShowChannel"]

    async def _unreadable(self, entry: dict[str, Any], why: str) -> None:
        name = str(entry.get("Channel", ""))
        if not self._inbound(entry):
            logger.warning("channel %s: %s; not ours, left alone", name, why)
            return
        logger.warning("channel %s (caller %s): %s; hanging it up so the caller is not "
                       "left ringing", name, entry.get("CallerIDNum", ""), why)
        try:
            await self.ami.action({"Action": "Hangup", "Channel": name, "Cause": "41"})
            self.reaped += 1
        except ConnectionError as exc:
            logger.warning("channel %s not hung up: %s", name, exc)
