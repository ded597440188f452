"""A rate limit turned off paces nothing, yet every call is still counted for /metrics
(`fullkit_api_calls_total`), at one Redis round trip a call."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from bridge.settings import Settings
from connectors.asana import AsanaTarget
from connectors.hubspot_ticket import HubSpotTicketTarget
from connectors.webhook import WebhookTarget
from kernel import api_calls
from kernel.rate_budget import RateBudgets, UnpacedBudget, budgets_left
from sandbox.asana_http import start_asana_sandbox
from sandbox.server import RunningSandbox
from sandbox.webhook_sink import RunningWebhookSink, start_webhook_sink
from tests.conftest import APP
from tests.test_asana_target import request as asana_request
from tests.test_asana_target import target as asana_target
from tests.test_hubspot_ticket import sandbox_request as hubspot_request
from tests.test_webhook_target import SECRET, hook
from tests.test_webhook_target import request as webhook_request
from tests.test_webhook_target import target as webhook_target


@pytest.fixture
def connection(embedded_redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(embedded_redis_url)


def added(connection: redis.Redis, before: dict[tuple[str, str], int], system: str) -> int:
    after = api_calls.counts(connection)
    return after.get((system, "ok"), 0) - before.get((system, "ok"), 0)


def test_asana_calls_are_counted_with_its_limit_off(connection: redis.Redis) -> None:
    with start_asana_sandbox() as asana:
        gids = asana.sandbox.seed_default_workspace()
        ops: AsanaTarget = asana_target(asana, ASANA_RATE_LIMIT="off")
        ops.rate_budgets = RateBudgets(connection)
        before = api_calls.counts(connection)

        ops.create([asana_request({"project": gids["project"]})])

        assert isinstance(ops.api.budget, UnpacedBudget)
        assert added(connection, before, "asana") == len(asana.sandbox.calls()) == 2


def test_webhook_deliveries_are_counted_with_the_limit_off(connection: redis.Redis) -> None:
    sink: RunningWebhookSink
    with start_webhook_sink(SECRET) as sink:
        ops: WebhookTarget = webhook_target(FULLKIT_WEBHOOK_RATE_LIMIT="off")
        ops.rate_budgets = RateBudgets(connection)
        before = api_calls.counts(connection)

        ops.create([webhook_request(hook(sink))])

        assert added(connection, before, "webhook") == len(sink.sandbox.deliveries) == 1


def test_hubspot_ticket_calls_are_counted_with_the_limit_off(
    running: RunningSandbox, connection: redis.Redis
) -> None:
    request = hubspot_request(running)
    ops = HubSpotTicketTarget(
        Settings(
            HUBSPOT_ACCESS_TOKEN=running.access_token,
            HUBSPOT_API_BASE=running.url,
            HUBSPOT_APP_BASE=APP,
            HUBSPOT_RATE_LIMIT="off",
        )
    )
    ops.rate_budgets = RateBudgets(connection)
    before = api_calls.counts(connection)

    ops.create([request])

    assert added(connection, before, ops.name) == len(running.sandbox.calls()) >= 1


class CountingRedis(redis.Redis):
    """Counts the commands sent: each one is a round trip here (no pipelines)."""

    sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingRedis.sent += 1
        return super().execute_command(*args, **options)


def test_an_unpaced_call_costs_one_round_trip_and_no_budget_is_listed(
    embedded_redis_url: str,
) -> None:
    counting = CountingRedis.from_url(embedded_redis_url)
    budget = RateBudgets(counting).budget("asana", "https://asana.invalid token", None)
    budget.answered(budget.take(), outcome=api_calls.OK, system="asana")  # loads the script
    before = api_calls.counts(counting)
    CountingRedis.sent = 0

    budget.answered(budget.take(), outcome=api_calls.OK, system="asana")

    assert CountingRedis.sent == 1
    assert added(counting, before, "asana") == 1
    # Nothing to pace by, so nothing for /metrics to call a budget.
    assert all(left.limit > 0 for left in budgets_left(counting))
