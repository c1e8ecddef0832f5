"""Health of every part, as it really is, read from where each part reports.

Long-running processes (ari_app, kiosk_bridge, the transcriber) write a heartbeat hash
to Redis every ``ari.heartbeat_interval`` seconds, and at once when their state changes
(``Heartbeat``; ``write_heartbeat`` for synchronous writers). A beat is current for
``STALE_INTERVALS`` of its writer's intervals: the hash expires then, and readers ignore
an older one, so a process that dies (SIGKILL, a crash, a frozen event loop) reads as
down within seconds, not when something else notices. Each component also keeps when
every instance last beat (``Keys.health_seen``), so the detail says how many instances
report and since when the last silent one has been silent; a clean stop removes its hash
and that entry. ari_app's heartbeat also carries what it sees of Asterisk, ARI and AMI,
because nothing else talks to Asterisk. rq workers and the rq cron scheduler register
themselves in Redis (rq's own registries, which keep a dead one for minutes or for
good): reports.worker makes them beat every ``rq_beat_seconds`` and the readers judge
them by that beat in the same way. Redis and the database are checked directly. An
optional part the settings leave off (no speech model, no kiosks) is "not configured",
which is not a failure. Used by the web health page and by the health roll-up job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Engine

from common.db import ping
from common.keys import Keys
from common.settings import Settings

COMPONENTS = ("asterisk", "ari", "ami", "rtp", "ari_app", "redis", "database", "worker",
              "cron", "kiosk_bridge", "transcriber")
#: RTP ports in use above this share of the range: an alarm (a flood, or a range too
#: narrow for the calls; docs/security.md)
RTP_ALARM = 0.8
#: A component's state: working, failing, or an optional part the settings leave off.
OK, DOWN, NOT_CONFIGURED = "ok", "down", "not_configured"
STATES = (OK, DOWN, NOT_CONFIGURED)

#: A heartbeat is current for this many of its writer's intervals (the beat's
#: ``interval`` field): its hash expires then and readers ignore an older one, so a
#: process that stops beating reads as down at most this long after its last beat.
STALE_INTERVALS = 3
#: How long a component remembers when each of its instances last beat (seconds).
SILENCE_MEMORY = 24 * 3600

#: What the health page says about a speech model the transcriber cannot use
#: (``ModelError.problem`` in its heartbeat), each with the fix.
_MODEL_FOLDER = ("transcription.model_path to an unpacked Vosk model folder "
                 "(am/, conf/, graph/; README)")
_MODEL_FIX = f"Fix: set {_MODEL_FOLDER}"
_TRANSCRIBER_ON = f"To turn it on: set {_MODEL_FOLDER}, then (re)start the transcriber"
MODEL_PROBLEMS = {
    "not_configured": "not configured: transcription.model_path is not set",
    "not_found": "speech model missing: {path} does not exist",
    "not_a_model": "speech model unusable: {path} is not a Vosk model folder",
    "load_failed": "speech model unusable: Vosk could not load {path}",
}


@dataclass(frozen=True)
class ComponentHealth:
    """``state`` is one of ``STATES`` (``ok`` or ``down`` from ``ok`` when not given);
    ``ok`` is false only when the component is down, so a part that is not configured
    is not counted as a failure."""

    component: str
    ok: bool
    detail: str
    state: str = ""

    def __post_init__(self) -> None:
        state = self.state or (OK if self.ok else DOWN)
        if state not in STATES or self.ok != (state != DOWN):
            raise ValueError(f"{self.component}: ok={self.ok} with state {state!r}")
        object.__setattr__(self, "state", state)

    @classmethod
    def not_configured(cls, component: str, detail: str) -> ComponentHealth:
        return cls(component, True, detail, NOT_CONFIGURED)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seen_of(key: str) -> tuple[str, str]:
    """(the component's ``Keys.health_seen`` set, the instance) of a ``Keys.health`` key."""
    head, _, instance = key.rpartition(":")
    prefix, _, component = head.rpartition(":health:")
    return Keys(prefix).health_seen(component), instance


def _queue_beat(pipe: Any, key: str, fields: dict[str, str], interval: float) -> None:
    """Queue one heartbeat on a (sync or asyncio) pipeline: the hash, rewritten whole with
    when and how often it is written, expiring after ``STALE_INTERVALS`` intervals; and
    this instance's last beat in the component's ``health_seen`` set."""
    now = time.time()
    seen, instance = _seen_of(key)
    mapping: dict[Any, Any] = {**fields, "updated_at": f"{now:.3f}",
                               "interval": f"{interval:g}"}
    pipe.delete(key)
    pipe.hset(key, mapping=mapping)
    pipe.pexpire(key, max(1, int(STALE_INTERVALS * interval * 1000)))
    pipe.zadd(seen, {instance: now})
    pipe.zremrangebyscore(seen, 0, now - SILENCE_MEMORY)
    pipe.expire(seen, SILENCE_MEMORY)


def write_heartbeat(client: redis.Redis, keys: Keys, component: str, instance: str,
                    fields: dict[str, str], ttl: float) -> None:
    """One beat that stays current for ``ttl`` seconds (``STALE_INTERVALS`` intervals)."""
    pipe = client.pipeline()
    _queue_beat(pipe, keys.health(component, instance), fields, ttl / STALE_INTERVALS)
    pipe.execute()


class Heartbeat:
    """A process's heartbeat hash (``key``: a ``Keys.health`` key): rewritten whole every
    ``interval`` seconds, and at once after ``changed()`` (a connection came up or went
    down, a model loaded), so the health page shows a change when it happens rather than
    up to one interval later. It expires after ``STALE_INTERVALS`` missed intervals and
    is deleted, with this instance's ``health_seen`` entry, when ``run`` ends."""

    def __init__(self, client: aioredis.Redis, key: str, interval: float,
                 fields: Callable[[], Awaitable[dict[str, str]]]) -> None:
        self.client = client
        self.key = key
        self.interval = interval
        self.fields = fields
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Write the heartbeat now (from the event loop's thread)."""
        self._changed.set()

    async def write(self) -> None:
        fields = await self.fields()
        try:
            async with self.client.pipeline() as pipe:
                _queue_beat(pipe, self.key, fields, self.interval)
                await pipe.execute()
        except RedisError as exc:
            logging.getLogger(__name__).warning("heartbeat not written (Redis: %s)", exc)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Write until ``stop`` is set (or the task is cancelled), then delete the hash."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                self._changed.clear()  # a change from here on is written next round
                await self.write()
                waits = [asyncio.ensure_future(self._changed.wait()),
                         asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waits, timeout=self.interval,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
        finally:
            seen, instance = _seen_of(self.key)
            try:  # a clean stop: gone, not silent
                async with self.client.pipeline() as pipe:
                    pipe.delete(self.key)
                    pipe.zrem(seen, instance)
                    await pipe.execute()
            except (RedisError, RuntimeError):
                pass  # Redis gone or the loop closing: the hash expires on its own


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Beats:
    """A component's heartbeats at ``now``: the current ones, and when each instance that
    stopped beating without a clean stop last beat (``silent``: instance -> time)."""

    live: list[dict[str, str]]
    silent: dict[str, float]
    now: float

    def latest(self) -> dict[str, str]:
        """The most recent current beat (``live`` must not be empty)."""
        return max(self.live, key=lambda b: _number(b.get("updated_at")))

    def silence(self, timezone: str) -> str:
        """Since when the last silent instance is silent ("" when none is)."""
        if not self.silent:
            return ""
        last = max(self.silent.values())
        when = _clock(last, timezone, self.now)
        ago = _duration(self.now - last)
        if self.live:
            others = len(self.silent)
            return (f"{others} other{'s' if others > 1 else ''} silent, the last one since "
                    f"{when} ({ago} ago)")
        return f"the last one went silent at {when} ({ago} ago)"

    def reporting(self, timezone: str, unit: str = "instance(s)",
                  verb: str = " reporting") -> str:
        """``N instance(s) reporting``, and since when the last silent one is silent."""
        text = f"{len(self.live)} {unit}{verb}"
        silence = self.silence(timezone)
        if silence:
            text += ("; " if self.live else ": ") + silence
        return text


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _clock(at: float, timezone: str, now: float) -> str:
    try:
        zone: Any = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    moment, today = datetime.fromtimestamp(at, zone), datetime.fromtimestamp(now, zone)
    return moment.strftime("%H:%M:%S" if moment.date() == today.date() else "%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def read_heartbeats(client: redis.Redis, keys: Keys, component: str, interval: float,
                    now: float | None = None) -> Beats:
    """The current beats of ``component`` and its silent instances. A beat is current for
    ``STALE_INTERVALS`` of its own ``interval`` (``interval``, the reader's setting, for a
    beat without one); an instance is silent once its last beat is older than that."""
    now = time.time() if now is None else now
    live: list[dict[str, str]] = []
    live_instances: set[str] = set()
    silent: dict[str, float] = {}
    for key in client.scan_iter(match=keys.health_pattern(component), count=100):
        raw: Any = client.hgetall(key)
        if not raw:
            continue
        beat = {_text(k): _text(v) for k, v in raw.items()}
        instance = _text(key).rpartition(":")[2]
        updated = _number(beat.get("updated_at"))
        if now - updated <= STALE_INTERVALS * (_number(beat.get("interval")) or interval):
            live.append(beat)
            live_instances.add(instance)
        else:
            silent[instance] = updated
    # instances whose hash has expired: silent since their last beat (one that beat just
    # now and has no hash is neither: it stopped cleanly and is leaving the set)
    seen: Any = client.zrangebyscore(keys.health_seen(component), now - SILENCE_MEMORY,
                                     now - STALE_INTERVALS * interval, withscores=True)
    for member, score in seen:
        instance = _text(member)
        if instance not in live_instances:
            silent[instance] = max(silent.get(instance, 0.0), float(score))
    return Beats(live, silent, now)


def _from_ari_app(beats: Beats, timezone: str) -> list[ComponentHealth]:
    if not beats.live:
        silence = beats.silence(timezone)
        why = (f"ari_app is not running: {beats.reporting(timezone)}" if silence
               else "ari_app is not running (no heartbeat in Redis)")
        unknown = "unknown: " + why
        return [ComponentHealth("ari_app", False, why),
                ComponentHealth("asterisk", False, unknown),
                ComponentHealth("ari", False, unknown),
                ComponentHealth("ami", False, unknown),
                ComponentHealth("rtp", False, unknown)]
    beat = beats.latest()
    out = [ComponentHealth("ari_app", True, beats.reporting(timezone))]
    for comp in ("asterisk", "ari", "ami"):
        state = beat.get(comp, "down")
        out.append(ComponentHealth(comp, state == "up", beat.get(f"{comp}_detail", state)))
    out.append(_rtp(beat))
    return out


def _rtp(beat: dict[str, str]) -> ComponentHealth:
    """RTP ports in use (two per channel that carries audio, counted by ari_app from
    Asterisk's channels) against the configured range."""
    used, total = beat.get("rtp_in_use", ""), beat.get("rtp_ports", "")
    if not used.isdigit() or not total.isdigit() or not int(total):
        return ComponentHealth("rtp", False, "unknown: not counted yet (ari_app counts "
                                             "Asterisk's channels once ARI is connected)")
    share = int(used) / int(total)
    text = f"{used} of {total} ports in use ({100 * share:.0f} %)"
    if share >= RTP_ALARM:
        return ComponentHealth("rtp", False, f"{text}: running out. Widen asterisk.rtp_start"
                                             "..rtp_end or lower trunk.max_calls")
    return ComponentHealth("rtp", True, text)


def _from_transcriber(heartbeats: Beats, settings: Settings) -> ComponentHealth:
    """Up when one transcriber has its model loaded; not configured when the settings
    turn transcription off or set no model (and no transcriber has one); otherwise why,
    with the fix. Calls go on without transcription either way (docs/transcription.md)."""
    beats = heartbeats.live
    up = [b for b in beats if b.get("state") == "up"]
    if up:
        streams = sum(int(b.get("streams", "0") or 0) for b in up)
        rtf = max(float(b.get("rtf", "0") or 0) for b in up)
        return ComponentHealth("transcriber", True,
                               f"{len(up)} instance(s) up, {streams} stream(s), "
                               f"real-time factor {rtf:.2f}")
    cfg = settings.transcription
    if not cfg.enabled:
        return ComponentHealth.not_configured(
            "transcriber", "not configured: transcription.enabled is false. To turn it on: "
            f"set it to true and {_MODEL_FOLDER}")
    if not beats:
        if not cfg.model_path:
            return ComponentHealth.not_configured(
                "transcriber", f"{MODEL_PROBLEMS['not_configured']}. {_TRANSCRIBER_ON}")
        silence = heartbeats.silence(settings.site.timezone) or "no heartbeat"
        return ComponentHealth("transcriber", False,
                               f"not running ({silence}): calls are not transcribed. "
                               "Fix: start python -m transcriber.main (make run)")
    beat = max(beats, key=lambda b: float(b.get("updated_at", 0) or 0))
    state = beat.get("state", "down")
    if beat.get("problem") == "not_configured":
        if not cfg.model_path:
            return ComponentHealth.not_configured(
                "transcriber", f"{MODEL_PROBLEMS['not_configured']}. {_TRANSCRIBER_ON}")
        return ComponentHealth("transcriber", False,
                               "speech model missing: the transcriber runs without "
                               "transcription.model_path, though the settings set it to "
                               f"{cfg.model_path}. Fix: start it with the same settings")
    problem = MODEL_PROBLEMS.get(beat.get("problem", ""))
    if problem is not None:
        why = problem.format(path=beat.get("model_path", "") or "the folder")
        return ComponentHealth("transcriber", False,
                               f"{why}. {_MODEL_FIX}")
    return ComponentHealth("transcriber", False,
                           f"{state}: {beat.get('detail', '')}".rstrip(": "))


def _from_kiosk_bridge(beats: Beats, settings: Settings) -> ComponentHealth:
    """Up when a bridge reports; not configured when the settings register no kiosk."""
    timezone = settings.site.timezone
    if beats.live:
        return ComponentHealth("kiosk_bridge", True, beats.reporting(timezone))
    if not settings.kiosks:
        return ComponentHealth.not_configured(
            "kiosk_bridge", "not configured: no kiosks are registered (kiosks is empty). "
            "To turn it on: register kiosks ([[kiosks]], docs/kiosk.md), then start "
            "python -m kiosk_bridge.main (make run)")
    if beats.silent:
        return ComponentHealth("kiosk_bridge", False,
                               f"not running: {beats.reporting(timezone)}")
    return ComponentHealth("kiosk_bridge", False, "not running (no heartbeat)")


def collect(client: redis.Redis, keys: Keys, engine: Engine,
            settings: Settings) -> list[ComponentHealth]:
    """Check every component; never raises. ``settings`` tell an optional part that is
    off (no speech model, no kiosks: not configured) from one that is down."""
    results: list[ComponentHealth] = []
    try:
        client.ping()
        redis_ok = True
        results.append(ComponentHealth("redis", True, "PONG"))
    except redis.RedisError as exc:
        redis_ok = False
        results.append(ComponentHealth("redis", False, f"unreachable: {exc}"))
    if redis_ok:
        interval, timezone = settings.ari.heartbeat_interval, settings.site.timezone
        try:
            results.extend(_from_ari_app(read_heartbeats(client, keys, "ari_app", interval),
                                         timezone))
            results.extend(_rq_health(client, settings))
            results.append(_from_kiosk_bridge(
                read_heartbeats(client, keys, "kiosk_bridge", interval), settings))
            results.append(_from_transcriber(
                read_heartbeats(client, keys, "transcriber", interval), settings))
            if settings.this_site is not None:
                results.append(from_sites(client, keys, settings))
        except redis.RedisError as exc:  # Redis went away between the ping and now
            done = {c.component for c in results}
            results.extend(ComponentHealth(comp, False, f"unknown: Redis: {exc}")
                           for comp in ("ari_app", "asterisk", "ari", "ami", "rtp", "worker",
                                        "cron", "kiosk_bridge", "transcriber")
                           if comp not in done)
    else:
        for comp in ("ari_app", "asterisk", "ari", "ami", "rtp", "worker", "cron",
                     "kiosk_bridge", "transcriber"):
            results.append(ComponentHealth(comp, False, "unknown: Redis is unreachable"))
    try:
        ping(engine)
        results.append(ComponentHealth("database", True, engine.dialect.name))
    except Exception as exc:  # noqa: BLE001 - any failure is "down", with the reason
        results.append(ComponentHealth("database", False, f"{engine.dialect.name}: {exc}"))
    order = {name: i for i, name in enumerate(COMPONENTS)}
    return sorted(results, key=lambda c: order.get(c.component, 99))


SITES_STALE_SECONDS = 5.0  # ari_app.sites writes them every second


def from_sites(client: redis.Redis, keys: Keys, settings: Settings) -> ComponentHealth:
    """Every site as this site's controller last saw it (``Keys.sites``, docs/sites.md);
    not required: another site being down does not make this one unhealthy."""
    raw: Any = client.hgetall(keys.sites)
    data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                          else v) for k, v in raw.items()}
    try:
        age = time.time() - float(data.get("_checked", 0))
    except ValueError:
        age = float("inf")
    if not data or age > SITES_STALE_SECONDS:
        return ComponentHealth("sites", False, "unknown: this site's call controller has not "
                               "reported the sites' states (ari_app not running?)")
    parts, all_up = [], True
    for site in sorted(settings.sites, key=lambda s: -s.priority):
        try:
            view = json.loads(data.get(site.id, "{}"))
        except ValueError:
            view = {}
        state = str(view.get("state", "unknown"))
        all_up = all_up and state == "up"
        parts.append(f"{site.id} {state} (edge {view.get('edge', '?')}, controller "
                     f"{view.get('controller', '?')})")
    serving = data.get("_serving") or "none"
    return ComponentHealth("sites", all_up, f"{'; '.join(parts)}; new calls go to {serving}")


def rq_beat_seconds(interval: float) -> int:
    """How often reports.worker's rq worker and cron scheduler beat, for a heartbeat
    interval of ``interval`` (whole seconds: rq's timeouts are)."""
    return max(1, math.ceil(interval))


def _rq_detail(beats: Beats, timezone: str, unit: str, nobody: str) -> str:
    if beats.live:
        return beats.reporting(timezone, unit, verb="")
    silence = beats.silence(timezone)
    return f"{nobody}: {silence}" if silence else nobody


def _rq_health(client: redis.Redis, settings: Settings) -> list[ComponentHealth]:
    """Workers and cron schedulers whose last beat (rq's ``last_heartbeat`` and cron
    registry score) is current; rq keeps a killed worker registered for minutes and a
    killed scheduler for good, so being registered says nothing."""
    # rq takes 0.2 s to import: only the health page needs it, not every process's heartbeat
    from rq import Worker
    from rq.cron_scheduler_registry import get_registry_key

    timezone = settings.site.timezone
    stale = STALE_INTERVALS * rq_beat_seconds(settings.ari.heartbeat_interval)
    now = time.time()
    try:
        live: list[dict[str, str]] = []
        silent: dict[str, float] = {}
        for w in Worker.all(connection=client):
            beat = w.last_heartbeat.timestamp() if w.last_heartbeat else 0.0
            if now - beat > stale:
                silent[w.name] = beat
            elif str(w.get_state()) != "suspended":
                live.append({"name": w.name})
        worker = ComponentHealth("worker", bool(live), _rq_detail(
            Beats(live, silent, now), timezone, "worker(s)", "no rq worker running"))
    except redis.RedisError as exc:
        worker = ComponentHealth("worker", False, f"unknown: {exc}")
    try:
        live, silent = [], {}
        scores: Any = client.zrange(get_registry_key(), 0, -1, withscores=True)
        for name, score in scores:
            if now - score <= stale:
                live.append({"name": _text(name)})
            elif now - score <= SILENCE_MEMORY:
                silent[_text(name)] = float(score)
        cron = ComponentHealth("cron", bool(live), _rq_detail(
            Beats(live, silent, now), timezone, "scheduler(s)",
            "no rq cron scheduler running"))
    except redis.RedisError as exc:
        cron = ComponentHealth("cron", False, f"unknown: {exc}")
    return [worker, cron]
