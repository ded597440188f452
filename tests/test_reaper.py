"""The reaper requeues the jobs of dead workers, never the job of a worker that lives on
and only could not renew its alive key (a queue outage, a frozen or restarted Valkey)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from bridge.queue import QUEUE_NAME
from bridge.reaper import GRACE_SECONDS, Heartbeat, Reaper, alive_key


def nothing() -> str:
    return "done"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(connection: redis.Redis) -> tuple[Queue, SimpleWorker, Job]:
    """A job that a worker (with its heartbeat) has begun, as SimpleWorker begins it."""
    queue = Queue(QUEUE_NAME, connection=connection)
    job = queue.enqueue(nothing)
    worker = SimpleWorker([queue], connection=connection)
    Heartbeat(connection, worker.name).beat()
    queue.pop_job_id()  # taken off the queue, as a worker's dequeue does
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    return queue, worker, job


@pytest.fixture
def connection(backend: Any) -> redis.Redis:
    return redis.Redis.from_url(backend.redis_url)


def test_a_live_worker_whose_key_lapsed_in_an_outage_keeps_its_job(
    connection: redis.Redis,
) -> None:
    queue, worker, job = started(connection)
    # The queue was down longer than the key lives; the worker runs on (a CRM call).
    connection.delete(alive_key(worker.name))
    clock = Clock()
    reaper = Reaper(clock=clock)
    assert reaper.reap(queue) == []  # the first round after the outage only takes note
    Heartbeat(connection, worker.name).beat()  # the worker's next beat, seconds later
    clock.now += GRACE_SECONDS
    assert reaper.reap(queue) == []
    assert queue.count == 0  # never queued a second time beside the run in progress


def test_a_dead_workers_job_is_requeued_once_its_grace_has_passed(
    connection: redis.Redis,
) -> None:
    queue, worker, job = started(connection)
    connection.delete(alive_key(worker.name))  # killed: its key lapsed, no beat follows
    clock = Clock()
    reaper, other = Reaper(clock=clock), Reaper(clock=clock)
    assert reaper.reap(queue) == []
    clock.now += GRACE_SECONDS
    assert reaper.reap(queue) == [job.id]
    assert other.reap(queue) == []  # a second supervisor's reaper does not queue it again
    assert queue.job_ids == [job.id]
