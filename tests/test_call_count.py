"""What one hand-off costs in HubSpot API calls, counted by the sandbox.

HubSpot allows 100 or 190 calls per 10 s, so calls per deal bound how many hand-offs a
portal can take. The portal's account details, the ops owners' ids and the sales owners'
names are the same for many deals: every worker process shares them through Redis instead
of asking again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.runtime import Runtime
from bridge.worker import build_worker
from tests.e2e import Stack, start_stack


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def hand_off(stack: Stack, deal_id: str, worker: Runtime | None = None) -> list[str]:
    """Move the deal to the hand-off stage and let a worker settle it -> the calls made."""
    stack.sandbox.flush_webhooks(timeout=30)
    stack.sandbox.reset_calls()
    stack.sandbox.move_deal(deal_id, "closedwon")
    assert stack.sandbox.flush_webhooks(timeout=30)
    build_worker(worker or stack.runtime).work(burst=True, logging_level="WARNING")
    return [f"{call.method} {call.path}" for call in stack.sandbox.calls()]


def test_one_deal_costs_six_calls_in_any_worker_process(stack: Stack) -> None:
    # A portal that has handed off before: one deal for each of the kit's two ops owners.
    for name in ("Warm A", "Warm B"):
        hand_off(stack, stack.complete_deal(name))
    other_process = Runtime.build(stack.settings)  # a second worker: its own memory
    accepted = stack.complete_deal("Accepted Co")
    returned = stack.complete_deal("Returned Co", amount="0")

    accepted_calls = hand_off(stack, accepted, other_process)
    returned_calls = hand_off(stack, returned, other_process)

    assert stack.history(accepted)["owner"] == "ops"  # type: ignore[index]
    assert stack.history(returned)["owner"] == "sales"  # type: ignore[index]
    reads = [
        "GET /crm/v3/objects/deals/{deal}",
        "POST /crm/v3/objects/companies/batch/read",
        "POST /crm/v3/objects/contacts/batch/read",
        "POST /crm/v3/objects/line_items/batch/read",
    ]
    assert accepted_calls == [
        *[call.format(deal=accepted) for call in reads],
        "POST /crm/v3/objects/tickets",
        f"PATCH /crm/v3/objects/deals/{accepted}",
    ]
    assert returned_calls == [
        *[call.format(deal=returned) for call in reads],
        "POST /crm/v3/objects/tasks",
        f"PATCH /crm/v3/objects/deals/{returned}",
    ]
    other_process.engine.dispose()


def test_the_first_deal_of_a_portal_asks_for_its_details_once(stack: Stack) -> None:
    deal = stack.complete_deal("First Co")
    first = hand_off(stack, deal)

    assert first.count("GET /account-info/v3/details") == 1
    assert first.count("GET /crm/v3/owners/") == 1
    # The sales owner's name, once: reports and the console show people, not ids.
    assert first.count(f"GET /crm/v3/owners/{stack.deal(deal)['hubspot_owner_id']}") == 1
    assert len(first) == 9
