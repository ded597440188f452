"""`fullkit worker`: RQ workers with the retry scheduler, the reaper and the resumer.

One process (the supervisor) runs the scheduler and the maintenance loop as threads and
`FULLKIT_WORKER_PROCESSES` RQ workers as child processes (bridge.pool); with one process,
or `--burst`, everything runs in this process. Every RQ worker keeps a short-lived alive
key (bridge.reaper), so the jobs of a worker that died are queued again within seconds.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event as ProcessEvent
from types import FrameType
from typing import Any

import redis
import structlog
from rq import Queue, SimpleWorker
from rq.job import Job

from bridge import backends, db, jobs
from bridge.logging import configure_logging
from bridge.pool import Pool, die_with_parent
from bridge.queue import QUEUE_NAME
from bridge.reaper import Heartbeat, Reaper
from bridge.runtime import Runtime
from bridge.scheduler import Scheduler
from bridge.settings import Settings
from bridge.valkey import EmbeddedValkey

log = structlog.get_logger("fullkit.worker")
RESUME_EVERY_SECONDS = 10.0
MAX_WAIT_SECONDS = 30.0
# RQ's longest wait between tries of a queue that is down (its own default: a minute). Short,
# so that a worker takes jobs again within seconds of a Valkey restart.
MAX_RECONNECT_WAIT_SECONDS = 5.0


class FullkitWorker(SimpleWorker):
    """An RQ worker that holds its process's runtime and hands it to every job it runs.

    SimpleWorker runs jobs in this process: the runtime (connections, compiled kits,
    connector clients) is built once instead of once per job in a forked horse.
    """

    max_connection_wait_time = MAX_RECONNECT_WAIT_SECONDS

    def __init__(self, *args: Any, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        # RQ stops an idle worker by raising StopRequested from this handler; when the
        # signal lands while a finalizer runs (a ConnectionPool's __del__), Python swallows
        # that exception, the stop is lost, and the supervisor waits on this process for
        # ever. The flag makes the loop stop at its next turn all the same.
        self._stop_requested = True
        super().request_stop(signum, frame)

    def execute_job(self, job: Job, queue: Queue) -> None:
        with jobs.serving(self.runtime):
            super().execute_job(job, queue)


def build_worker(rt: Runtime) -> FullkitWorker:
    # RQ gets a client of its own. Its wait for the next job is a BLPOP of minutes, so it
    # raises the socket timeout of its client's pool, but only for connections made after
    # that: one the runtime had already pooled (10 s) timed the wait out, and RQ took that
    # for a lost queue and slept up to a minute between waits, an idle worker deaf to new
    # jobs. The runtime's own client (jobs, leases, heartbeat) keeps its short timeout.
    connection = _own_client(rt.redis)
    return FullkitWorker(
        [Queue(QUEUE_NAME, connection=connection)], connection=connection, runtime=rt
    )


def _own_client(client: redis.Redis) -> redis.Redis:
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    return redis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs))


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    configure_logging()
    rt = Runtime.build(settings)
    stop = threading.Event()
    _await_backends(rt, burst=burst, stop=stop)
    try:
        if burst:
            _work(rt, _announce, burst=True)
            return
        if settings.worker_processes == 1:
            with _maintained(rt, stop):
                _work(rt, _announce)
        else:
            _supervise(rt, stop)
    finally:
        stop.set()
        rt.redis.close()
        if not settings.redis_url:
            EmbeddedValkey(settings.home).stop_if_unused()


def _announce(worker_name: str) -> None:
    log.info("worker ready", queue=QUEUE_NAME, pid_name=worker_name)


def run_child(settings: Settings, ready: ProcessEvent, parent_pid: int) -> None:
    """One RQ worker process of the pool (forked or spawned by bridge.pool)."""
    die_with_parent(parent_pid)
    configure_logging()
    rt = Runtime.build(settings)
    _await_backends(rt, burst=False, stop=threading.Event())
    try:
        _work(rt, lambda _: ready.set())
    finally:
        rt.redis.close()


def _supervise(rt: Runtime, stop: threading.Event) -> None:
    size = rt.settings.worker_processes
    pool = Pool(size, run_child, rt.settings)
    # Nothing of ours may cross the fork: the children connect on their own.
    rt.engine.dispose()
    rt.redis.connection_pool.disconnect()
    pool.start()
    signal.signal(signal.SIGTERM, pool.stop)
    signal.signal(signal.SIGINT, pool.stop)
    with _maintained(rt, stop):
        pool.supervise(lambda: log.info("worker ready", queue=QUEUE_NAME, processes=size))


def _work(rt: Runtime, on_ready: Callable[[str], None], *, burst: bool = False) -> None:
    worker = build_worker(rt)
    # In the background: a CRM that is slow to answer must not hold up `worker ready`.
    threading.Thread(target=rt.prepare_connectors, daemon=True).start()
    # A burst worker beats too: other workers' reapers would take its job otherwise.
    heartbeat = Heartbeat(rt.redis, worker.name)
    heartbeat.start()
    try:
        on_ready(worker.name)
        # Burst: RQ moves the due scheduled jobs once, in this process, then drains the
        # queue. Otherwise the scheduler is a thread of the supervisor (bridge.scheduler).
        worker.work(burst=burst, with_scheduler=burst, logging_level="WARNING")
    finally:
        heartbeat.stop()


@contextmanager
def _maintained(rt: Runtime, stop: threading.Event) -> Iterator[None]:
    """The scheduler and the maintenance loop run while the block runs."""
    scheduler = Scheduler(rt.redis, [QUEUE_NAME])
    scheduler.start()
    threading.Thread(
        target=_maintenance_loop, args=(rt, stop), name="maintenance", daemon=True
    ).start()
    try:
        yield
    finally:
        stop.set()
        scheduler.stop()


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


def _maintenance_loop(rt: Runtime, stop: threading.Event) -> None:
    reaper = Reaper()
    while not stop.wait(RESUME_EVERY_SECONDS):
        try:
            maintain(rt, reaper)
        except Exception as exc:  # the queue or ledger may be briefly down; try next tick
            log.warning("maintenance failed", error=type(exc).__name__)


def maintain(rt: Runtime, reaper: Reaper) -> None:
    """One round: jobs of dead workers go back on the queue, stalled attempts resume."""
    if not rt.settings.redis_url:
        # Brings the shared embedded server back (on its old port) if it died.
        EmbeddedValkey(rt.settings.home).url()
    reaped = reaper.reap(rt.queue.rq)
    if reaped:
        log.info("requeued jobs of dead workers", jobs=reaped)
    resumed = jobs.resume_stalled(rt)
    if resumed:
        log.info("resumed stalled attempts", attempts=resumed)
