"""RQ job functions. Jobs carry ids, never objects or secrets; state is loaded fresh."""

from __future__ import annotations

import datetime as dt
import random

import redis
import structlog
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.registry import FailedJobRegistry
from rq.timeouts import BaseTimeoutException
from sqlalchemy import select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError

from bridge import intake, ledger
from bridge.handoff import Handoffs
from bridge.lease import attempt_lease, lease_key
from bridge.models import Attempt
from bridge.queue import job_id
from bridge.runtime import Runtime
from bridge.settings import load_settings
from kernel.errors import AuthError, PermanentError, QuotaError, RetryableError

log = structlog.get_logger("fullkit.jobs")

_runtime: Runtime | None = None

# Retry delays: exponential from BASE, capped, with full jitter (see `retry_delay`).
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
# An attempt nobody touched for this long while in progress lost its worker.
STALL_SECONDS = 30
# Attempts waiting for a quota reset spread over this many seconds after it, so a
# quarter-end backlog does not spend the fresh quota in its first second.
RESET_SPREAD_SECONDS = 60.0


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime.build(load_settings())
    return _runtime


def use_runtime(value: Runtime | None) -> None:
    """Let a worker (or a test) hand over the runtime it built."""
    global _runtime
    _runtime = value


def handle_stage_change(
    crm: str,
    deal_id: str,
    stage_ref: str,
    occurred_at: int | str,
    event_ref: str,
    change_key: str | None = None,
) -> str:
    """A hand-off-stage change arrived: record it once, and start an attempt if it may.

    Queued by name (`bridge.intake.INTAKE_JOB`) with `StageChange.job_args()`; jobs
    queued before change keys (epoch milliseconds, no key) still run.
    """
    rt = runtime()
    change = intake.StageChange.from_job_args(
        crm, deal_id, stage_ref, occurred_at, event_ref, change_key
    )
    result = ledger.record_stage_change(rt.sessions, change)
    log.info("stage change", crm=crm, deal_id=deal_id, stage=stage_ref, outcome=result.outcome)
    if result.outcome == "started" and result.attempt_id is not None:
        advance_attempt(result.attempt_id)
    return result.outcome


def advance_attempt(attempt_id: int) -> str | None:
    """Carry an attempt as far as it goes; one worker at a time per attempt."""
    rt = runtime()
    with attempt_lease(rt.redis, attempt_id) as held:
        if not held:
            return None  # another worker is on it; if that worker dies the resumer steps in
        with rt.sessions() as session:
            attempt = session.get(Attempt, attempt_id)
            if attempt is None:
                return None
            _run(rt, session, [attempt])
            return attempt.state


def _run(rt: Runtime, session: ledger.Session, attempts: list[Attempt]) -> None:
    """Advance the attempts together; an error of a step reaches every one of them."""
    try:
        Handoffs(rt, session, attempts).run()
    except RetryableError as exc:
        session.rollback()
        for attempt in _unfinished(attempts):
            _retry_later(rt, session, attempt, exc)
    except (AuthError, PermanentError) as exc:
        session.rollback()
        for attempt in _unfinished(attempts):
            _fail(session, attempt, f"{type(exc).__name__}: {exc}")
    except BaseTimeoutException:
        session.rollback()
        for attempt in _unfinished(attempts):
            _retry_later(rt, session, attempt, RetryableError("the step ran past the job timeout"))
    except StaleDataError:
        session.rollback()  # another runner took an attempt over (our lease lapsed): theirs
        log.warning("attempt taken over", handoffs=[a.handoff_id for a in attempts])
        return
    except (DBAPIError, redis.RedisError):
        raise  # our own storage is down: nothing can be written; the resumer retries later
    except Exception as exc:  # a bug must not spin forever through the resumer
        session.rollback()
        log.exception("attempt crashed", handoffs=[a.handoff_id for a in attempts])
        for attempt in _unfinished(attempts):
            _fail(session, attempt, f"internal error: {type(exc).__name__}: {exc}")
    for attempt in attempts:
        log.info("attempt", handoff=attempt.handoff_id, state=attempt.state, error=attempt.error)


def _unfinished(attempts: list[Attempt]) -> list[Attempt]:
    """Those a failed step left in progress (the others finished before it, committed)."""
    return [attempt for attempt in attempts if attempt.state in ledger.IN_PROGRESS]


def _fail(session: ledger.Session, attempt: Attempt, reason: str) -> None:
    attempt.error = reason
    attempt.next_run_at = None
    ledger.move(attempt, "failed", reason)
    session.commit()


def retry_delay(retries: int, retry_after: float | None) -> float:
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**retries)
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def _retry_later(
    rt: Runtime, session: ledger.Session, attempt: Attempt, exc: RetryableError
) -> None:
    now = ledger.utcnow()
    if isinstance(exc, QuotaError):
        _wait_for_reset(rt, session, attempt, exc, now)
        return
    first = attempt.first_retry_at or now
    if (now - first).total_seconds() > rt.settings.retry_window_seconds:
        _fail(session, attempt, f"retries exhausted: {exc}")
        return
    delay = retry_delay(attempt.retries, exc.retry_after)
    attempt.first_retry_at = first
    attempt.retries += 1
    attempt.error = f"retrying: {exc}"
    attempt.next_run_at = now + dt.timedelta(seconds=delay)
    attempt.updated_at = now
    session.commit()
    key = job_id("retry", attempt.id, attempt.retries)
    rt.queue.enqueue_later(dt.timedelta(seconds=delay), advance_attempt, key, attempt.id)


def _wait_for_reset(
    rt: Runtime, session: ledger.Session, attempt: Attempt, exc: QuotaError, now: dt.datetime
) -> None:
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
    session.commit()
    log.info("waiting for quota reset", handoff=attempt.handoff_id, resets_at=str(exc.resets_at))
    key = job_id("retry", attempt.id, attempt.retries)
    rt.queue.enqueue_later(dt.timedelta(seconds=delay), advance_attempt, key, attempt.id)


def resume_stalled(rt: Runtime, now: dt.datetime | None = None) -> list[int]:
    """Queue attempts whose worker died mid-way (SIGKILL, power loss); returns their ids."""
    now = now or ledger.utcnow()
    stale = now - dt.timedelta(seconds=STALL_SECONDS)
    with rt.sessions() as session:
        rows = session.execute(
            select(Attempt.id, Attempt.updated_at, Attempt.next_run_at).where(
                Attempt.state.in_(ledger.IN_PROGRESS), Attempt.updated_at < stale
            )
        ).all()
    resumed = []
    for attempt_id, updated_at, next_run_at in rows:
        if next_run_at is not None and next_run_at > stale:
            continue  # a retry is scheduled and not overdue
        if rt.redis.exists(lease_key(attempt_id)):
            continue
        key = job_id("resume", attempt_id, updated_at.isoformat())
        if rt.queue.enqueue_unique(advance_attempt, key, attempt_id):
            resumed.append(attempt_id)
    return resumed


def replay_failed(rt: Runtime, deals: list[tuple[str, str]] | None = None) -> list[str]:
    """Re-queue failed attempts (all, or those of the given deals) where they stopped.

    Returns the hand-off ids queued. The operator fixed what failed them (a token, an
    ops owner's HubSpot user, an outage); each resumes at its last step, with a fresh
    retry window, and finishes without repeating what it had done.
    """
    query = select(Attempt).where(Attempt.state == "failed")
    if deals:
        query = query.where(tuple_(Attempt.crm, Attempt.deal_id).in_(deals))
    queued: list[str] = []
    with rt.sessions() as session:
        for attempt in session.scalars(query.order_by(Attempt.id)):
            resume_at = next(
                (t.state for t in reversed(attempt.transitions) if t.state in ledger.IN_PROGRESS),
                "received",
            )
            ledger.move(attempt, resume_at, "replayed by an operator")
            attempt.error, attempt.retries = None, 0
            attempt.first_retry_at = attempt.next_run_at = None
            session.commit()
            key = job_id("replay", attempt.id, attempt.version)
            rt.queue.enqueue_unique(advance_attempt, key, attempt.id)
            queued.append(attempt.handoff_id)
    return queued


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
