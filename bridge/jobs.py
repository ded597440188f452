"""RQ job functions. Jobs carry ids, never objects or secrets; state is loaded fresh.

Attempts are advanced in batches: intake records a stage change and makes sure one
batching job (`advance_ready`) is queued for the CRM account; that job leases up to
`FULLKIT_BATCH_SIZE` ready attempts and runs their steps together, one API call per step.
Job ids are deterministic per generation of the account's batching job, so a burst of
intakes queues a handful of jobs while a single deal on a quiet system starts at once.

The worker that runs a job hands it the process's runtime (see `serving` and
bridge.worker.FullkitWorker); nothing here is a global a test must reset.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis
import structlog
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus, get_current_job
from rq.registry import FailedJobRegistry
from rq.timeouts import BaseTimeoutException
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError

from bridge import batches, intake, ledger, replay
from bridge.batches import DEFAULT_ACCOUNT, batch_job_id, generation_key
from bridge.handoff import Handoffs
from bridge.lease import Leases, lease_key
from bridge.models import Attempt
from bridge.models import StageChange as RecordedChange
from bridge.queue import QueueUnavailable, job_id
from bridge.runtime import Runtime
from kernel.errors import ConnectorError, QuotaError, RetryableError

log = structlog.get_logger("fullkit.jobs")

# Retry delays: exponential from BASE, capped, with full jitter (see `retry_delay`).
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
# An attempt nobody touched for this long while in progress lost its worker.
STALL_SECONDS = 30
# Attempts waiting for a quota reset spread over this many seconds after it, so a
# quarter-end backlog does not spend the fresh quota in its first second.
RESET_SPREAD_SECONDS = 60.0
# Candidates looked at per batch beyond its size: others may be leased by other workers.
CANDIDATES_PER_SLOT = 3
# Waits between tries of a kick that met a Redis error: a blink is over within a second.
KICK_PAUSES = (0.1, 0.4)
# A scheduled retry this late has no scheduler to run it (every worker down, or RQ's
# scheduler lock still held by a dead worker: it lapses after about a minute).
SCHEDULER_GRACE_SECONDS = 90

_runtime: ContextVar[Runtime] = ContextVar("fullkit_runtime")


@contextmanager
def serving(rt: Runtime) -> Iterator[Runtime]:
    """Jobs run inside this block reach `rt` through `current_runtime()`."""
    token = _runtime.set(rt)
    try:
        yield rt
    finally:
        _runtime.reset(token)


def current_runtime() -> Runtime:
    try:
        return _runtime.get()
    except LookupError:
        raise RuntimeError(
            "no Fullkit runtime: jobs run inside `fullkit worker` (bridge.worker.FullkitWorker)"
        ) from None


def handle_stage_change(
    crm: str,
    deal_id: str,
    stage_ref: str,
    occurred_at: int | str,
    event_ref: str,
    change_key: str | None = None,
) -> str:
    """One stage change, as intake jobs carried them before they carried a delivery's worth.

    Jobs queued before change keys (epoch milliseconds, no key) still run.
    """
    args = (crm, deal_id, stage_ref, occurred_at, event_ref, change_key)
    return handle_stage_changes([args])[0]


def handle_stage_changes(changes: list[tuple[Any, ...]]) -> list[str]:
    """Hand-off-stage changes arrived: record each once, and start attempts where they may.

    Queued by name (`bridge.intake.INTAKE_JOB`), one job per delivery, each change as
    `StageChange.job_args()`. Returns each change's outcome.
    """
    rt = current_runtime()
    parsed = [intake.StageChange.from_job_args(*args) for args in changes]
    results = ledger.record_stage_changes(rt.sessions, parsed)
    started: dict[str, list[int]] = {}
    for change, result in zip(parsed, results, strict=True):
        log.info("stage change", crm=change.crm, deal_id=change.deal_id,
                 stage=change.stage_ref, outcome=result.outcome)  # fmt: skip
        if result.outcome == "started" and result.attempt_id is not None:
            started.setdefault(change.crm, []).append(result.attempt_id)
        elif result.outcome == "duplicate":
            # This job may be RQ's retry of one whose kick failed after the change was
            # committed: without a kick now its attempt would wait for the stall resumer.
            _kick_if_stranded(rt, change)
    _count_duplicates(rt, parsed, results)
    for crm, attempt_ids in started.items():
        # A lone start on a quiet system is advanced here; more go to one batching job.
        if len(attempt_ids) > 1 or not advance_alone(rt, crm, attempt_ids[0]):
            kick_promptly(rt, crm)
    return [result.outcome for result in results]


def _count_duplicates(
    rt: Runtime, changes: list[intake.StageChange], results: list[ledger.ChangeOutcome]
) -> None:
    """Count redelivered changes for /metrics, once per intake job: an RQ retry of this
    job finds its own changes recorded, and they are no redelivery."""
    job = get_current_job()
    if job is not None and job.number_of_retries:
        return
    by_crm: Counter[str] = Counter(
        change.crm
        for change, result in zip(changes, results, strict=True)
        if result.outcome == "duplicate"
    )
    try:
        intake.count_duplicates(rt.redis, by_crm)
    except redis.RedisError:
        log.warning("duplicate stage changes not counted: queue unreachable")


def kick_promptly(rt: Runtime, crm: str, account: str = DEFAULT_ACCOUNT) -> None:
    """`kick`, tried again over a second when Redis blinks (a failover, a restart of the
    embedded server). Still failing, the intake job fails and RQ retries it; the retry
    finds its change recorded and kicks then (see `_kick_if_stranded`)."""
    for pause in (*KICK_PAUSES, None):
        try:
            kick(rt, crm, account)
            return
        except (redis.RedisError, QueueUnavailable):
            if pause is None:
                raise
            log.warning("queue unreachable; kicking again", crm=crm, wait=pause)
            time.sleep(pause)


def _kick_if_stranded(rt: Runtime, change: intake.StageChange) -> None:
    """Kick the attempt a recorded change belongs to if it is in progress, due, and no
    worker holds it (kick itself is a no-op while a batching job is queued)."""
    with rt.sessions() as session:
        row = session.execute(
            select(Attempt.id, Attempt.state, Attempt.next_run_at)
            .join(RecordedChange, RecordedChange.attempt_id == Attempt.id)
            .where(
                RecordedChange.crm == change.crm,
                RecordedChange.change_key == change.change_key,
            )
        ).first()
    if row is None or row.state not in ledger.IN_PROGRESS:
        return
    if row.next_run_at is not None and row.next_run_at > ledger.utcnow():
        return  # a retry is scheduled for it
    if rt.redis.exists(lease_key(row.id)):
        return  # a worker is on it
    kick_promptly(rt, change.crm)


def advance_alone(rt: Runtime, crm: str, attempt_id: int, account: str = DEFAULT_ACCOUNT) -> bool:
    """On a quiet system, advance a just-started attempt here rather than a queue hop later.

    Returns False, having done nothing, unless the attempt would be a batch of one anyway:
    no job waits in the queue (a burst's other intakes would join its batch), no batching
    job of the account is queued, and no other attempt of the CRM is ready. The same lease
    a batching job takes keeps one that is running off the attempt, and this off theirs.
    """
    if rt.queue.rq.count:
        return False
    generation = int(rt.redis.get(generation_key(crm, account)) or 0)
    if rt.redis.exists(Job.key_for(batch_job_id(crm, account, generation))):
        return False
    with rt.sessions() as session:
        if ledger.ready_attempt_ids(session, crm, ledger.utcnow(), 2) != [attempt_id]:
            return False
    with Leases(rt.redis) as leases:
        if not leases.take(attempt_id):
            return False
        leases.keep()
        with rt.sessions() as session:
            attempts = ledger.claimed_attempts(session, leases.held, {attempt_id})
            if attempts:
                _run(rt, session, attempts, account)
    return True


def kick(rt: Runtime, crm: str, account: str = DEFAULT_ACCOUNT) -> bool:
    """Make sure the account's batching job is queued (see bridge.batches.kick)."""
    return batches.kick(rt.redis, rt.queue, crm, account)


def advance_ready(
    crm: str, account: str = DEFAULT_ACCOUNT, attempt_ids: list[int] | None = None
) -> dict[str, int]:
    """The batching job: advance the account's ready attempts, a batch at a time."""
    return advance_batch(current_runtime(), crm, account, attempt_ids)


def advance_attempt(attempt_id: int) -> str | None:
    """Jobs queued before batching: the attempt joins its account's next batch."""
    rt = current_runtime()
    with rt.sessions() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None:
            return None
        crm = attempt.crm
    advance_batch(rt, crm, DEFAULT_ACCOUNT, [attempt_id])
    with rt.sessions() as session:
        attempt = session.get(Attempt, attempt_id)
        return attempt.state if attempt is not None else None


def advance_batch(
    rt: Runtime, crm: str, account: str = DEFAULT_ACCOUNT, named: list[int] | None = None
) -> dict[str, int]:
    """Lease up to a batch of ready attempts (those named first) and advance them together.

    Returns how many of the batch ended in each state. Leases keep any other worker off
    these attempts; the next batch is queued at once when more are ready, so several
    workers drain a burst side by side.
    """
    rt.redis.incr(generation_key(crm, account))
    named = list(named or [])
    with Leases(rt.redis) as leases:
        more = _claim(rt, leases, crm, named)
        leases.keep()
        if more:
            kick(rt, crm, account)
        if not leases.held:
            return {}
        with rt.sessions() as session:
            attempts = ledger.claimed_attempts(session, leases.held, set(named))
            if not attempts:
                return {}
            _run(rt, session, attempts, account)
            states: dict[str, int] = {}
            for attempt in attempts:
                states[attempt.state] = states.get(attempt.state, 0) + 1
            return states


def _claim(rt: Runtime, leases: Leases, crm: str, named: list[int]) -> bool:
    """Lease the batch; True when ready attempts remain beyond it."""
    size = rt.settings.batch_size
    limit = size * CANDIDATES_PER_SLOT
    with rt.sessions() as session:
        ready = ledger.ready_attempt_ids(session, crm, ledger.utcnow(), limit)
    candidates = list(dict.fromkeys([*named, *ready]))
    while candidates and len(leases.held) < size:
        # Usually one round trip: only attempts another worker holds make it try again.
        wanted = size - len(leases.held)
        leases.take_many(candidates[:wanted])
        candidates = candidates[wanted:]
    return bool(candidates) or len(ready) == limit


def _run(rt: Runtime, session: ledger.Session, attempts: list[Attempt], account: str) -> None:
    """Advance the attempts together; each one a step set aside is retried or failed alone."""
    handoffs = Handoffs(rt, session, attempts)
    try:
        handoffs.run()
    except BaseTimeoutException:
        session.rollback()
        _split_late(handoffs.failures, _unfinished(attempts))
    except StaleDataError:
        session.rollback()  # another runner took an attempt over (our lease lapsed): theirs
        log.warning("batch taken over", handoffs=[a.handoff_id for a in attempts])
        return
    except (DBAPIError, redis.RedisError):
        raise  # our own storage is down: nothing can be written; the resumer retries later
    except Exception as exc:  # a bug must not spin forever through the resumer
        session.rollback()
        log.exception("batch crashed", handoffs=[a.handoff_id for a in attempts])
        for attempt in _unfinished(attempts):
            _fail(attempt, f"internal error: {type(exc).__name__}: {exc}")
        session.commit()
        return
    _settle(rt, session, attempts, handoffs.failures, account)
    for attempt in attempts:
        log.info("attempt", handoff=attempt.handoff_id, state=attempt.state, error=attempt.error)


def _split_late(failures: dict[int, ConnectorError], unfinished: list[Attempt]) -> None:
    """Attempts a job timeout cut off retry in two halves, due at least a second apart,
    so their next batches differ: one slow deal holds back ever fewer others (halved at
    each timeout) instead of its whole batch every time. An error an attempt was set
    aside with before the timeout (a permanent one, say) stands."""
    late = [attempt for attempt in unfinished if attempt.id not in failures]
    half = (len(late) + 1) // 2
    ceiling = min(
        BACKOFF_CAP_SECONDS,
        BACKOFF_BASE_SECONDS * 2 ** max((a.retries for a in late), default=0),
    )
    first = RetryableError("the step ran past the job timeout")
    # The first half's delay is at most `ceiling` (see retry_delay): the second's after it.
    second = RetryableError("the step ran past the job timeout", retry_after=ceiling + 1.0)
    for index, attempt in enumerate(late):
        failures[attempt.id] = first if index < half else second


def _unfinished(attempts: list[Attempt]) -> list[Attempt]:
    """Those a failed step left in progress (the others finished before it, committed)."""
    return [attempt for attempt in attempts if attempt.state in ledger.IN_PROGRESS]


def _settle(
    rt: Runtime,
    session: ledger.Session,
    attempts: list[Attempt],
    failures: dict[int, ConnectorError],
    account: str,
) -> None:
    """Retry or fail each attempt set aside; those that failed together retry together."""
    by_error: dict[int, tuple[ConnectorError, list[Attempt]]] = {}
    for attempt in attempts:
        error = failures.get(attempt.id)
        if error is not None and attempt.state in ledger.IN_PROGRESS:
            by_error.setdefault(id(error), (error, []))[1].append(attempt)
    now = ledger.utcnow()
    due: set[dt.datetime] = set()
    for error, group in by_error.values():
        if isinstance(error, QuotaError):
            due.update(_wait_for_reset(attempt, error, now) for attempt in group)
        elif isinstance(error, RetryableError):
            due.update(_retry_later(rt, group, error, now))
        else:
            for attempt in group:
                _fail(attempt, f"{type(error).__name__}: {error}")
    session.commit()
    crms = {attempt.crm for attempt in attempts}
    for moment in due:
        # One job per second of due times: attempts due together are served together.
        second = math.ceil(moment.timestamp())
        delay = dt.timedelta(seconds=max(0.0, second - now.timestamp()))
        for crm in crms:
            key = retry_key(crm, account, moment)
            rt.queue.enqueue_later(delay, advance_ready, key, crm, account)


def retry_key(crm: str, account: str, due: dt.datetime) -> str:
    """The job that retries the account's attempts due at `due`: one per second."""
    return job_id("retry", crm, account, math.ceil(due.timestamp()))


def _fail(attempt: Attempt, reason: str) -> None:
    attempt.error = reason
    attempt.next_run_at = None
    ledger.move(attempt, "failed", reason)


def retry_delay(
    retries: int,
    retry_after: float | None,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
) -> float:
    ceiling = min(cap, base * 2**retries)
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def _retry_later(
    rt: Runtime, group: list[Attempt], exc: RetryableError, now: dt.datetime
) -> set[dt.datetime]:
    """Attempts that failed in one call retry after one delay; returns when they are due."""
    delay = retry_delay(
        max(attempt.retries for attempt in group),
        exc.retry_after,
        rt.settings.backoff_base_seconds,
        rt.settings.backoff_cap_seconds,
    )
    due: set[dt.datetime] = set()
    for attempt in group:
        first = attempt.first_retry_at or now
        if (now - first).total_seconds() > rt.settings.retry_window_seconds:
            _fail(attempt, f"retries exhausted: {exc}")
            continue
        attempt.first_retry_at = first
        attempt.retries += 1
        attempt.error = f"retrying: {exc}"
        attempt.next_run_at = now + dt.timedelta(seconds=delay)
        attempt.updated_at = now
        due.add(attempt.next_run_at)
    return due


def _wait_for_reset(attempt: Attempt, exc: QuotaError, now: dt.datetime) -> dt.datetime:
    """Sleep until the quota resets; the retry window starts afresh after it.

    The window bounds retries that might succeed at any moment; before the reset none
    can, so failing the attempt after the window would only lose it.
    """
    delay = max(1.0, (exc.resets_at - now).total_seconds())
    delay += random.uniform(0, RESET_SPREAD_SECONDS)
    attempt.first_retry_at = None
    attempt.retries += 1
    attempt.error = exc.waiting()
    attempt.next_run_at = now + dt.timedelta(seconds=delay)
    attempt.updated_at = now
    log.info("waiting for quota reset", handoff=attempt.handoff_id, resets_at=str(exc.resets_at))
    return attempt.next_run_at


def resume_stalled(rt: Runtime, now: dt.datetime | None = None) -> list[int]:
    """Queue attempts whose worker died mid-way (SIGKILL, power loss); returns their ids."""
    now = now or ledger.utcnow()
    stale = now - dt.timedelta(seconds=STALL_SECONDS)
    with rt.sessions() as session:
        rows = session.execute(
            select(Attempt.id, Attempt.crm, Attempt.next_run_at).where(
                Attempt.state.in_(ledger.IN_PROGRESS), Attempt.updated_at < stale
            )
        ).all()
    resumed: list[int] = []
    crms: set[str] = set()
    for attempt_id, crm, next_run_at in rows:
        if next_run_at is not None and next_run_at > stale:
            continue  # a retry is scheduled and not overdue
        if next_run_at is not None and _retry_pending(rt, crm, next_run_at, now):
            continue  # its retry job is late (a long queue), not lost: it will run
        if rt.redis.exists(lease_key(attempt_id)):
            continue
        resumed.append(attempt_id)
        crms.add(crm)
    for crm in sorted(crms):
        kick(rt, crm)  # the account's next batch takes them: they are ready and unleased
    return resumed


def _retry_pending(rt: Runtime, crm: str, due: dt.datetime, now: dt.datetime) -> bool:
    """True while the retry job of attempts due at `due` is still to run.

    Queued or running it will take the attempt; a second job beside it would run the
    attempt again right after. Scheduled it waits for a scheduler, unless long overdue.
    """
    try:
        job = Job.fetch(retry_key(crm, DEFAULT_ACCOUNT, due), connection=rt.redis)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.STARTED):
        return True
    overdue = (now - due).total_seconds()
    return status == JobStatus.SCHEDULED and overdue < SCHEDULER_GRACE_SECONDS


def replay_failed(rt: Runtime, deals: list[tuple[str, str]] | None = None) -> list[str]:
    """Re-queue failed attempts where they stopped (see bridge.replay)."""
    return replay.replay_failed(rt, deals)


def requeue_failed_jobs(rt: Runtime) -> int:
    """Stage changes whose intake job failed for good (its retries spent) run again."""
    registry = FailedJobRegistry(queue=rt.queue.rq)
    count = 0
    for failed_id in registry.get_job_ids():
        try:
            registry.requeue(failed_id)
            count += 1
        except (InvalidJobOperation, NoSuchJobError):
            continue  # expired or requeued by someone else meanwhile
    return count
