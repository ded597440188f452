"""The neutral stage change: one key per change as its CRM names it, an aware time, and a
receiver registry that hands each CRM the hand-off stages it watches."""

from __future__ import annotations

import datetime as dt

import pytest

from bridge import intake
from bridge.receivers import RECEIVERS, watched_stages
from bridge.rules import load_rules
from tests.conftest import ROOT

OCCURRED_MS = 1795774800123


def test_a_hubspot_change_is_keyed_by_deal_stage_and_occurred_at() -> None:
    change = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=100)
    assert change.deal_id == "1234"
    assert change.occurred_at == dt.datetime(2026, 11, 27, 10, 20, 0, 123000, tzinfo=dt.UTC)
    assert change.change_key == f"1234:closedwon:{OCCURRED_MS}"
    assert change.event_ref == "hubspot-event:100"


def test_the_same_change_under_another_event_id_has_the_same_key() -> None:
    first = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=100)
    twin = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=999)
    later = intake.hubspot_change(1234, "closedwon", OCCURRED_MS + 1, event_id=101)
    assert (twin.change_key, twin.job_key) == (first.change_key, first.job_key)
    assert later.change_key != first.change_key


def test_a_deal_found_by_the_sweep_is_the_change_its_webhook_would_bring() -> None:
    webhook = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=100)
    # The CRM may report the entry with microseconds; webhooks date it to the millisecond.
    entered = webhook.occurred_at + dt.timedelta(microseconds=456)
    swept = intake.observed_change("hubspot", "1234", "closedwon", entered, "hubspot-sweep")
    assert (swept.change_key, swept.job_key, swept.occurred_at) == (
        webhook.change_key, webhook.job_key, webhook.occurred_at,
    )  # fmt: skip


def test_salesforce_changes_are_keyed_by_notification_id_or_event_id() -> None:
    at = dt.datetime(2026, 11, 27, 10, 20, tzinfo=dt.UTC)
    outbound = intake.StageChange(
        "salesforce", "0065g00000AbCdEAAV", "Closed Won", at,
        intake.salesforce_notification_key("04l5g00000AbCdEAAF"),
    )  # fmt: skip
    flow = intake.StageChange(
        "salesforce", "0065g00000AbCdEAAV", "Closed Won", at,
        intake.salesforce_event_key("04l5g00000AbCdEAAF"),
    )  # fmt: skip
    # The same string as a notification Id and as a Flow's eventId names two deliveries.
    assert outbound.change_key != flow.change_key
    assert outbound.job_key != flow.job_key


def test_a_change_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        intake.StageChange("hubspot", "1", "closedwon", dt.datetime(2026, 11, 27), "k")


def test_a_very_long_key_is_shortened_and_stays_distinct() -> None:
    first = intake.salesforce_event_key("x" * 300 + "a")
    second = intake.salesforce_event_key("x" * 300 + "b")
    assert len(first) == len(second) == intake.MAX_KEY_LENGTH
    assert first != second and first.startswith("event:xxx")


def test_the_job_carries_the_change_whole() -> None:
    change = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=100)
    assert all(isinstance(arg, str) for arg in change.job_args())
    assert intake.StageChange.from_job_args(*change.job_args()) == change


def test_a_job_queued_before_change_keys_carries_the_same_change() -> None:
    change = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=100)
    old = ("hubspot", "1234", "closedwon", OCCURRED_MS, "hubspot-event:100")
    assert intake.StageChange.from_job_args(*old) == change


def test_each_crm_with_a_receiver_watches_its_kits_handoff_stages() -> None:
    rules = load_rules(ROOT / "kit_rules")
    assert watched_stages(rules) == {
        "hubspot": frozenset({"closedwon"}),
        "salesforce": frozenset({"Closed Won"}),
    }
    assert set(RECEIVERS) == {"hubspot", "salesforce"}
