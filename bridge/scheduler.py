"""RQ's scheduler as a thread of the worker: it dies with its worker and outlives outages.

`Worker.work(with_scheduler=True)` forks the scheduler into a process of its own: a
SIGKILLed worker leaves it running with the scheduler lock, and the first connection
error (a Valkey restart) ends it for good, stranding every scheduled retry. Here the same
RQScheduler steps run from a thread, so the scheduler cannot outlive its worker, and an
error ends one tick, not the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import redis
import structlog
from rq.scheduler import RQScheduler

log = structlog.get_logger("fullkit.scheduler")
TICK_SECONDS = 1.0


class Scheduler:
    """Moves due scheduled jobs onto their queue while this process holds RQ's lock.

    Several workers may each run one; RQ's per-queue lock lets one of them act. A killed
    holder's lock lapses after about a minute and another worker's scheduler takes over.
    """

    def __init__(self, connection: redis.Redis, queue_names: Sequence[str]) -> None:
        self.rq = RQScheduler(
            list(queue_names), connection=connection, logging_level=logging.WARNING
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.rq.release_locks()
        except redis.RedisError:
            pass  # the lock lapses by itself

    def tick(self) -> None:
        """One scheduler round: take or keep the lock, then enqueue what is due."""
        if not self.rq.acquired_locks:
            self.rq.acquire_locks()
        if self.rq.acquired_locks:
            # Refreshes the lock, re-taking it if a restarted server lost it, and lets
            # it go when another scheduler took it over meanwhile.
            self.rq.heartbeat()
            self.rq.enqueue_scheduled_jobs()

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception as exc:  # a lost connection, mostly: never end the loop for it
                if not self._failing:
                    log.warning(
                        "scheduler cannot reach the queue; retrying", error=type(exc).__name__
                    )
                self._failing = True
                continue
            if self._failing:
                log.info("scheduler reached the queue again")
                self._failing = False
