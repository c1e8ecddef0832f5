"""Health of every part, as it really is, read from where each part reports.

Long-running processes (ari_app, kiosk_bridge, the transcriber) write a heartbeat hash
to Redis every few seconds, and at once when their state changes, with a short expiry
(``Heartbeat``; ``write_heartbeat`` for synchronous writers); the hash vanishes when
they stop. ari_app's heartbeat also carries what it sees of Asterisk, ARI and AMI, because
nothing else talks to Asterisk. rq workers and the rq cron scheduler register
themselves in Redis (rq's own registries). Redis and the database are checked directly.
An optional part the settings leave off (no speech model, no kiosks) is "not configured",
which is not a failure. Used by the web health page and by the health roll-up job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Engine

from common.db import ping
from common.keys import Keys
from common.settings import Settings

COMPONENTS = ("asterisk", "ari", "ami", "ari_app", "redis", "database", "worker", "cron",
              "kiosk_bridge", "transcriber")
#: A component's state: working, failing, or an optional part the settings leave off.
OK, DOWN, NOT_CONFIGURED = "ok", "down", "not_configured"
STATES = (OK, DOWN, NOT_CONFIGURED)

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


def write_heartbeat(client: redis.Redis, keys: Keys, component: str, instance: str,
                    fields: dict[str, str], ttl: float) -> None:
    key = keys.health(component, instance)
    pipe = client.pipeline()
    pipe.delete(key)
    mapping: dict[Any, Any] = {**fields, "updated_at": f"{time.time():.3f}"}
    pipe.hset(key, mapping=mapping)
    pipe.pexpire(key, int(ttl * 1000))
    pipe.execute()


class Heartbeat:
    """A process's heartbeat hash: rewritten whole every ``interval`` seconds, and at once
    after ``changed()`` (a connection came up or went down, a model loaded), so the health
    page shows a change when it happens rather than up to one interval later. It expires
    after three missed intervals and is deleted when ``run`` ends."""

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
        fields: dict[Any, Any] = {**await self.fields(), "updated_at": f"{time.time():.3f}"}
        try:
            async with self.client.pipeline() as pipe:
                pipe.delete(self.key)
                pipe.hset(self.key, mapping=fields)
                pipe.pexpire(self.key, int(self.interval * 3000))
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
            try:
                await self.client.delete(self.key)
            except (RedisError, RuntimeError):
                pass  # Redis gone or the loop closing: the hash expires on its own


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_heartbeats(client: redis.Redis, keys: Keys, component: str) -> list[dict[str, str]]:
    out = []
    for key in client.scan_iter(match=keys.health_pattern(component), count=100):
        raw: Any = client.hgetall(key)
        if raw:
            out.append({_text(k): _text(v) for k, v in raw.items()})
    return out


def _from_ari_app(beats: list[dict[str, str]]) -> list[ComponentHealth]:
    if not beats:
        why = "ari_app is not running (no heartbeat in Redis)"
        unknown = "unknown: " + why
        return [ComponentHealth("ari_app", False, why),
                ComponentHealth("asterisk", False, unknown),
                ComponentHealth("ari", False, unknown),
                ComponentHealth("ami", False, unknown)]
    beat = max(beats, key=lambda b: float(b.get("updated_at", 0)))
    out = [ComponentHealth("ari_app", True, f"{len(beats)} instance(s) reporting")]
    for comp in ("asterisk", "ari", "ami"):
        state = beat.get(comp, "down")
        out.append(ComponentHealth(comp, state == "up", beat.get(f"{comp}_detail", state)))
    return out


def _from_transcriber(beats: list[dict[str, str]], settings: Settings) -> ComponentHealth:
    """Up when one transcriber has its model loaded; not configured when the settings
    turn transcription off or set no model (and no transcriber has one); otherwise why,
    with the fix. Calls go on without transcription either way (docs/transcription.md)."""
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
        return ComponentHealth("transcriber", False,
                               "not running (no heartbeat): calls are not transcribed. "
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


def _from_kiosk_bridge(beats: list[dict[str, str]], settings: Settings) -> ComponentHealth:
    """Up when a bridge reports; not configured when the settings register no kiosk."""
    if beats:
        return ComponentHealth("kiosk_bridge", True, f"{len(beats)} instance(s) reporting")
    if not settings.kiosks:
        return ComponentHealth.not_configured(
            "kiosk_bridge", "not configured: no kiosks are registered (kiosks is empty). "
            "To turn it on: register kiosks ([[kiosks]], docs/kiosk.md), then start "
            "python -m kiosk_bridge.main (make run)")
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
        results.extend(_from_ari_app(read_heartbeats(client, keys, "ari_app")))
        results.extend(_rq_health(client))
        results.append(_from_kiosk_bridge(read_heartbeats(client, keys, "kiosk_bridge"),
                                          settings))
        results.append(_from_transcriber(read_heartbeats(client, keys, "transcriber"),
                                         settings))
    else:
        for comp in ("ari_app", "asterisk", "ari", "ami", "worker", "cron", "kiosk_bridge",
                     "transcriber"):
            results.append(ComponentHealth(comp, False, "unknown: Redis is unreachable"))
    try:
        ping(engine)
        results.append(ComponentHealth("database", True, engine.dialect.name))
    except Exception as exc:  # noqa: BLE001 - any failure is "down", with the reason
        results.append(ComponentHealth("database", False, f"{engine.dialect.name}: {exc}"))
    order = {name: i for i, name in enumerate(COMPONENTS)}
    return sorted(results, key=lambda c: order.get(c.component, 99))


def _rq_health(client: redis.Redis) -> list[ComponentHealth]:
    # rq takes 0.2 s to import: only the health page needs it, not every process's heartbeat
    from rq import Worker
    from rq.cron_scheduler_registry import get_keys as cron_keys

    try:
        workers = Worker.all(connection=client)
        alive = [w for w in workers if str(w.get_state()) != "suspended"]
        worker = ComponentHealth("worker", bool(alive),
                                 f"{len(alive)} worker(s)" if alive else "no rq worker running")
    except redis.RedisError as exc:
        worker = ComponentHealth("worker", False, f"unknown: {exc}")
    try:
        schedulers = cron_keys(connection=client)
        cron = ComponentHealth("cron", bool(schedulers),
                               f"{len(schedulers)} scheduler(s)" if schedulers
                               else "no rq cron scheduler running")
    except redis.RedisError as exc:
        cron = ComponentHealth("cron", False, f"unknown: {exc}")
    return [worker, cron]
