"""The remote window's shared contract: kiosk identity, session keys, events, purge.

Used by web (the kiosk page's API and the console), kiosk_bridge (WebRTC) and ari_app
(the Asterisk leg). Nothing here imports a service. docs/kiosk.md describes the session.

Kiosk credentials: a kiosk proves who it is with ``<kiosk id>:<secret>``. Production keeps
only the argon2 hash of the secret in the site file (``kiosks[].credential_hash``);
development derives each kiosk's secret from ``web.secret_key`` so nothing is stored.
``python -m web.cli kiosk credential k01`` makes a new credential and its hash, and
``python -m web.cli kiosk dev-url k01`` prints a development kiosk's start URL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common import audit
from common.bus import publish
from common.events import Event, event
from common.keys import Keys
from common.models.calls import Call, CallEvent
from common.settings import Kiosk, Settings

logger = logging.getLogger(__name__)

SESSION_STATES = ("connecting", "queued", "connected", "ended")


# ------------------------------------------------------------------------------ keys


@dataclass(frozen=True)
class KioskKeys:
    """Redis names of the remote window (live state only; all of it expires)."""

    keys: Keys

    def session(self, session_id: str) -> str:
        """Hash with one kiosk session: kiosk, tenant, state, call id, bridge, token hash."""
        return f"{self.keys.prefix}:kiosk:session:{session_id}"

    def stills(self, session_id: str) -> str:
        """Hash still id -> JPEG bytes of the session's document-camera stills."""
        return f"{self.keys.prefix}:kiosk:session:{session_id}:stills"

    def card(self, session_id: str) -> str:
        """Hash with the four card-surface items read at the kiosk (name, address, birth,
        sex), this session only. The state of the card flow is in the session hash
        (``card_*`` fields: never the data)."""
        return f"{self.keys.prefix}:kiosk:session:{session_id}:card"

    def requests(self, session_id: str) -> str:
        """List of pending requests from the operator to the kiosk page (e.g. a still)."""
        return f"{self.keys.prefix}:kiosk:session:{session_id}:requests"

    def session_parts(self, session_id: str) -> tuple[str, ...]:
        return (self.session(session_id), self.stills(session_id), self.card(session_id),
                self.requests(session_id))

    def active(self, kiosk_id: str) -> str:
        """The session a kiosk has open now (one at a time)."""
        return f"{self.keys.prefix}:kiosk:active:{kiosk_id}"

    def call_session(self, call_id: str) -> str:
        """Call id -> session id (the console finds a kiosk call's session)."""
        return f"{self.keys.prefix}:kiosk:call:{call_id}"

    @property
    def bridge_requests(self) -> str:
        """List of new-session offers; any kiosk_bridge instance takes one (BLPOP)."""
        return f"{self.keys.prefix}:kiosk:bridge:requests"

    def bridge_instance(self, instance: str) -> str:
        """List of requests for the sessions one bridge instance holds."""
        return f"{self.keys.prefix}:kiosk:bridge:{instance}:requests"

    def reply(self, request_id: str) -> str:
        """List the answer to one request is pushed to (expires)."""
        return f"{self.keys.prefix}:kiosk:reply:{request_id}"

    def survey(self, token_digest: str) -> str:
        """After a call: the ended session's token (its hash) -> call id, for the 1-5
        satisfaction answer on the kiosk; expires after a few minutes."""
        return f"{self.keys.prefix}:kiosk:survey:{token_digest}"

    def heartbeat(self, kiosk_id: str) -> str:
        """Hash with the last fleet heartbeat of a kiosk page."""
        return f"{self.keys.prefix}:kiosk:fleet:{kiosk_id}"

    def errors(self, kiosk_id: str) -> str:
        """List of the kiosk's recent errors (newest first, capped)."""
        return f"{self.keys.prefix}:kiosk:fleet:{kiosk_id}:errors"

    def actions(self, kiosk_id: str) -> str:
        """List of remote actions waiting for the kiosk page (reload, device check, log)."""
        return f"{self.keys.prefix}:kiosk:fleet:{kiosk_id}:actions"

    def diagnostics(self, kiosk_id: str) -> str:
        """The page's diagnostic log, uploaded on request (expires)."""
        return f"{self.keys.prefix}:kiosk:fleet:{kiosk_id}:diagnostics"


# ------------------------------------------------------------------------ identity


def dev_secret(settings: Settings, kiosk_id: str) -> str:
    """Development only: a kiosk's secret derived from web.secret_key."""
    mac = hmac.new(settings.web.secret_key.encode(), f"kiosk:{kiosk_id}".encode(),
                   hashlib.sha256)
    return mac.hexdigest()[:32]


def find_kiosk(settings: Settings, kiosk_id: str) -> Kiosk | None:
    for kiosk in settings.kiosks:
        if kiosk.id == kiosk_id:
            return kiosk
    return None


def verify_credential(settings: Settings, credential: str) -> Kiosk | None:
    """The kiosk a ``<id>:<secret>`` credential belongs to, or None."""
    kiosk_id, sep, secret = credential.partition(":")
    kiosk = find_kiosk(settings, kiosk_id)
    if not sep or not secret or kiosk is None:
        return None
    if kiosk.credential_hash:
        try:
            PasswordHasher().verify(kiosk.credential_hash, secret)
        except (VerificationError, InvalidHashError):
            return None
        return kiosk
    if settings.production:
        return None
    return kiosk if hmac.compare_digest(secret, dev_secret(settings, kiosk_id)) else None


def token_hash(token: str) -> str:
    """Session tokens are random; Redis keeps only their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


# -------------------------------------------------------------------------- events


@event("cmd.kiosk.start")
@dataclass(frozen=True, kw_only=True)
class KioskStart(Event):
    """kiosk_bridge → ari_app: create the Asterisk leg of a kiosk session (ExternalMedia
    to ``rtp_host:rtp_port`` plus a Local channel into the service's queue)."""

    session_id: str
    tenant: str
    kiosk: str
    location: str = ""
    category: str = ""
    rtp_host: str
    rtp_port: int
    rtp_format: str = "slin"


@event("cmd.kiosk.end")
@dataclass(frozen=True, kw_only=True)
class KioskEnd(Event):
    """End a kiosk session's Asterisk leg (hang up its channels and bridge)."""

    session_id: str
    tenant: str
    reason: str  # kiosk_hangup | network | idle | bridge_restart | error


@event("kiosk.call")
@dataclass(frozen=True, kw_only=True)
class KioskCallState(Event):
    """ari_app: the Asterisk side of a kiosk session changed."""

    session_id: str
    call_id: str
    tenant: str
    kiosk: str
    state: str  # queued | connected | ended
    agent: str = ""
    reason: str = ""  # ended: kiosk_hangup, operator_hangup, network, error, ...
    asterisk_rtp: str = ""  # queued: host:port the ExternalMedia channel receives on


@event("kiosk.request")
@dataclass(frozen=True, kw_only=True)
class KioskBridgeRequest(Event):
    """web → kiosk_bridge: an SDP offer of the kiosk or a viewer (operator/staff console),
    or the end of a session. The reply goes to ``KioskKeys.reply(request id)``."""

    action: str  # offer | view | hangup
    session_id: str
    sdp: str = ""
    viewer: str = ""  # view: the console user's id (for the log)
    reason: str = ""  # hangup: why


@event("kiosk.reply")
@dataclass(frozen=True, kw_only=True)
class KioskBridgeReply(Event):
    """kiosk_bridge → web: the SDP answer, or why there is none."""

    request_id: str
    ok: bool
    sdp: str = ""
    code: str = ""
    error: str = ""
    instance: str = ""


@event("kiosk.purged")
@dataclass(frozen=True, kw_only=True)
class KioskPurged(Event):
    """Everything of a kiosk session was deleted (the purge record, without the data)."""

    session_id: str
    kiosk: str
    tenant: str
    rule: str  # call_end | kiosk_hangup | network | idle | bridge_restart | expired
    deleted: tuple[str, ...] | list[str] = ()


@event("kiosk.fleet")
@dataclass(frozen=True, kw_only=True)
class KioskFleetAlarm(Event):
    """A kiosk's fleet state changed (for the maintainer view)."""

    kiosk: str
    tenant: str
    state: str  # ok | alarm
    alarms: tuple[str, ...] | list[str] = ()


#: The card flow's steps as the kiosk page reports them (docs/card_agent.md, "Flow").
CARD_STATES = ("requested", "consented", "declined", "waiting_card", "pin", "reading",
               "read", "error", "cancelled")
#: The four card-surface items the kiosk sends after a read (never the individual number).
CARD_ITEMS = ("name", "address", "birth", "sex")


@event("kiosk.card")
@dataclass(frozen=True, kw_only=True)
class KioskCardState(Event):
    """web: the My Number card flow of a kiosk call moved on (requested by the operator,
    consent, PIN, read, an error). Never the card data or the PIN."""

    call_id: str
    tenant: str
    state: str  # one of CARD_STATES
    error: str = ""  # the card agent's error id (state error)


# --------------------------------------------------------------------------- purge


_CLAIM = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
return redis.call('hsetnx', KEYS[1], 'purged', ARGV[1])
"""


_WRITE_IF_LIVE = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('hexists', KEYS[1], 'purged') == 1 then
  return 0
end
if ARGV[2] == '1' then redis.call('del', KEYS[2]) end
redis.call('hset', KEYS[2], unpack(ARGV, 3))
if tonumber(ARGV[1]) > 0 then redis.call('expire', KEYS[2], ARGV[1]) end
return 1
"""


def write_if_live(client: redis.Redis, kk: KioskKeys, session_id: str, key: str,
                  mapping: dict[str, Any], ttl: int = 0, replace: bool = False) -> bool:
    """Write ``mapping`` into the hash ``key`` of a session only while the session lives:
    atomically with the purge's claim, so nothing of a session (a still, card data) is
    written after it was erased. False when the session is gone or being purged."""
    args: list[Any] = [ttl, "1" if replace else "0"]
    for field, value in mapping.items():
        args += [field, value]
    return bool(client.eval(_WRITE_IF_LIVE, 2, kk.session(session_id), key, *args))


_PUSH_IF_LIVE = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('hexists', KEYS[1], 'purged') == 1 then
  return 0
end
redis.call('rpush', KEYS[2], ARGV[2])
redis.call('expire', KEYS[2], ARGV[1])
return 1
"""


def request_if_live(client: redis.Redis, kk: KioskKeys, session_id: str, request: str,
                    ttl: int) -> bool:
    """Queue a request for the kiosk page (a still, the card) while the session lives."""
    return bool(client.eval(_PUSH_IF_LIVE, 2, kk.session(session_id),
                            kk.requests(session_id), ttl, request))


def session_dir(settings: Settings, session_id: str) -> Path:
    """Temporary files of one session (none today; card agent exports would go here)."""
    return settings.data_dir / "kiosk-sessions" / session_id


def purge_session(settings: Settings, client: redis.Redis, session_id: str, rule: str,
                  factory: Any | None = None) -> list[str] | None:
    """Delete everything of a session and write the purge record. Idempotent: returns
    what was deleted, or None when the session was already purged (no second record)."""
    kk = KioskKeys(Keys(settings.redis.prefix))
    key = kk.session(session_id)
    # the first caller to flip "purged" does the work (never re-creating a deleted hash)
    if not client.eval(_CLAIM, 1, key, rule):
        return None
    meta = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}  # type: ignore[union-attr]
    if "kiosk" not in meta:  # the session never existed: nothing to purge
        client.delete(key)
        return None
    deleted: list[str] = []
    stills = int(client.hlen(kk.stills(session_id)))
    if stills:
        deleted.append(f"stills:{stills}")
    if client.exists(kk.card(session_id)):
        deleted.append("card data")
    folder = session_dir(settings, session_id)
    if folder.exists():
        count = sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        deleted.append(f"temp files:{count}")
    pipe = client.pipeline()
    pipe.delete(*kk.session_parts(session_id))
    call_id = meta.get("call_id", "")
    if call_id:
        pipe.delete(kk.call_session(call_id))
        if meta.get("agent") and meta.get("token"):  # the user talked to an operator
            pipe.set(kk.survey(meta["token"]), call_id,
                     ex=max(120, settings.kiosk.idle_seconds * 3))
    kiosk = meta.get("kiosk", "")
    pipe.execute()
    # the kiosk's "active session" pointer, only if it still names this session
    active = client.get(kk.active(kiosk))
    if active is not None and active.decode() == session_id:  # type: ignore[union-attr]
        client.delete(kk.active(kiosk))
    deleted.append("session state")
    record = KioskPurged(session_id=session_id, kiosk=kiosk, tenant=meta.get("tenant", ""),
                         rule=rule, deleted=tuple(deleted))
    publish(client, Keys(settings.redis.prefix), record, settings.redis.event_stream_maxlen)
    if factory is not None:
        _purge_record(factory, record, call_id)
    logger.info("kiosk session %s purged (%s): %s", session_id, rule, ", ".join(deleted))
    return deleted


def _purge_record(factory: Any, record: KioskPurged, call_id: str) -> None:
    """The durable purge record: an audit entry, and a row on the call's timeline."""
    audit.write(factory, audit.Actor(name=f"kiosk:{record.kiosk}", tenant_id=record.tenant,
                                     source="kiosk"),
                "kiosk.purge", object_type="kiosk_session", object_id=record.session_id,
                reason=record.rule, tenant_id=record.tenant)
    if not call_id:
        return
    try:
        with factory() as db, db.begin():
            if db.get(Call, call_id) is not None:
                db.add(CallEvent(call_id=call_id, at=record.at, kind="kiosk_purge",
                                 source="system", dedup_key=f"kiosk_purge:{record.session_id}",
                                 data={"rule": record.rule, "deleted": list(record.deleted)}))
    except Exception:  # noqa: BLE001 - the audit entry above already records the purge
        logger.exception("purge of %s: timeline row not written", record.session_id)


def now_ts() -> str:
    return f"{datetime.now(UTC).timestamp():.3f}"
