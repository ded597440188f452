"""RQ on Redis/Valkey: connections, the hand-off queue and deterministic job ids."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.types import FunctionReferenceType

from bridge.settings import Settings
from bridge.valkey import EmbeddedValkey

QUEUE_NAME = "fullkit"
# Job records outlive the CRMs' 24-hour redelivery window, so a late duplicate is still a no-op.
DEDUPE_SECONDS = 48 * 3600
JOB_TIMEOUT_SECONDS = 300


class QueueUnavailable(Exception):
    pass


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    try:
        return EmbeddedValkey(settings.home).url()
    except Exception as exc:  # any start failure means "queue down" to the caller
        raise QueueUnavailable(f"embedded Valkey could not start: {exc}") from None


def connect(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    url = redis_url(settings)
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 1.5)
    )


def job_id(*parts: object) -> str:
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()
    return digest[:40]


@dataclass
class HandoffQueue:
    """The only way work enters RQ: every job id is deterministic, every enqueue unique."""

    connection: redis.Redis

    @property
    def rq(self) -> Queue:
        return Queue(QUEUE_NAME, connection=self.connection)

    def enqueue_unique(
        self,
        func: FunctionReferenceType,
        job_key: str,
        *args: Any,
        retry: Retry | None = None,
        result_ttl: int = DEDUPE_SECONDS,
    ) -> bool:
        """Queue func(*args) under job_key; False when that job is queued or done already.

        A job of that key that failed for good is queued again: a redelivery is then the
        way a lost piece of work comes back, not something to drop as a duplicate.
        """
        try:
            self.rq.enqueue_call(
                func,
                args=args,
                job_id=job_key,
                unique=True,
                result_ttl=result_ttl,
                failure_ttl=DEDUPE_SECONDS,
                timeout=JOB_TIMEOUT_SECONDS,
                retry=retry,
            )
        except DuplicateJobError:
            return self._requeue_if_failed(job_key)
        except redis.RedisError as exc:
            raise QueueUnavailable(str(exc)) from None
        return True

    def _requeue_if_failed(self, job_key: str) -> bool:
        try:
            job = Job.fetch(job_key, connection=self.connection)
            if job.get_status() not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                return False
            job.requeue()
        except NoSuchJobError:
            return False  # it just expired; the redelivery after this one will queue it
        except InvalidJobOperation:
            return False  # another delivery requeued it a moment ago
        except redis.RedisError as exc:
            raise QueueUnavailable(str(exc)) from None
        return True

    def enqueue_later(
        self, delay: dt.timedelta, func: Callable[..., Any], job_key: str, *args: Any
    ) -> None:
        try:
            self.rq.enqueue_in(
                delay,
                func,
                *args,
                job_id=job_key,
                result_ttl=DEDUPE_SECONDS,
                failure_ttl=DEDUPE_SECONDS,
                job_timeout=JOB_TIMEOUT_SECONDS,
            )
        except redis.RedisError as exc:
            raise QueueUnavailable(str(exc)) from None
