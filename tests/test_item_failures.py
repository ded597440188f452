"""What HubSpot refuses or loses for one deal of a batch stays with that deal, and no
retry, however late HubSpot applies an earlier try, makes a second push-back task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import WriteSource
from tests.e2e import Stack, start_stack

RETURNED = ["received", "evaluating", "returned"]


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def move_together(stack: Stack, deal_ids: list[str]) -> None:
    with stack.sandbox.hold_webhooks():
        for deal_id in deal_ids:
            stack.sandbox.move_deal(deal_id, "closedwon")


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
