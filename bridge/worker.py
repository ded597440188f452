"""`fullkit worker`: an RQ worker with the retry scheduler and the stalled-attempt resumer."""

from __future__ import annotations

import threading
from typing import Any

import redis
import structlog
from rq import Queue, SimpleWorker
from rq.job import Job

from bridge import backends, db, jobs
from bridge.logging import configure_logging
from bridge.queue import QUEUE_NAME
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.valkey import EmbeddedValkey

log = structlog.get_logger("fullkit.worker")
RESUME_EVERY_SECONDS = 10.0
MAX_WAIT_SECONDS = 30.0


class FullkitWorker(SimpleWorker):
    """An RQ worker that holds its process's runtime and hands it to every job it runs.

    SimpleWorker runs jobs in this process: the runtime (connections, compiled kits,
    connector clients) is built once instead of once per job in a forked horse.
    """

    def __init__(self, *args: Any, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime

    def execute_job(self, job: Job, queue: Queue) -> None:
        with jobs.serving(self.runtime):
            super().execute_job(job, queue)


def build_worker(rt: Runtime) -> FullkitWorker:
    return FullkitWorker([Queue(QUEUE_NAME, connection=rt.redis)], connection=rt.redis, runtime=rt)


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    configure_logging()
    rt = Runtime.build(settings)
    stop = threading.Event()
    _await_backends(rt, burst=burst, stop=stop)
    if not burst:
        threading.Thread(target=_resume_loop, args=(rt, stop), daemon=True).start()
    # In the background: a CRM that is slow to answer must not hold up `worker ready`.
    threading.Thread(target=rt.prepare_connectors, daemon=True).start()
    worker = build_worker(rt)
    log.info("worker ready", queue=QUEUE_NAME, pid_name=worker.name)
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
    finally:
        stop.set()
        rt.redis.close()
        if not settings.redis_url:
            EmbeddedValkey(settings.home).stop_if_unused()


def _await_backends(rt: Runtime, *, burst: bool, stop: threading.Event) -> None:
    """Wait until the ledger and the queue both answer, saying once what is missing.

    A down server is an outage to ride out, like serve does, not a reason to exit; a
    burst run is a one-off and reports it instead.
    """
    delay, last = 1.0, ""
    while True:
        try:
            _prepare_ledger(rt)
            backends.ping_queue(rt.settings, lambda: _queue_connection(rt))
            return
        except backends.Unreachable as exc:
            if burst:
                raise
            if str(exc) != last:
                log.warning(f"{exc}; retrying until it answers")
                last = str(exc)
        stop.wait(delay)
        delay = min(delay * 2, MAX_WAIT_SECONDS)


def _queue_connection(rt: Runtime) -> redis.Redis:
    if not rt.settings.redis_url:
        # The embedded server may have stopped meanwhile: start it again on its old port.
        EmbeddedValkey(rt.settings.home).url()
    return rt.redis


def _prepare_ledger(rt: Runtime) -> None:
    try:
        db.prepare(rt.engine, rt.settings)
    except db.SchemaOutdated:
        raise
    except Exception as exc:
        raise backends.ledger_unreachable(rt.settings, exc) from None


def _resume_loop(rt: Runtime, stop: threading.Event) -> None:
    while not stop.wait(RESUME_EVERY_SECONDS):
        try:
            if not rt.settings.redis_url:
                # Brings the shared embedded server back (on its old port) if it died.
                EmbeddedValkey(rt.settings.home).url()
            resumed = jobs.resume_stalled(rt)
        except Exception as exc:  # the queue or ledger may be briefly down; try next tick
            log.warning("resume scan failed", error=type(exc).__name__)
            continue
        if resumed:
            log.info("resumed stalled attempts", attempts=resumed)
