"""Jobs of a dead worker back on the queue within seconds.

RQ reclaims a started job only once its timeout plus a minute has passed, and only at a
worker's start or its ten-minute clean-up: a webhook acknowledged just before a SIGKILL
would wait six minutes or more. Instead every worker process renews a short-lived key
(`Heartbeat`), and a `Reaper` requeues each started job whose worker's key has expired.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

# A worker silent this long is dead: well above a renewal's worst pause on a busy
# machine, well below the SPEC's 60-second resume promise.
ALIVE_SECONDS = 15
BEAT_EVERY_SECONDS = ALIVE_SECONDS / 5
# How long a worker whose key is missing has to beat again before its job is requeued:
# two beats' time (the maintenance round, 10 s, usually makes it the next round).
GRACE_SECONDS = 2 * BEAT_EVERY_SECONDS


def alive_key(worker_name: str) -> str:
    return f"fullkit:worker:{worker_name}:alive"


class Heartbeat:
    """Keeps a worker's alive key fresh from a thread of its own, so that a job busy for
    minutes (a hanging CRM call) does not make its worker look dead."""

    def __init__(self, connection: redis.Redis, worker_name: str) -> None:
        self.connection = connection
        self.key = alive_key(worker_name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()  # before the first job: a job can never belong to a keyless worker
        self._thread.start()

    def beat(self) -> None:
        self.connection.set(self.key, os.getpid(), ex=ALIVE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.connection.delete(self.key)
        except redis.RedisError:
            pass  # it expires by itself

    def _run(self) -> None:
        while not self._stop.wait(BEAT_EVERY_SECONDS):
            try:
                self.beat()
            except redis.RedisError:
                continue  # the queue is down: nothing runs meanwhile; beat again next time


class Reaper:
    """Requeues every started job whose worker stopped beating; one per supervisor.

    A missing alive key alone does not prove a worker dead: after a queue outage longer
    than ALIVE_SECONDS (Valkey frozen, or killed and started again from its append-only
    file) every worker's key has lapsed, and the maintenance round that brings the server
    back would otherwise run before any worker beats again, queueing each job in progress
    a second time beside the run that goes on. So a job is requeued only when its
    worker's key was missing at two sightings at least GRACE_SECONDS apart; a live worker
    beats within BEAT_EVERY_SECONDS of the queue's return.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._missing_since: dict[str, float] = {}  # job id -> first sighting

    def reap(self, queue: Queue) -> list[str]:
        """Requeue the jobs of dead workers; returns their ids."""
        registry = StartedJobRegistry(queue=queue)
        connection = queue.connection
        now = self._clock()
        seen: dict[str, float] = {}
        reaped: list[str] = []
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            try:
                job = Job.fetch(job_id, connection=connection)
            except NoSuchJobError:
                continue  # expired; RQ's own clean-up drops the entry
            if job.get_status() != JobStatus.STARTED or not job.worker_name:
                continue
            if connection.exists(alive_key(job.worker_name)):
                continue
            since = seen[job_id] = self._missing_since.get(job_id, now)
            if now - since < GRACE_SECONDS:
                continue
            # Removing the entry is the claim: of two reapers, only the one that removed it
            # requeues, so the job is queued once.
            if not connection.zrem(registry.key, f"{job_id}:{execution_id}"):
                continue
            queue.enqueue_job(job)
            reaped.append(job_id)
            seen.pop(job_id)
        self._missing_since = seen
        return reaped
