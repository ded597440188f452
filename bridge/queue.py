"""RQ on Redis/Valkey: connections, the hand-off queue and deterministic job ids."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import EnqueueData
from rq.serializers import resolve_serializer
from rq.types import FunctionReferenceType
from rq.utils import get_call_string, now, parse_timeout, resolve_function_reference, utcformat

from bridge.settings import Settings
from bridge.valkey import EmbeddedValkey

QUEUE_NAME = "fullkit"
# Job records outlive the CRMs' 24-hour redelivery window, so a late duplicate is still a no-op.
DEDUPE_SECONDS = 48 * 3600
JOB_TIMEOUT_SECONDS = 300


class QueueUnavailable(Exception):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class QueueClient:
    """How a process's Redis client waits, and whether it may start the embedded server."""

    connect_timeout: float
    read_timeout: float
    # redis-py's own retries of a call that failed to connect or timed out; None: its
    # default (3, with backoff), which multiplies every wait by four.
    retries: int | None = None
    # False for the web process: it only reads where the embedded server is (see
    # Container), so its requests never wait on the lock of a process starting it.
    starts_embedded: bool = True


# Workers can wait: a job that meets a slow queue is better late than failed.
WORKER_CLIENT = QueueClient(connect_timeout=1.5, read_timeout=10.0)
# Receivers promise a 503 within 2 s when the queue is unreachable (SPEC): one try, and
# waits that leave room for a restart of the embedded server inside that budget.
RECEIVER_CLIENT = QueueClient(
    connect_timeout=0.5, read_timeout=1.0, retries=0, starts_embedded=False
)


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url.get_secret_value()
    try:
        return EmbeddedValkey(settings.home).url()
    except Exception as exc:  # any start failure means "queue down" to the caller
        raise QueueUnavailable(f"embedded Valkey could not start: {exc}") from None


def connect(
    settings: Settings, client: QueueClient = WORKER_CLIENT, *, url: str | None = None
) -> redis.Redis:
    """A client of the queue (`url`, or REDIS_URL, or the embedded server started now)."""
    extra: dict[str, Any] = {}
    if client.retries is not None:
        extra["retry"] = redis.retry.Retry(NoBackoff(), client.retries)
    return redis.Redis.from_url(
        url or redis_url(settings),
        socket_timeout=client.read_timeout,
        socket_connect_timeout=client.connect_timeout,
        **extra,
    )


def job_id(*parts: object) -> str:
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()
    return digest[:40]


# One job, atomically: a job hash that exists already makes the call a duplicate, and its
# status comes back so that a job which failed for good can be requeued. RQ's own unique
# enqueue only says "exists", and enqueue_many has no unique mode at all.
_ENQUEUE_UNIQUE = b"""
if redis.call("EXISTS", KEYS[1]) == 1 then
    return redis.call("HGET", KEYS[1], "status") or ""
end
redis.call("HSET", KEYS[1], unpack(ARGV, 4))
redis.call(ARGV[3], KEYS[2], ARGV[1])
redis.call("SADD", KEYS[3], ARGV[2])
return 1
"""
_ENQUEUE_UNIQUE_SHA = hashlib.sha1(_ENQUEUE_UNIQUE).hexdigest()
# The keys RQ's Queue names (its list, and the set of all queues), built once: a Queue
# object per webhook ran RQ's serializer lookup (a runtime Protocol check) every time.
_QUEUE_KEY = Queue.redis_queue_namespace_prefix + QUEUE_NAME
_QUEUES_KEY = Queue.redis_queues_keys
_REQUEUED_ON_REDELIVERY = {b"failed", b"stopped", b"canceled"}


class Enqueuer(Protocol):
    """What queues jobs: a HandoffQueue, or the web app's, which reconnects once."""

    def enqueue_unique_many(self, calls: Sequence[EnqueueData]) -> list[bool]: ...


@dataclass
class HandoffQueue:
    """The only way work enters RQ: every job id is deterministic, every enqueue unique."""

    connection: redis.Redis

    @property
    def rq(self) -> Queue:
        return Queue(QUEUE_NAME, connection=self.connection)

    @staticmethod
    def call(
        func: FunctionReferenceType,
        job_key: str,
        *args: Any,
        retry: Retry | None = None,
        result_ttl: int = DEDUPE_SECONDS,
    ) -> EnqueueData:
        """One job for enqueue_unique_many: func(*args) under job_key."""
        return Queue.prepare_data(
            func,
            args=args,
            job_id=job_key,
            result_ttl=result_ttl,
            failure_ttl=DEDUPE_SECONDS,
            timeout=JOB_TIMEOUT_SECONDS,
            retry=retry,
        )

    def enqueue_unique(
        self,
        func: FunctionReferenceType,
        job_key: str,
        *args: Any,
        retry: Retry | None = None,
        result_ttl: int = DEDUPE_SECONDS,
        at_front: bool = False,
    ) -> bool:
        """Queue func(*args) under job_key; False when that job is queued or done already."""
        call = self.call(func, job_key, *args, retry=retry, result_ttl=result_ttl)
        return self.enqueue_unique_many([call], at_front=at_front)[0]

    def enqueue_unique_many(
        self, calls: Sequence[EnqueueData], *, at_front: bool = False
    ) -> list[bool]:
        """Queue every call in one round trip; for each, False when it is a duplicate.

        The batch is one MULTI/EXEC: HubSpot gets its 204 only once all of it is written,
        and a batch cut off half-way is not half-queued. A job of a key that failed for good
        is queued again: a redelivery is then the way a lost piece of work comes back, not
        something to drop as a duplicate.
        """
        if not calls:
            return []
        enqueued_at = now()
        moment = utcformat(enqueued_at)
        push = "LPUSH" if at_front else "RPUSH"
        scripted = []
        for data in calls:
            key = data.job_id
            fields = job_fields(data, QUEUE_NAME, moment)
            if fields is None:  # what job_fields does not build, RQ's Job does
                job = _job(self.rq, data, enqueued_at)
                key = job.id
                fields = [part for item in job.to_dict().items() for part in item]
            keys = [Job.key_for(key), _QUEUE_KEY, _QUEUES_KEY]
            scripted.append((keys, [key, _QUEUE_KEY, push, *fields]))
        try:
            if len(scripted) == 1:
                # A webhook delivery is one job: the script alone is atomic, and only its
                # EVALSHA is sent (the script once more on NOSCRIPT), where a transaction
                # would add MULTI, EXEC and the script's text to every request.
                keys, args = scripted[0]
                answers = [self._evalsha(keys, args)]
            else:
                answers = self._transaction(scripted)
        except redis.RedisError as exc:
            timed_out = isinstance(exc, redis.TimeoutError)
            raise QueueUnavailable(str(exc), timed_out=timed_out) from None
        return [
            answer == 1
            or (answer in _REQUEUED_ON_REDELIVERY and self._requeue_if_failed(data.job_id))
            for data, answer in zip(calls, answers, strict=True)
        ]

    def _evalsha(self, keys: list[Any], args: list[Any]) -> Any:
        # What redis-py's Script does, without building one (and hashing its text) per call.
        try:
            return self.connection.evalsha(_ENQUEUE_UNIQUE_SHA, len(keys), *keys, *args)
        except NoScriptError:
            self.connection.script_load(_ENQUEUE_UNIQUE)
            return self.connection.evalsha(_ENQUEUE_UNIQUE_SHA, len(keys), *keys, *args)

    def _transaction(self, scripted: list[tuple[list[Any], list[Any]]]) -> list[Any]:
        pipe = self.connection.pipeline(transaction=True)
        # Loaded in the same round trip: EVALSHA after a server restart (or SCRIPT FLUSH)
        # never meets NOSCRIPT, and there is no SCRIPT EXISTS round trip first.
        pipe.script_load(_ENQUEUE_UNIQUE)
        for keys, args in scripted:
            pipe.evalsha(_ENQUEUE_UNIQUE_SHA, len(keys), *keys, *args)
        answers: list[Any] = pipe.execute()[1:]
        return answers

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


_SERIALIZER = resolve_serializer(None)  # RQ's default: what its workers load job data with
# A job's call in its description: RQ shortens each argument's repr to this many characters.
_DESCRIBED_ARGUMENT_LENGTH = 75


def job_fields(data: EnqueueData, origin: str, moment: str) -> list[Any] | None:
    """The hash RQ's enqueue writes for a new queued job (`Job.to_dict()`), as HSET's
    field-value list, or None for a call that uses more of RQ than HandoffQueue.call does.

    Built directly because a webhook pays for it: a `Job` object per event cost the
    receiver about a tenth of its CPU. tests/test_queue.py holds this to RQ's own hash.
    """
    if data.kwargs or data.ttl is not None or data.description or data.depends_on:
        return None
    if data.meta or data.on_success or data.on_failure or data.on_stopped:
        return None
    if data.repeat is not None or data.webhooks or data.job_id is None:
        return None
    args = data.args if data.args is not None else ()
    _instance, func_name = resolve_function_reference(data.func)
    if _instance is not None:
        return None
    pickled = _SERIALIZER.dumps((func_name, None, args, {}))
    fields: list[Any] = [
        "created_at", moment,
        "data", zlib.compress(pickled),
        "success_callback_name", "", "failure_callback_name", "", "stopped_callback_name", "",
        "started_at", "", "ended_at", "", "last_heartbeat", "", "worker_name", "", "group_id", "",
        "origin", origin,
        "description", get_call_string(func_name, args, {}, _DESCRIBED_ARGUMENT_LENGTH),
        "enqueued_at", moment,
        "status", JobStatus.QUEUED.value,
    ]  # fmt: skip
    retry: Retry | None = data.retry
    if retry is not None:
        fields += ["retries_left", retry.max, "retry_intervals", json.dumps(retry.intervals)]
        if retry.enqueue_at_front:
            fields += ["enqueue_at_front_on_retry", 1]
    for name in ("timeout", "result_ttl", "failure_ttl"):
        value = parse_timeout(getattr(data, name))
        if value is not None:
            fields += [name, value]
    return fields


def _job(queue: Queue, data: EnqueueData, enqueued_at: dt.datetime) -> Job:
    """The job RQ's enqueue would write, built without touching the server."""
    job = queue.create_job(
        data.func, args=data.args, kwargs=data.kwargs, timeout=data.timeout,
        result_ttl=data.result_ttl, ttl=data.ttl, failure_ttl=data.failure_ttl,
        description=data.description, job_id=data.job_id, meta=data.meta, retry=data.retry,
        status=JobStatus.QUEUED,
    )  # fmt: skip
    job.enqueued_at = enqueued_at
    return job
