"""The shared rate budget: N processes together stay under one CRM account's limit, and
HubSpot's own word (a 429's wait, its remaining calls) holds back every one of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from bridge import jobs
from bridge.settings import SettingsError, load_settings
from connectors.hubspot_settings import HubSpotSettings
from kernel.rate_budget import BudgetSpent, Limit, Observed, RateBudget, RateBudgets
from tests.conftest import Backend
from tests.e2e import Stack, start_stack

ACCOUNT = "https://api.hubapi.com pat-na1-test-token"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def a_process(backend: Backend, clock: FakeClock, limit: Limit, **options: Any) -> RateBudget:
    """A budget as another worker process holds it: its own connection, the same account."""
    budgets = RateBudgets(redis.Redis.from_url(backend.redis_url), clock=clock, **options)
    return budgets.budget("hubspot", ACCOUNT, limit)


def test_three_processes_hammering_together_never_exceed_the_limit(backend: Backend) -> None:
    clock, limit = FakeClock(), Limit(10, 10.0)
    processes = [a_process(backend, clock, limit) for _ in range(3)]
    admitted: Counter[float] = Counter()

    def hammer(budget: RateBudget) -> int:
        return sum(1 for _ in range(25) if budget.try_take()[0] is not None)

    start = clock.now
    with ThreadPoolExecutor(max_workers=3) as pool:
        for step in range(17):  # four and a quarter windows, a quarter window at a time
            clock.now = start + step * 2.5
            admitted[clock.now] = sum(pool.map(hammer, processes))

    times = sorted(admitted)
    for moment in times:
        in_window = sum(n for t, n in admitted.items() if moment - 10.0 < t <= moment)
        assert in_window <= 10
    # Demand always exceeds the limit, so each window is used exactly to the limit.
    assert [admitted[t] for t in times] == [10, 0, 0, 0] * 4 + [10]


def test_a_slot_is_held_for_a_window_after_the_answer(backend: Backend) -> None:
    clock = FakeClock()
    budget = a_process(backend, clock, Limit(1, 10.0))
    slot, _ = budget.try_take()
    clock.now += 2.0  # a slow answer: HubSpot may have counted the call at any moment
    budget.answered(slot)
    clock.now += 9.0
    assert budget.try_take() == (None, pytest.approx(1.0))
    clock.now += 1.0
    assert budget.try_take()[0] is not None


def test_a_pause_one_process_sets_holds_back_another(backend: Backend) -> None:
    clock, limit = FakeClock(), Limit(100, 10.0)
    first, second = a_process(backend, clock, limit), a_process(backend, clock, limit)
    first.pause(4.0)  # HubSpot answered 429 with Retry-After: 4
    assert second.try_take() == (None, pytest.approx(4.0))
    second.pause(1.0)  # a shorter pause never cuts a longer one short
    clock.now += 3.0
    assert first.try_take() == (None, pytest.approx(1.0))
    clock.now += 1.0
    assert second.try_take()[0] is not None


def test_hubspots_remaining_calls_win_over_our_count(backend: Backend) -> None:
    clock, limit = FakeClock(), Limit(10, 10.0)
    ours, other = a_process(backend, clock, limit), a_process(backend, clock, limit)
    slot, _ = ours.try_take()
    # Something else spends the same portal's limit: HubSpot says 3 left, we thought 9.
    ours.answered(slot, Observed(remaining=3, maximum=10, interval=10.0, at=clock.now))
    assert sum(1 for _ in range(10) if other.try_take()[0] is not None) == 3


def test_a_higher_remaining_than_ours_changes_nothing(backend: Backend) -> None:
    clock = FakeClock()
    budget = a_process(backend, clock, Limit(10, 10.0))
    slots = [budget.try_take()[0] for _ in range(5)]
    # A Professional portal allows 190: our configured 100 (here 10) still holds.
    budget.answered(slots[0], Observed(remaining=185, maximum=190, interval=10.0, at=clock.now))
    assert sum(1 for _ in range(10) if budget.try_take()[0] is not None) == 5


def test_take_waits_for_a_slot_within_its_bound(backend: Backend) -> None:
    budgets = RateBudgets(redis.Redis.from_url(backend.redis_url), max_wait=5.0)
    budget = budgets.budget("hubspot", ACCOUNT, Limit(2, 0.2))
    slots = [budget.take() for _ in range(5)]  # the window frees up while it waits
    assert all(slots) and len(set(slots)) == 5


def test_a_wait_beyond_the_bound_goes_back_to_the_caller(backend: Backend) -> None:
    clock = FakeClock()
    budget = a_process(backend, clock, Limit(100, 10.0), max_wait=1.0)
    budget.pause(30.0)
    with pytest.raises(BudgetSpent) as spent:
        budget.take()
    assert spent.value.wait == pytest.approx(30.0)


def test_redis_unreachable_lets_calls_through_unpaced() -> None:
    nothing = redis.Redis(host="127.0.0.1", port=9, retry=Retry(NoBackoff(), 0))
    budget = RateBudgets(nothing).budget("hubspot", ACCOUNT, Limit(1, 10.0))
    assert budget.take() is None
    budget.answered(None, Observed(0, 100, 10.0, 0.0))
    budget.pause(5.0)


def test_keys_name_the_account_by_digest_never_by_token(backend: Backend) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    budget = RateBudgets(connection).budget("hubspot", ACCOUNT, Limit(10, 10.0))
    budget.answered(budget.take(), Observed(5, 10, 10.0, 0.0))
    budget.pause(1.0)
    keys = [key.decode() for key in connection.scan_iter("fullkit:rate:*")]
    assert keys and all(key.startswith("fullkit:rate:") for key in keys)
    for key in keys:
        assert "pat-na1" not in key
        dumped = connection.dump(key) or b""
        assert b"pat-na1" not in dumped


# --- through the sandbox, which enforces HubSpot's rolling window over real HTTP ------


@pytest.fixture
def tight_stack(make_settings: Any) -> Iterator[Stack]:
    """A portal allowing 10 calls a second, and Fullkit told so."""
    for stack in start_stack(lambda **kw: make_settings(HUBSPOT_RATE_LIMIT="10/1s", **kw)):
        with stack.sandbox.lock:  # after set-up, which runs unpaced
            stack.sandbox.rate_limit = (10, 1.0)
            stack.sandbox.request_times.clear()
        stack.sandbox.reset_calls()
        yield stack


def test_two_workers_handing_off_a_burst_draw_no_429(tight_stack: Stack) -> None:
    stack = tight_stack
    stack.runtime.settings.batch_size = 2  # four batches, so both workers call HubSpot
    deals = [stack.complete_deal(f"Burst {n}", amount="0" if n % 3 == 0 else "900")
             for n in range(8)]  # fmt: skip
    for deal_id in deals:
        stack.sandbox.move_deal(deal_id, "closedwon")
    assert stack.sandbox.flush_webhooks(timeout=30)

    def worker() -> None:
        # What an RQ worker does with each job, in a thread of its own.
        with jobs.serving(stack.runtime):
            while found := Queue.dequeue_any(
                [stack.queue], None, connection=stack.queue.connection
            ):
                found[0].perform()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(worker) for _ in range(2)]:
            done.result()

    states = [stack.history(deal_id)["attempts"][0]["state"] for deal_id in deals]
    assert states == ["returned" if n % 3 == 0 else "ops_created" for n in range(8)]
    calls = stack.sandbox.calls()
    assert len(calls) > 20  # more than two windows' worth: the limit was really in play
    assert [c for c in calls if c.status == 429] == []


def test_metrics_show_the_calls_hubspot_says_are_left(tight_stack: Stack) -> None:
    stack = tight_stack
    deal_id = stack.complete_deal()
    stack.runtime.crm("hubspot").fetch_packets([deal_id])
    calls = len(stack.sandbox.calls())
    text = stack.app.test_client().get("/metrics").get_data(as_text=True)
    assert 'fullkit_crm_rate_limit_max{crm="hubspot"} 10.0' in text
    assert f'fullkit_crm_rate_limit_remaining{{crm="hubspot"}} {10 - calls}.0' in text


@pytest.mark.parametrize(
    ("value", "rate"),
    [("100/10s", (100, 10.0)), ("190", (190, 10.0)), ("10/500ms", (10, 0.5)), ("off", None)],
)
def test_the_limit_is_set_per_portal_tier(value: str, rate: tuple[int, float] | None) -> None:
    assert load_settings(HUBSPOT_RATE_LIMIT=value).section(HubSpotSettings).rate == rate


def test_a_malformed_limit_is_one_line_naming_the_setting() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(HUBSPOT_RATE_LIMIT="fast").section(HubSpotSettings)
    assert str(error.value) == (
        'invalid setting HUBSPOT_RATE_LIMIT: must be requests per window, e.g. "100/10s", or "off"'
    )
