"""An idle worker keeps listening: its blocking wait for the next job is not mistaken for
a lost connection, which would put it to sleep for up to a minute at a time."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any

import pytest
import redis
from rq.exceptions import StopRequested
from rq.job import JobStatus

from bridge.queue import QueueClient
from bridge.runtime import Runtime
from bridge.worker import MAX_RECONNECT_WAIT_SECONDS, build_worker

# A short read timeout stands for the workers' 10 s, so that a wait for jobs outlasts it.
QUICK = QueueClient(connect_timeout=1.0, read_timeout=0.3)


def test_waiting_for_jobs_longer_than_the_read_timeout_is_not_a_lost_queue(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rt = Runtime.build(settings, client=QUICK)
    rt.redis.ping()  # as the worker does while it waits for its backends: a pooled connection
    worker = build_worker(rt)
    worker.log.setLevel(logging.INFO)
    answers: list[object] = []
    # One wait for a job of a second (RQ's own is 405 s), then idle: the worker stops.
    waiting = threading.Thread(
        target=lambda: answers.append(worker.dequeue_job_and_maintain_ttl(1, max_idle_time=1)),
        daemon=True,
    )
    with caplog.at_level(logging.INFO, logger="rq.worker"):
        waiting.start()
        waiting.join(timeout=60)  # a bound on a hang, not a measure of speed
    assert not waiting.is_alive(), "the worker slept as if the queue were unreachable"
    assert answers == [None]
    assert "could not connect to Redis" not in caplog.text


def test_a_stop_request_python_swallowed_still_stops_the_worker(settings: Any) -> None:
    rt = Runtime.build(settings)
    worker = build_worker(rt)
    job = worker.queues[0].enqueue(print, "never run")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # SIGTERM's handler raised StopRequested inside a finalizer, which Python ignores.
        with contextlib.suppress(StopRequested):
            worker.request_stop(signal.SIGTERM, None)
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert job.get_status() == JobStatus.QUEUED  # it stopped before taking another job


def test_a_worker_tries_the_queue_again_every_few_seconds_while_it_is_down(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RQ doubles its wait after each failed try up to a minute: a queue back after an
    # outage (a Valkey restart) would leave due retries and new webhooks waiting that long.
    worker = build_worker(Runtime.build(settings))
    tries: list[str] = []

    def queue_down_for_a_while(*_: Any, **__: Any) -> None:
        tries.append("try")
        if len(tries) <= 10:
            raise redis.ConnectionError("Connection refused")
        return None  # back, and nothing to do

    slept: list[float] = []
    monkeypatch.setattr(worker.queue_class, "dequeue_any", queue_down_for_a_while)
    monkeypatch.setattr("rq.worker.base.time.sleep", slept.append)
    assert worker.dequeue_job_and_maintain_ttl(None) is None
    assert len(slept) == 10
    assert max(slept) <= MAX_RECONNECT_WAIT_SECONDS <= 5
