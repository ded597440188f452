"""Deterministic job ids: a duplicate delivery is a no-op, but a delivery of work that
failed for good brings it back instead of being dropped as a duplicate."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue, Retry, SimpleWorker
from rq.job import Job
from rq.utils import utcparse

from bridge.queue import DEDUPE_SECONDS, JOB_TIMEOUT_SECONDS, QUEUE_NAME, HandoffQueue

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


class CountingConnection(redis.Connection):
    """Counts what reaches the wire: a pipeline is one send, whatever it holds."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def counted(url: str) -> redis.Redis:
    connection = redis.Redis.from_url(url, connection_class=CountingConnection)
    connection.ping()  # the connection's own handshake is not the batch's
    CountingConnection.sends = 0
    return connection


def test_a_batch_of_100_is_queued_in_one_round_trip(backend: Any) -> None:
    queue = HandoffQueue(counted(backend.redis_url))
    calls = [queue.call(flaky, f"batch-{n}", backend.redis_url) for n in range(100)]
    assert queue.enqueue_unique_many(calls) == [True] * 100
    assert CountingConnection.sends == 1
    assert Queue(QUEUE_NAME, connection=queue.connection).count == 100

    CountingConnection.sends = 0
    assert queue.enqueue_unique_many(calls) == [False] * 100  # HubSpot delivered it again
    assert CountingConnection.sends == 1
    assert Queue(QUEUE_NAME, connection=queue.connection).count == 100


def test_a_lone_job_is_queued_in_one_round_trip_without_a_transaction(backend: Any) -> None:
    queue = HandoffQueue(counted(backend.redis_url))
    queue.connection.script_flush()  # a restarted server: the script is loaded on demand
    CountingConnection.sends = 0
    assert queue.enqueue_unique(flaky, "lone", backend.redis_url)
    assert CountingConnection.sends == 3  # EVALSHA, NOSCRIPT -> SCRIPT LOAD, EVALSHA
    CountingConnection.sends = 0
    assert queue.enqueue_unique(flaky, "lone-2", backend.redis_url)
    assert not queue.enqueue_unique(flaky, "lone", backend.redis_url)  # a redelivery
    assert CountingConnection.sends == 2
    assert queue.rq.job_ids == ["lone", "lone-2"]


def test_a_job_queued_at_the_front_runs_before_those_waiting(backend: Any) -> None:
    queue = HandoffQueue(redis.Redis.from_url(backend.redis_url))
    assert queue.enqueue_unique(flaky, "waiting", backend.redis_url)
    assert queue.enqueue_unique(flaky, "urgent", backend.redis_url, at_front=True)
    assert queue.rq.job_ids == ["urgent", "waiting"]


def test_a_duplicate_inside_one_batch_is_queued_once(backend: Any) -> None:
    queue = HandoffQueue(redis.Redis.from_url(backend.redis_url))
    call = queue.call(flaky, "twice", backend.redis_url)
    assert queue.enqueue_unique_many([call, call]) == [True, False]
    assert queue.rq.count == 1


def test_a_batch_redelivery_requeues_only_the_job_that_failed(backend: Any) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    queue = HandoffQueue(connection)
    assert queue.enqueue_unique(flaky, "fails-first", backend.redis_url)
    drain(connection)
    batch = [queue.call(flaky, key, backend.redis_url) for key in ("fails-first", "new-one")]
    assert queue.enqueue_unique_many(batch) == [True, True]
    drain(connection)
    assert queue.enqueue_unique_many(batch) == [False, False]  # both done: no-ops
    for key in ("fails-first", "new-one"):
        job = queue.rq.fetch_job(key)
        assert job is not None and job.is_finished and job.return_value() == "recorded"


def _job_hash(connection: redis.Redis, key: str) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = connection.hgetall(Job.key_for(key))  # type: ignore[assignment]
    return found


def test_a_job_is_written_as_rqs_own_enqueue_writes_it(backend: Any) -> None:
    """The hash is built without RQ's Job (the receivers' hot path): field for field what
    RQ's enqueue writes, the data as RQ's worker unpickles it, the times as RQ formats them."""
    connection = redis.Redis.from_url(backend.redis_url)
    ours = HandoffQueue(connection)
    theirs = Queue("theirs", connection=connection)
    changes = [("hubspot", "1234", "closedwon", "2026-11-27T10:20:00+00:00", "e:1", "k" * 300)]
    retry = Retry(max=3, interval=[5, 15])
    for name, func, args in (
        ("by-name", "bridge.jobs.handle_stage_changes", (changes,)),
        ("by-function", flaky, (backend.redis_url,)),
    ):
        assert ours.enqueue_unique(func, f"ours-{name}", *args, retry=retry, result_ttl=60)
        theirs.enqueue_call(
            func, args=args, job_id=f"theirs-{name}", result_ttl=60,
            failure_ttl=DEDUPE_SECONDS, timeout=JOB_TIMEOUT_SECONDS, retry=retry,
        )  # fmt: skip
        mine, rqs = _job_hash(connection, f"ours-{name}"), _job_hash(connection, f"theirs-{name}")
        for field in (b"created_at", b"enqueued_at"):
            assert utcparse(mine.pop(field).decode()) and utcparse(rqs.pop(field).decode())
        assert mine.pop(b"origin") == QUEUE_NAME.encode() and rqs.pop(b"origin") == b"theirs"
        assert mine == rqs


def test_an_rq_worker_runs_a_job_queued_by_name_and_a_redelivery_is_not_queued_twice(
    backend: Any,
) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    queue = HandoffQueue(connection)
    call = queue.call("tests.test_queue.flaky", "by-name", backend.redis_url)
    connection.incr(CALLS_KEY)  # past the first (failing) call: this run succeeds
    assert queue.enqueue_unique_many([call]) == [True]
    assert queue.enqueue_unique_many([call]) == [False]  # redelivered while it waits
    assert queue.rq.job_ids == ["by-name"]
    drain(connection)
    job = queue.rq.fetch_job("by-name")
    assert job is not None and job.is_finished and job.return_value() == "recorded"
    assert queue.enqueue_unique_many([call]) == [False]  # redelivered once done: a no-op
    assert queue.rq.count == 0


def test_a_call_with_meta_is_queued_through_rqs_own_job(backend: Any) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    queue = HandoffQueue(connection)
    call = Queue.prepare_data(flaky, args=(backend.redis_url,), job_id="with-meta",
                              meta={"why": "a test"})  # fmt: skip
    assert queue.enqueue_unique_many([call]) == [True]
    assert queue.enqueue_unique_many([call]) == [False]
    job = queue.rq.fetch_job("with-meta")
    assert job is not None and job.meta == {"why": "a test"}
    assert queue.rq.job_ids == ["with-meta"]
