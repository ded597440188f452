"""The stalled-attempt resumer resumes what was lost, and nothing that is still on its way:
an attempt whose retry job waits in the queue, or whose long step still holds its lease."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from rq.registry import ScheduledJobRegistry

from bridge import jobs, lease, ledger
from bridge.lease import Leases
from bridge.models import Attempt
from tests.e2e import Stack, start_stack


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def rate_limited_once(stack: Stack) -> tuple[str, dt.datetime]:
    """A deal whose first call met a 429: its attempt waits for a scheduled retry job."""
    deal_id = stack.complete_deal()
    stack.sandbox.fail_next(1, 429, "/crm/v3/objects/deals", retry_after=5)
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    with stack.runtime.sessions() as session:
        attempt = ledger.latest_attempt(session, "hubspot", deal_id)
        assert attempt is not None and attempt.next_run_at is not None
        return deal_id, attempt.next_run_at


def due_now(stack: Stack) -> None:
    """The minutes the resumer was told about pass (the ledger's clock catches up)."""
    with stack.runtime.sessions() as session:
        for attempt in session.query(Attempt).filter(Attempt.next_run_at.is_not(None)):
            attempt.next_run_at = ledger.utcnow() - dt.timedelta(seconds=1)
        session.commit()


def test_a_retry_late_in_a_long_queue_is_not_run_a_second_time(stack: Stack) -> None:
    deal_id, due = rate_limited_once(stack)
    scheduled = ScheduledJobRegistry(queue=stack.queue)
    (retry_id,) = scheduled.get_job_ids()
    # The scheduler is a little late: the resumer must not queue a job beside the retry.
    assert jobs.resume_stalled(stack.runtime, now=due + dt.timedelta(seconds=45)) == []
    # Now it is due and queued, behind a long queue: still the retry's to run.
    scheduled.remove(retry_id)
    job = stack.queue.fetch_job(retry_id)
    assert job is not None
    stack.queue.enqueue_job(job)
    assert jobs.resume_stalled(stack.runtime, now=due + dt.timedelta(minutes=5)) == []
    assert stack.queue.job_ids == [retry_id]
    due_now(stack)
    stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    # One read of the deal for the failed call, one for the retry: run once, not twice.
    assert len(stack.sandbox.calls("POST", "/crm/v3/objects/deals/batch/read")) <= 2
    assert len(stack.sandbox.tickets()) == 1


def test_a_retry_no_scheduler_will_run_is_resumed(stack: Stack) -> None:
    deal_id, due = rate_limited_once(stack)
    # Every worker was down for minutes: the scheduled job is long overdue.
    assert jobs.resume_stalled(stack.runtime, now=due + dt.timedelta(minutes=5)) == [1]
    due_now(stack)
    stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    assert len(stack.sandbox.tickets()) == 1


def test_a_step_longer_than_the_lease_keeps_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "LEASE_SECONDS", 0.6)
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    with stack.runtime.sessions() as session:  # a worker is mid-step, for minutes now
        attempt = ledger.latest_attempt(session, "hubspot", deal_id)
        assert attempt is not None
        attempt.state, attempt.ops_ref, attempt.ops_link = "accepted", None, None
        attempt.updated_at = ledger.utcnow() - dt.timedelta(minutes=5)
        session.commit()
        attempt_id = attempt.id
    taken: list[bool] = []
    with Leases(stack.runtime.redis) as mine:
        assert mine.take(attempt_id)
        mine.keep()
        step = threading.Event()
        # The step runs for five lease lifetimes; meanwhile another worker looks again
        # and again, as an idle worker's resumer and batching job would.
        for _ in range(12):
            step.wait(0.25)
            with Leases(stack.runtime.redis) as other:
                taken.append(other.take(attempt_id))
            assert jobs.resume_stalled(stack.runtime) == []
    assert taken == [False] * 12
    assert jobs.resume_stalled(stack.runtime) == [attempt_id]  # released: resumable again
