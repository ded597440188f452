"""A lone deal on a quiet system is handed off by its intake job, without a second queue
hop; anything else (a burst, a batching job already queued, an attempt another worker
holds) still goes through the account's batching job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rq.registry import FinishedJobRegistry

from bridge import intake, jobs, ledger
from bridge.lease import Leases
from tests.e2e import Stack, start_stack

ACCEPTED = ["received", "evaluating", "accepted", "ops_created"]


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def states(stack: Stack, deal_id: str) -> list[str]:
    history = stack.history(deal_id)
    assert history is not None
    return [t["state"] for t in history["attempts"][-1]["transitions"]]


def jobs_run(stack: Stack) -> list[str]:
    registry = FinishedJobRegistry(queue=stack.queue)
    return sorted(
        str(job.func_name).rsplit(".", 1)[-1]
        for job in (stack.queue.fetch_job(i) for i in registry.get_job_ids())
        if job is not None
    )


def test_a_lone_deal_is_handed_off_by_its_intake_job(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()

    assert states(stack, deal_id) == ACCEPTED
    assert len(stack.sandbox.tickets()) == 1
    assert jobs_run(stack) == ["handle_stage_changes"]


def test_a_queued_batching_job_keeps_the_deal(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    assert stack.sandbox.flush_webhooks(timeout=30)
    assert jobs.kick(stack.runtime, "hubspot")  # queued ahead of the intake job
    stack.work()

    assert states(stack, deal_id) == ACCEPTED
    assert len(stack.sandbox.tickets()) == 1
    assert jobs_run(stack) == ["advance_ready", "handle_stage_changes"]


def test_an_attempt_another_worker_holds_is_left_to_it(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    assert stack.sandbox.flush_webhooks(timeout=30)
    [queued] = stack.queue.jobs
    [args] = queued.args[0]  # the delivery's one change
    change = intake.StageChange.from_job_args(*args)
    started = ledger.record_stage_change(stack.runtime.sessions, change)
    assert started.outcome == "started" and started.attempt_id is not None
    stack.queue.empty()  # its intake, now recorded, would only find a duplicate

    with Leases(stack.runtime.redis) as other_worker:
        assert other_worker.take(started.attempt_id)
        assert not jobs.advance_alone(stack.runtime, "hubspot", started.attempt_id)
        assert states(stack, deal_id) == ["received"]
        assert stack.sandbox.tickets() == []

    assert jobs.advance_alone(stack.runtime, "hubspot", started.attempt_id)
    assert states(stack, deal_id) == ACCEPTED
    assert len(stack.sandbox.tickets()) == 1


def test_a_prepared_worker_spends_its_calls_on_the_hand_offs(stack: Stack) -> None:
    stack.runtime.prepare_connectors()  # what `fullkit worker` does as it starts
    deal_ids = [stack.complete_deal(f"Acme {n}") for n in range(2)]
    stack.sandbox.reset_calls()
    for deal_id in deal_ids:
        stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()

    assert [states(stack, deal_id) for deal_id in deal_ids] == [ACCEPTED, ACCEPTED]
    assert len(stack.sandbox.tickets()) == 2
    asked = {call.path for call in stack.sandbox.calls(method="GET")}
    assert not [path for path in asked if path.startswith(("/account-info", "/crm/v3/owners"))]
