"""Hand-offs end to end when HubSpot answers as it does at scale: a locked or migrating
portal, a spent daily limit, and kits that check the files attached to a deal."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from bridge import ledger
from bridge.cli import cli
from tests.conftest import ROOT
from tests.e2e import ORDER_FORM, Stack, start_stack

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def hand_off(stack: Stack, *deal_ids: str) -> None:
    for deal_id in deal_ids:
        stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()


def settle(stack: Stack) -> None:
    """Let every scheduled retry run as if its time had come."""
    while stack.run_scheduled_now():
        stack.work()


def test_locked_and_migrating_answers_are_retried_into_one_ticket(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.fail_next(1, 423, "/crm/v3/objects/deals")
    stack.sandbox.fail_next(1, 477, "/crm/v3/objects/tickets", retry_after=30)

    hand_off(stack, deal_id)
    settle(stack)

    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    assert len(stack.sandbox.tickets()) == 1
    refusals = [c.status for c in stack.sandbox.calls() if c.status in (423, 477)]
    assert sorted(refusals) == [423, 477]


def status_of(stack: Stack, deal_id: str) -> str:
    env = {"FULLKIT_HOME": str(stack.settings.home)}
    if stack.settings.database_url:
        env["DATABASE_URL"] = stack.settings.database_url.get_secret_value()
    result = CliRunner().invoke(cli, ["status", f"hubspot:{deal_id}"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_spent_daily_limit_waits_for_the_reset_however_long_the_window(
    make_settings: Any,
) -> None:
    def short_window(**values: Any) -> Any:
        return make_settings(FULLKIT_RETRY_WINDOW_SECONDS="0.001", **values)

    for stack in start_stack(short_window, time_zone="Europe/Berlin"):
        deal_id = stack.complete_deal()
        stack.sandbox.exhaust_daily_limit(3, "/crm/v3/objects/deals")

        hand_off(stack, deal_id)

        output = status_of(stack, deal_id)
        stated = re.search(
            r"\n    waiting for HubSpot's daily API limit to reset at "
            r"(\d{4}-\d\d-\d\d \d\d:\d\d) \(Europe/Berlin\)\n",
            output,
        )
        assert stated is not None, output
        reset = dt.datetime.strptime(stated[1], "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN)
        with stack.runtime.sessions() as session:
            attempt = ledger.latest_attempt(session, "hubspot", deal_id)
            assert attempt is not None and attempt.state == "evaluating"
            assert attempt.next_run_at is not None
            # Not a backoff of seconds: the next try comes after the stated reset.
            assert attempt.next_run_at >= reset
        assert reset.hour == 0 or reset - ledger.utcnow() <= dt.timedelta(minutes=5)

        settle(stack)  # two more DAILY answers, each far past the 1 ms window

        attempt_now = stack.history(deal_id)["attempts"][0]
        assert attempt_now["state"] == "ops_created" and attempt_now["error"] is None
        assert len(stack.sandbox.tickets()) == 1


def test_a_kit_requiring_a_signed_order_form_reads_the_deals_attachments(
    make_settings: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    kit = rules / "kits" / "10-new-customer.yaml"
    kit.write_text(kit.read_text() + ORDER_FORM)
    for stack in start_stack(lambda **kw: make_settings(FULLKIT_RULES_DIR=str(rules), **kw)):
        signed = stack.complete_deal("Signed Co")
        stack.sandbox.attach_file(signed, "Signed order form - Signed Co", "pdf")
        unsigned = stack.complete_deal("Unsigned Co")
        stack.sandbox.attach_file(unsigned, "Pricing proposal", "pdf", via="emails")
        stack.sandbox.attach_file(unsigned, "Order form draft", "docx")

        hand_off(stack, signed, unsigned)

        assert stack.history(signed)["attempts"][0]["state"] == "ops_created"
        returned = stack.history(unsigned)["attempts"][0]
        assert returned["state"] == "returned"
        assert [finding["id"] for finding in returned["findings"]] == ["order-form"]
        (task,) = stack.sandbox.tasks_for_deal(unsigned)
        assert "Attach the signed order form (PDF)" in task["properties"]["hs_task_body"]


def engagement_reads(stack: Stack) -> list[str]:
    """The association reads from deals to notes or emails the sandbox answered."""
    return [
        call.path
        for kind in ("notes", "emails")
        for call in stack.sandbox.calls("POST", f"/crm/v4/associations/deals/{kind}/")
    ]


def test_attachments_are_read_only_for_deals_whose_kit_needs_them(stack: Stack) -> None:
    # The shipped kit asks for a signed order form from enterprise deals only.
    pro = stack.complete_deal("Pro Co")
    stack.sandbox.attach_file(pro, "Pricing proposal", "pdf")

    hand_off(stack, pro)

    assert stack.history(pro)["attempts"][0]["state"] == "ops_created"
    assert engagement_reads(stack) == []

    enterprise = stack.complete_deal("Big Co", plan_tier="enterprise", sso_provider="okta")
    stack.sandbox.attach_file(enterprise, "Signed order form - Big Co", "pdf")

    hand_off(stack, enterprise)

    assert stack.history(enterprise)["attempts"][0]["state"] == "ops_created"
    assert len(engagement_reads(stack)) == 2  # notes and emails, once each
