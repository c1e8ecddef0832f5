"""Health of every part, as it really is, read from where each part reports.

Long-running processes (ari_app, kiosk_bridge) write a heartbeat hash to Redis every
few seconds with a short expiry (``write_heartbeat``); the hash vanishes when they
stop. ari_app's heartbeat also carries what it sees of Asterisk, ARI and AMI, because
nothing else talks to Asterisk. rq workers and the rq cron scheduler register
themselves in Redis (rq's own registries). Redis and the database are checked directly.
Used by the web health page and by the health roll-up job.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis
from sqlalchemy import Engine

from common.db import ping
from common.keys import Keys

COMPONENTS = ("asterisk", "ari", "ami", "ari_app", "redis", "database", "worker", "cron",
              "kiosk_bridge")


@dataclass(frozen=True)
class ComponentHealth:
    component: str
    ok: bool
    detail: str

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


def collect(client: redis.Redis, keys: Keys, engine: Engine) -> list[ComponentHealth]:
    """Check every component; never raises."""
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
        bridges = read_heartbeats(client, keys, "kiosk_bridge")
        results.append(ComponentHealth(
            "kiosk_bridge", bool(bridges),
            f"{len(bridges)} instance(s) reporting" if bridges else "not running (no heartbeat)"))
    else:
        for comp in ("ari_app", "asterisk", "ari", "ami", "worker", "cron", "kiosk_bridge"):
            results.append(ComponentHealth(comp, False, "unknown: Redis is unreachable"))
    try:
        ping(engine)
        results.append(ComponentHealth("database", True, engine.dialect.name))
    except Exception as exc:  # noqa: BLE001 - any failure is "down", with the reason
        results.append(ComponentHealth("database", False, f"{engine.dialect.name}: {exc}"))
    order = {name: i for i, name in enumerate(COMPONENTS)}
    return sorted(results, key=lambda c: order.get(c.component, 99))


def _rq_health(client: redis.Redis) -> list[ComponentHealth]:
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
