"""Deterministic job ids: a duplicate delivery is a no-op, but a delivery of work that
failed for good brings it back instead of being dropped as a duplicate."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue, SimpleWorker

from bridge.queue import QUEUE_NAME, HandoffQueue

CALLS_KEY = "test:flaky:calls"


def flaky(url: str) -> str:
    """Fails on its first run (as if the ledger were down), succeeds after."""
    calls = redis.Redis.from_url(url).incr(CALLS_KEY)
    if calls == 1:
        raise RuntimeError("ledger unreachable")
    return "recorded"


def drain(connection: redis.Redis) -> None:
    queue = Queue(QUEUE_NAME, connection=connection)
    SimpleWorker([queue], connection=connection).work(burst=True, logging_level="ERROR")


def test_duplicate_enqueue_is_a_no_op(backend: Any) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    queue = HandoffQueue(connection)
    assert queue.enqueue_unique(flaky, "job-a", backend.redis_url) is True
    assert queue.enqueue_unique(flaky, "job-a", backend.redis_url) is False
    assert Queue(QUEUE_NAME, connection=connection).count == 1


def test_redelivery_requeues_a_job_that_failed(backend: Any) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    queue = HandoffQueue(connection)
    assert queue.enqueue_unique(flaky, "job-b", backend.redis_url)
    drain(connection)
    job = queue.rq.fetch_job("job-b")
    assert job is not None and job.is_failed
    assert queue.enqueue_unique(flaky, "job-b", backend.redis_url) is True  # HubSpot retried
    drain(connection)
    job = queue.rq.fetch_job("job-b")
    assert job is not None and job.is_finished and job.return_value() == "recorded"
    assert queue.enqueue_unique(flaky, "job-b", backend.redis_url) is False  # done: no-op
