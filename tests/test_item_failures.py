"""What HubSpot refuses or loses for one deal of a batch stays with that deal, and no
retry, however late HubSpot applies an earlier try, makes a second push-back task."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from rq.timeouts import JobTimeoutException
from sqlalchemy import select

from bridge import jobs
from bridge.models import Attempt
from bridge.queue import HandoffQueue, QueueUnavailable
from sandbox import WriteSource
from tests.e2e import Stack, move_together, start_stack

RETURNED = ["received", "evaluating", "returned"]


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def attempt(stack: Stack, deal_id: str) -> dict[str, Any]:
    history = stack.history(deal_id)
    assert history is not None
    latest: dict[str, Any] = history["attempts"][-1]
    return latest


def incomplete_deals(stack: Stack, count: int) -> list[str]:
    return [stack.complete_deal(f"Short {n}", amount="0") for n in range(count)]


def test_one_retryable_and_one_permanent_failure_leave_the_rest_settled(stack: Stack) -> None:
    flaky, refused, *rest = incomplete_deals(stack, 5)
    # The owner of one deal left the company: HubSpot refuses a task assigned to them.
    gone = stack.sandbox.add_owner("left@example.com")
    stack.sandbox.update("deals", refused, {"hubspot_owner_id": gone}, source=_user())
    with stack.sandbox.lock:
        del stack.sandbox.owners[gone]
    # HubSpot refuses the batch of tasks as a whole, then is briefly down for the first.
    stack.sandbox.fail_next(1, 400, "/crm/v3/objects/tasks/batch/create")
    stack.sandbox.fail_next(1, 503, "/crm/v3/objects/tasks")
    move_together(stack, [flaky, refused, *rest])
    stack.work()

    assert [attempt(stack, d)["state"] for d in rest] == ["returned"] * 3
    assert all(len(stack.sandbox.tasks_for_deal(d)) == 1 for d in rest)
    failed = attempt(stack, refused)
    assert failed["state"] == "failed"
    assert "hubspot_owner_id" in failed["error"] and "not a valid owner" in failed["error"]
    waiting = attempt(stack, flaky)
    assert waiting["state"] == "evaluating" and waiting["error"].startswith("retrying:")

    stack.sandbox.reset_calls()
    while stack.run_scheduled_now():
        stack.work()
    assert [t["state"] for t in attempt(stack, flaky)["transitions"]] == RETURNED
    assert len(stack.sandbox.tasks_for_deal(flaky)) == 1
    # The retry carried that one deal: its task and its deal update, nothing read again.
    assert [c.path for c in stack.sandbox.calls() if c.method != "GET"] == [
        "/crm/v4/associations/deals/tasks/batch/read",
        "/crm/v3/objects/tasks",
        f"/crm/v3/objects/deals/{flaky}",
    ]
    assert attempt(stack, refused)["state"] == "failed"


def test_task_errors_of_a_batch_are_told_apart_in_one_call(stack: Stack) -> None:
    refused, *rest = incomplete_deals(stack, 3)
    gone = stack.sandbox.add_owner("left@example.com")
    stack.sandbox.update("deals", refused, {"hubspot_owner_id": gone}, source=_user())
    with stack.sandbox.lock:
        del stack.sandbox.owners[gone]
    stack.sandbox.reset_calls()
    move_together(stack, [refused, *rest])
    stack.work()

    assert [attempt(stack, d)["state"] for d in rest] == ["returned"] * 2
    assert attempt(stack, refused)["state"] == "failed"
    # HubSpot's multi-status answer named the refused input: no task was created alone.
    assert len(stack.sandbox.calls("POST", "/crm/v3/objects/tasks/batch/create")) == 1
    assert [c.path for c in stack.sandbox.calls("POST", "/crm/v3/objects/tasks")] == [
        "/crm/v3/objects/tasks/batch/create"
    ]


def test_a_task_create_that_lands_after_its_timeout_stays_the_only_task(stack: Stack) -> None:
    (deal_id,) = incomplete_deals(stack, 1)
    # HubSpot answers the task create with a timeout, yet will apply it later.
    stack.sandbox.answer_creates_late(1)
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    assert attempt(stack, deal_id)["error"].startswith("retrying:")

    # The retry looks for the task before HubSpot has applied the late create.
    while stack.run_scheduled_now():
        stack.work()
    assert attempt(stack, deal_id)["state"] == "returned"
    (task,) = stack.sandbox.tasks_for_deal(deal_id)

    # Now the late create lands: HubSpot refuses its taken hand-off id.
    assert stack.sandbox.apply_late_creates() == 0
    assert [t["id"] for t in stack.sandbox.tasks_for_deal(deal_id)] == [task["id"]]
    (refusal,) = stack.sandbox.late_refusals
    assert "already has that value" in refusal.message


def test_a_late_create_that_lands_before_the_retry_is_the_task(stack: Stack) -> None:
    (deal_id,) = incomplete_deals(stack, 1)
    stack.sandbox.answer_creates_late(1)
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    assert stack.sandbox.apply_late_creates() == 1
    (task,) = stack.sandbox.tasks_for_deal(deal_id)

    while stack.run_scheduled_now():
        stack.work()
    assert attempt(stack, deal_id)["state"] == "returned"
    assert [t["id"] for t in stack.sandbox.tasks_for_deal(deal_id)] == [task["id"]]


def _user() -> WriteSource:
    return WriteSource.user(None)


# --- the job layer: timeouts and lost kicks --------------------------------------------


def test_a_batch_cut_off_by_the_job_timeout_retries_in_halves(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = stack.complete_deal("Gone Co")
    late = incomplete_deals(stack, 4)
    move_together(stack, [gone, *late])
    stack.sandbox.archive("deals", gone)  # deleted before Fullkit read it: fails for good
    connector = stack.runtime.crm("hubspot")

    def too_slow(*args: Any, **kwargs: Any) -> dict[str, str]:
        raise JobTimeoutException("Task exceeded maximum timeout value (300 seconds)")

    monkeypatch.setattr(connector, "create_return_tasks", too_slow)
    stack.work()

    failed = attempt(stack, gone)
    assert failed["state"] == "failed"
    assert failed["error"] == f"PermanentError: the CRM has no deal {gone}"
    assert all(
        attempt(stack, d)["error"] == "retrying: the step ran past the job timeout" for d in late
    )
    with stack.runtime.sessions() as session:
        due = session.scalars(
            select(Attempt.next_run_at).where(Attempt.deal_id.in_(late)).order_by(Attempt.id)
        ).all()
    seconds = [math.ceil(moment.timestamp()) for moment in due if moment is not None]
    # Two halves, each due in a second of its own: each comes back as a batch of two.
    assert len(set(seconds[:2])) == len(set(seconds[2:])) == 1
    assert seconds[2] > seconds[0]

    monkeypatch.undo()
    while stack.run_scheduled_now():
        stack.work()
    assert [attempt(stack, d)["state"] for d in late] == ["returned"] * 4
    assert all(len(stack.sandbox.tasks_for_deal(d)) == 1 for d in late)


def queued_intake(stack: Stack, deal_id: str) -> tuple[Any, ...]:
    """The intake job a webhook queued, taken off the queue to run by hand."""
    stack.sandbox.move_deal(deal_id, "closedwon")
    assert stack.sandbox.flush_webhooks(timeout=30)
    (job,) = stack.queue.jobs
    stack.queue.empty()
    return tuple(job.args)


def redis_down_for(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """The next `calls` enqueues meet an unreachable queue."""
    real = HandoffQueue.enqueue_unique
    left = [calls]

    def flaky(self: HandoffQueue, *args: Any, **kwargs: Any) -> bool:
        if left[0]:
            left[0] -= 1
            raise QueueUnavailable("Connection refused")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HandoffQueue, "enqueue_unique", flaky)
    monkeypatch.setattr(jobs, "KICK_PAUSES", (0.0, 0.0))
    # A busy system: the attempt is left to a batching job, which the kick queues.
    monkeypatch.setattr(jobs, "advance_alone", lambda *args, **kwargs: False)


def test_a_redis_blink_during_the_kick_is_ridden_out(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    (deal_id,) = incomplete_deals(stack, 1)
    args = queued_intake(stack, deal_id)
    redis_down_for(monkeypatch, calls=1)

    with jobs.serving(stack.runtime):
        assert jobs.handle_stage_changes(*args) == ["started"]
    stack.work()
    assert attempt(stack, deal_id)["state"] == "returned"


def test_a_kick_lost_to_redis_is_made_when_rq_retries_the_intake(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    (deal_id,) = incomplete_deals(stack, 1)
    args = queued_intake(stack, deal_id)
    redis_down_for(monkeypatch, calls=3)

    with jobs.serving(stack.runtime):
        with pytest.raises(QueueUnavailable):
            jobs.handle_stage_changes(*args)  # the change is committed, the kick lost
        # RQ runs the failed intake job again: the change is a duplicate now.
        assert jobs.handle_stage_changes(*args) == ["duplicate"]
    stack.work()
    assert attempt(stack, deal_id)["state"] == "returned"
