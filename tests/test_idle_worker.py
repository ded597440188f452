"""An idle worker keeps listening: its blocking wait for the next job is not mistaken for
a lost connection, which would put it to sleep for up to a minute at a time."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any

import pytest
from rq.exceptions import StopRequested
from rq.job import JobStatus

from bridge.queue import QueueClient
from bridge.runtime import Runtime
from bridge.worker import build_worker

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
