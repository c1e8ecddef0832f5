"""rq worker and rq cron scheduler, configured from the project's settings.

    python -m reports.worker          # a worker on settings.worker.queues
    python -m reports.worker cron     # the scheduler that enqueues periodic jobs
"""

from __future__ import annotations

import logging
import sys

import redis
from rq import Queue, Worker
from rq.cron import CronScheduler

from common.health import rq_beat_seconds
from common.process import start_process
from common.settings import Settings
from reports import jobs

logger = logging.getLogger(__name__)


class BeatingWorker(Worker):
    """An rq worker that beats every ``beat_seconds`` (the health page's view of it,
    common.health): rq beats once per dequeue timeout, 405 s by default, so a killed
    worker would look alive for minutes. During a job the worker beats every
    ``job_monitoring_interval``, which ``main`` sets to the same."""

    beat_seconds = 2

    @property
    def dequeue_timeout(self) -> int:
        return self.beat_seconds


class BeatingCron(CronScheduler):
    """An rq cron scheduler that beats (its registry score) at least every
    ``beat_seconds``: rq's sleeps until the next job, up to 60 s, between beats."""

    beat_seconds = 2

    def calculate_sleep_interval(self) -> float:
        return float(min(super().calculate_sleep_interval(), self.beat_seconds))


def build_cron(settings: Settings, connection: redis.Redis) -> CronScheduler:
    cron = BeatingCron(connection=connection)
    cron.beat_seconds = rq_beat_seconds(settings.ari.heartbeat_interval)
    cron.register(jobs.health_rollup, "default",
                  interval=settings.worker.health_rollup_interval, name="health_rollup")
    # The previous month's report, early on the 1st (cron fields are the host's local time).
    cron.register(jobs.monthly_reports, "reports", cron="0 3 1 * *", job_timeout=3600,
                  name="monthly_reports")
    cron.register(jobs.kpi_rollup, "reports", interval=300, job_timeout=1800,
                  name="kpi_rollup")
    # Masked transcripts past transcription.retention_days (docs/transcription.md).
    cron.register(jobs.transcript_purge, "default", cron="17 * * * *", job_timeout=1800,
                  name="transcript_purge")
    return cron


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mode = argv[0] if argv else "worker"
    settings = start_process("cron" if mode == "cron" else "worker")
    if settings is None:
        return 2
    connection = redis.Redis.from_url(settings.redis.url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        logger.error("cannot reach Redis at %s: %s. Check redis.url (MADOGUCHI_REDIS__URL) "
                     "and that redis-server is running.", settings.redis.url, exc)
        return 2
    if mode == "cron":
        build_cron(settings, connection).start()
        return 0
    if mode != "worker":
        logger.error("unknown mode %r: use 'worker' or 'cron'", mode)
        return 2
    queues = [Queue(name, connection=connection) for name in settings.worker.queues]
    beat = rq_beat_seconds(settings.ari.heartbeat_interval)
    worker = BeatingWorker(queues, connection=connection, job_monitoring_interval=beat)
    worker.beat_seconds = beat
    worker.work(with_scheduler=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
