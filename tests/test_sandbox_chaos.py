"""The sandbox's chaos options, seen from a client: random 5xx that write nothing, 429
bursts with HubSpot's headers, and late answers whose write happened anyway."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox
from sandbox.hubspot_chaos import Chaos


@pytest.fixture
def running() -> Iterator[RunningSandbox]:
    box = HubSpotSandbox(rate_limit=(190, 10.0))
    box.seed_default_portal()
    with start_sandbox(sandbox=box) as served:
        yield served


def _create_deal(running: RunningSandbox, name: str, timeout: float = 5.0) -> requests.Response:
    return requests.post(
        f"{running.url}/crm/v3/objects/deals",
        data=json.dumps({"properties": {"dealname": name}}),
        headers={"Authorization": f"Bearer {running.access_token}",
                 "Content-Type": "application/json"},
        timeout=timeout,
    )  # fmt: skip


def _names(box: HubSpotSandbox) -> list[str]:
    return [c["properties"]["dealname"] for c in box.all("deals")]


def test_chaos_is_off_by_default(running: RunningSandbox) -> None:
    assert not running.sandbox.chaos.active
    assert _create_deal(running, "Calm").status_code == 201


def test_an_injected_5xx_writes_nothing(running: RunningSandbox) -> None:
    running.sandbox.chaos = Chaos(error_rate=1.0, seed=1)
    answer = _create_deal(running, "Lost")
    assert answer.status_code in (500, 502, 503, 504)
    assert answer.json()["status"] == "error"
    assert "Lost" not in _names(running.sandbox)
    assert running.sandbox.chaos.injected["error"] == 1


def test_a_429_burst_comes_after_a_period_with_a_spent_window(running: RunningSandbox) -> None:
    now = [0.0]
    running.sandbox.chaos = Chaos(burst_every=20.0, burst_seconds=2.0, clock=lambda: now[0])
    assert _create_deal(running, "Before").status_code == 201
    now[0] = 21.0
    answer = _create_deal(running, "During")
    assert answer.status_code == 429
    assert answer.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert answer.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    now[0] = 23.5
    assert _create_deal(running, "After").status_code == 201
    assert _names(running.sandbox) == ["Before", "After"]


def test_a_late_answer_times_the_client_out_but_the_write_is_done(
    running: RunningSandbox,
) -> None:
    running.sandbox.chaos = Chaos(late_rate=1.0, late_seconds=1.0, seed=1)
    with pytest.raises(requests.Timeout):
        _create_deal(running, "Late", timeout=0.2)
    assert "Late" in _names(running.sandbox)
    assert running.sandbox.chaos.injected["late"] == 1


def test_a_slow_call_is_carried_out_after_the_client_gave_up(running: RunningSandbox) -> None:
    running.sandbox.chaos = Chaos(slow_rate=1.0, late_seconds=1.0, seed=1)
    with pytest.raises(requests.Timeout):
        _create_deal(running, "Slow", timeout=0.2)
    assert "Slow" not in _names(running.sandbox)  # not yet: it lands a moment later
    deadline = time.monotonic() + 10
    while "Slow" not in _names(running.sandbox):
        assert time.monotonic() < deadline, "the slow create never landed"
        time.sleep(0.05)
    assert running.sandbox.chaos.injected["slow"] == 1
