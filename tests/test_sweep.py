"""`fullkit sweep`: hand-offs whose webhook was lost for good are found through HubSpot's
search and queued once, through the sandbox over real HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import connectors.hubspot
from bridge.cli import cli
from bridge.rules import load_rules
from bridge.settings import Settings
from bridge.sweep import parse_duration
from bridge.valkey import free_port
from connectors.hubspot import HubSpotConnector
from sandbox import HubSpotSandbox, WriteSource, start_sandbox
from tests.conftest import ROOT, secret
from tests.e2e import Stack, start_stack
from tests.test_cli import fullkit


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


@contextmanager
def webhooks_lost(stack: Stack) -> Iterator[None]:
    """HubSpot's deliveries meet a 401 (say, a proxy rewrote the signed URL), so HubSpot
    gives up on them for good."""
    box = stack.sandbox
    kept = list(box.subscriptions)
    box.subscriptions = [dataclasses.replace(s, client_secret="not-ours") for s in kept]
    try:
        yield
        assert box.flush_webhooks(timeout=30)
    finally:
        box.subscriptions = kept
    assert box.deliveries and all(d.status == 401 for d in box.deliveries)


def hubspot_rules(rules: Path, home: Path) -> Path:
    """The rules without their Salesforce kits: these tests sweep HubSpot only, and the
    sweep skips Salesforce (it cannot search it by stage yet) with a line of its own."""
    folder = home / "hubspot-rules"
    if not folder.exists():
        shutil.copytree(rules, folder)
        for kit in (folder / "kits").glob("*salesforce*"):
            kit.unlink()
    return folder


def sweep(stack: Stack, *args: str, **env: str) -> Result:
    settings = stack.settings
    base = {
        "FULLKIT_HOME": str(settings.home),
        "FULLKIT_RULES_DIR": str(hubspot_rules(settings.rules_dir, settings.home)),
        "REDIS_URL": secret(settings.redis_url) or "",
        "HUBSPOT_ACCESS_TOKEN": stack.sandbox.access_token,
        "HUBSPOT_API_BASE": stack.running.url,
    }
    if settings.database_url:
        base["DATABASE_URL"] = settings.database_url.get_secret_value()
    return CliRunner().invoke(cli, ["sweep", *args], env={**base, **env})


def summary(result: Result) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_a_lost_webhook_is_swept_up_and_the_deal_settles(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    with webhooks_lost(stack):
        stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    assert stack.history(deal_id) is None  # nothing came in: the webhook is gone

    result = sweep(stack, "--older-than", "0")

    assert result.exit_code == 0, result.output
    assert f"queued hubspot:{deal_id} (in closedwon since " in result.stdout
    assert summary(result) == (
        "found 1 deal(s) in a hand-off stage for over 0s: 0 already handled, 1 queued"
    )
    stack.work()
    assert stack.deal(deal_id)["fullkit_status"] == "accepted"
    assert len(stack.sandbox.tickets()) == 1
    history = stack.history(deal_id)
    assert history is not None and history["owner"] == "ops"
    assert [a["state"] for a in history["attempts"]] == ["ops_created"]

    again = sweep(stack, "--older-than", "0")

    assert again.exit_code == 0
    assert again.stdout.strip().splitlines() == [
        "found 1 deal(s) in a hand-off stage for over 0s: 1 already handled, 0 queued"
    ]
    stack.work()
    assert len(stack.sandbox.tickets()) == 1


def test_a_deal_whose_webhook_arrived_is_not_queued_again(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    assert stack.sandbox.flush_webhooks(timeout=30)  # queued by the receiver, not yet worked

    before_work = sweep(stack, "--older-than", "0")
    stack.work()
    after_work = sweep(stack, "--older-than", "0")

    for result in (before_work, after_work):
        assert result.exit_code == 0
        assert summary(result).endswith("1 already handled, 0 queued")
    stack.work()
    history = stack.history(deal_id)
    assert history is not None and len(history["attempts"]) == 1
    assert len(stack.sandbox.tickets()) == 1


def test_default_sweep_leaves_deals_that_entered_recently_alone(stack: Stack) -> None:
    recent = stack.complete_deal("Recent Co")
    waiting = stack.complete_deal("Waiting Co")
    twenty_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    with webhooks_lost(stack):
        stack.sandbox.move_deal(recent, "closedwon")
        stack.sandbox.move_deal(waiting, "closedwon", at=twenty_minutes_ago)

    result = sweep(stack)

    assert result.exit_code == 0
    assert result.stdout.strip().splitlines() == [
        f"queued hubspot:{waiting} (in closedwon since "
        f"{twenty_minutes_ago.isoformat(timespec='milliseconds').replace('+00:00', 'Z')})",
        "found 1 deal(s) in a hand-off stage for over 15m: 0 already handled, 1 queued",
    ]
    stack.work()
    assert stack.history(recent) is None
    assert stack.deal(waiting)["fullkit_status"] == "accepted"


def test_a_deal_won_before_the_lookback_window_is_not_handed_off(stack: Stack) -> None:
    old = stack.complete_deal("Old Co")
    with webhooks_lost(stack):
        stack.sandbox.move_deal(
            old, "closedwon", at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        )

    result = sweep(stack)

    assert summary(result) == (
        "found 0 deal(s) in a hand-off stage for over 15m: 0 already handled, 0 queued"
    )
    assert "queued hubspot:" in sweep(stack, "--within", "31d").stdout


def test_hundreds_of_deals_in_the_stage_are_paged_and_queued_once(stack: Stack) -> None:
    # Deals created straight into the hand-off stage: HubSpot sends no stage-change event.
    created = {
        stack.sandbox.create("deals", {"dealname": f"Bulk {i}", "dealstage": "closedwon"},
                             source=WriteSource.user(None)).id
        for i in range(260)
    }  # fmt: skip

    result = sweep(stack, "--older-than", "0")

    assert result.exit_code == 0, result.output
    queued = {line.split()[1].removeprefix("hubspot:") for line in result.stdout.splitlines()[:-1]}
    assert queued == created
    assert summary(result).endswith("0 already handled, 260 queued")
    assert stack.queue.count == 260
    searches = stack.sandbox.calls("POST", "/crm/v3/objects/deals/search")
    assert [call.status for call in searches] == [200, 200]  # 200 a page, via `after`

    again = sweep(stack, "--older-than", "0")
    assert summary(again).endswith("260 already handled, 0 queued")
    assert stack.queue.count == 260


def test_search_past_its_result_cap_and_rate_limit_finds_every_deal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # HubSpot stops a query at 10,000 results and allows 5 searches a second; the same
    # rules, scaled down so a test can reach them.
    monkeypatch.setattr(connectors.hubspot, "SEARCH_RESULT_CAP", 200)
    box = HubSpotSandbox(rate_limit=None, search_rate_limit=(1, 1.0), search_result_cap=200)
    box.seed_default_portal()
    ids = {
        box.create("deals", {"dealname": f"D{i}", "dealstage": "closedwon"},
                   source=WriteSource.user(None)).id
        for i in range(450)
    }  # fmt: skip
    box.create("deals", {"dealname": "Not yet", "dealstage": "contractsent"},
               source=WriteSource.user(None))  # fmt: skip
    with start_sandbox(sandbox=box) as served:
        settings = Settings(HUBSPOT_ACCESS_TOKEN=box.access_token, HUBSPOT_API_BASE=served.url)
        connector = HubSpotConnector(settings, load_rules(ROOT / "kit_rules").mappings["hubspot"])
        now = dt.datetime.now(dt.UTC)

        found = connector.deals_in_stages(["closedwon"], now - dt.timedelta(days=1), now)

    assert sorted(entry.deal_id for entry in found) == sorted(ids)
    statuses = [call.status for call in box.calls("POST", "/crm/v3/objects/deals/search")]
    assert statuses.count(200) == 3  # 200 + 200 + 50, each page a query of its own
    assert 429 in statuses and 400 not in statuses


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200)]
)
def test_older_than_takes_seconds_or_a_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["-5", "15x", "m", "", "1.2.3", "15 minutes", "99999999999h"])
def test_a_bad_older_than_is_a_usage_error(bad: str) -> None:
    result = CliRunner().invoke(cli, ["sweep", "--older-than", bad])
    assert result.exit_code == 2
    assert "--older-than" in result.output


def test_a_bad_older_than_is_one_line_exit_2() -> None:
    done = fullkit(["sweep", "--older-than", "soon"])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("fullkit: ")
    assert "--older-than" in done.stderr


def test_a_refused_token_is_one_line_exit_1(stack: Stack) -> None:
    result = sweep(stack, HUBSPOT_ACCESS_TOKEN="revoked-token")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "fullkit: sweep failed: HubSpot search deals: the access token was refused (HTTP 401)"
    )


def test_an_unreachable_hubspot_is_one_line_exit_1(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connectors.hubspot, "SEARCH_TRIES", 2)
    result = sweep(stack, HUBSPOT_API_BASE=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "fullkit: sweep failed: HubSpot search deals: connection failed (ConnectionError)"
    )


def test_without_a_hubspot_token_the_sweep_says_it_searched_nothing(stack: Stack) -> None:
    result = sweep(stack, HUBSPOT_ACCESS_TOKEN="")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "fullkit: sweep found no CRM to search: hubspot: HubSpot connector disabled: "
        "HUBSPOT_ACCESS_TOKEN is not set"
    )


def test_a_lookback_shorter_than_older_than_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["sweep", "--older-than", "2h", "--within", "1h"])
    assert result.exit_code == 2
    assert "--within" in result.output


def test_a_spent_daily_limit_stops_the_sweep_at_once(stack: Stack) -> None:
    stack.sandbox.exhaust_daily_limit(5, "/crm/v3/objects/deals/search")
    stack.sandbox.reset_calls()
    result = sweep(stack, "--older-than", "0")
    assert result.exit_code == 1
    assert "daily" in result.stderr.lower()
    searches = [c for c in stack.sandbox.calls() if c.path.endswith("/search")]
    assert len(searches) == 1  # not tried again against a spent quota
