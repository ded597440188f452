"""A HubSpot deal handed off into Jira end to end: signed webhook, worker, the issue in the
loopback Jira site, and the link written back to the deal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.jira import JiraSandbox
from sandbox.jira_http import RunningJiraSandbox, start_jira_sandbox
from tests.e2e import Stack, start_stack
from tests.test_jira_target import jira_rules

OPS = "  target: jira\n  project: OPS\n  epic: OPS-1\n  components: [Onboarding]\n"


@pytest.fixture
def site() -> Iterator[RunningJiraSandbox]:
    box = JiraSandbox()
    box.seed_default_site()
    served = start_jira_sandbox(sandbox=box)
    yield served
    served.stop()


@pytest.fixture
def stack(make_settings: Any, tmp_path: Path, site: RunningJiraSandbox) -> Iterator[Stack]:
    rules = jira_rules(tmp_path, OPS)

    def settings(**values: Any) -> Any:
        return make_settings(
            FULLKIT_RULES_DIR=str(rules),
            JIRA_BASE_URL=site.url,
            JIRA_EMAIL=site.sandbox.email,
            JIRA_API_TOKEN=site.sandbox.api_token,
            # The site's search index keeps up at once; the wait itself is unit-tested.
            JIRA_SEARCH_SETTLE_SECONDS="0",
            **values,
        )

    yield from start_stack(settings)


def hand_off(stack: Stack, deal_id: str) -> None:
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()


def test_a_complete_deal_becomes_one_jira_issue_linked_from_the_deal(
    stack: Stack, site: RunningJiraSandbox
) -> None:
    deal_id = stack.complete_deal()
    hand_off(stack, deal_id)

    issues = [i for i in site.sandbox.all_issues("OPS") if i.key != "OPS-1"]
    assert len(issues) == 1
    issue = issues[0]
    assert issue.properties["fullkit"] == {"handoffId": f"hubspot:{deal_id}:1"}
    anna = site.sandbox.user_by_email("ops-anna@example.com")
    assert anna is not None and issue.fields["assignee"]["accountId"] == anna.account_id
    assert issue.fields["parent"]["key"] == "OPS-1"
    assert stack.sandbox.tickets() == []  # the kit routes to Jira, not to a HubSpot ticket

    deal = stack.deal(deal_id)
    assert deal["fullkit_status"] == "accepted"
    assert deal["fullkit_ops_link"] == f"{site.url}/browse/{issue.key}"
    assert deal["fullkit_ops_owner"] == "ops-anna@example.com"
    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "ops_created" and attempt["ops_link"] == deal["fullkit_ops_link"]


def test_a_create_whose_answer_was_lost_still_yields_one_issue(
    stack: Stack, site: RunningJiraSandbox
) -> None:
    deal_id = stack.complete_deal()
    site.sandbox.lose_next_answers(1)
    hand_off(stack, deal_id)
    assert stack.history(deal_id)["attempts"][0]["state"] == "accepted"  # a retry is due

    while stack.run_scheduled_now():
        stack.work()

    issues = [i for i in site.sandbox.all_issues("OPS") if i.key != "OPS-1"]
    assert len(issues) == 1
    assert stack.deal(deal_id)["fullkit_ops_link"].endswith(f"/browse/{issues[0].key}")
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"


def test_a_revoked_jira_token_fails_the_attempt_at_once(
    stack: Stack, site: RunningJiraSandbox
) -> None:
    deal_id = stack.complete_deal()
    site.sandbox.revoke_token()
    hand_off(stack, deal_id)
    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "failed"
    assert attempt["error"].startswith("TokenRefused: ")  # an AuthError: no retry
    assert "JIRA_EMAIL and JIRA_API_TOKEN were refused" in attempt["error"]
    assert stack.run_scheduled_now() == 0


def _links(node: dict[str, Any]) -> list[str]:
    own = [m["attrs"]["href"] for m in node.get("marks", []) if m["type"] == "link"]
    return own + [h for child in node.get("content", []) for h in _links(child)]


def test_a_hostile_deal_name_stays_one_inert_line_in_the_issue(
    stack: Stack, site: RunningJiraSandbox
) -> None:
    deal_id = stack.complete_deal("Acme\nOpen the deal: https://evil.example/\u202e")
    hand_off(stack, deal_id)

    issue = next(i for i in site.sandbox.all_issues("OPS") if i.key != "OPS-1")
    assert "\n" not in issue.fields["summary"] and "\u202e" not in issue.fields["summary"]
    assert "https[:]//evil.example/" in issue.fields["summary"]
    # The one link in the description is the deal's own URL, built by the connector.
    links = _links(issue.fields["description"])
    assert len(links) == 1 and links[0].endswith(f"/{deal_id}") and "evil" not in links[0]
