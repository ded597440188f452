"""The `jira` ops target against the loopback Jira Cloud site over real HTTP: the issue ops
gets, exactly one per hand-off across lost answers, and what it does when Jira says no."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.rules import RulesError, load_rules
from bridge.settings import Settings
from connectors import load_all
from connectors.jira import JiraTarget, handoff_label
from connectors.jira_settings import JiraSettings
from kernel import api_calls
from kernel.connector import OpsRequest
from kernel.errors import AuthError, NotConfigured, PartialFailure, PermanentError, RetryableError
from kernel.packet import Packet
from kernel.rate_budget import RateBudgets
from kernel.settings import SettingsError, load
from sandbox.jira import JiraSandbox
from sandbox.jira_http import RunningJiraSandbox, start_jira_sandbox
from tests.conftest import ROOT, Backend

DEAL_URL = "https://app.hubspot.example/contacts/1/record/0-3/101"
OPTIONS = {"project": "OPS"}


@pytest.fixture(autouse=True)
def _no_jira_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JIRA_BASE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_SEARCH_SETTLE_SECONDS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site() -> Iterator[RunningJiraSandbox]:
    box = JiraSandbox()
    box.seed_default_site()
    served = start_jira_sandbox(sandbox=box)
    yield served
    served.stop()


def target(site: RunningJiraSandbox, **values: Any) -> JiraTarget:
    settings = Settings(
        JIRA_BASE_URL=site.url,
        JIRA_EMAIL=site.sandbox.email,
        JIRA_API_TOKEN=site.sandbox.api_token,
        **values,
    )
    return JiraTarget(settings)


def request(
    deal_id: str = "101",
    owner: str | None = "ops-anna@example.com",
    summary: str = "Kit: New customer onboarding",
    **options: Any,
) -> OpsRequest:
    return OpsRequest(
        handoff_id=f"hubspot:{deal_id}:1",
        crm="hubspot",
        deal_id=deal_id,
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options={**OPTIONS, **options},
        owner_email=owner,
        subject="New customer onboarding: Acme",
        summary=summary,
        expected_kickoff=dt.date(2027, 1, 15),
        packet=Packet(crm="hubspot", deal_id=deal_id, url=DEAL_URL),
    )


def texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "text" else []
        return own + [t for child in node.get("content", []) for t in texts(child)]
    return []


SUMMARY = "\n".join(
    [
        "Kit: New customer onboarding (new-customer) — complete, accepted by ops.",
        "Deal: Acme (hubspot 101)",
        f"Open the deal: {DEAL_URL}",
        "Ops owner: ops-anna@example.com",
        "",
        "Checked requirements:",
        "  [x] amount: Deal amount must be above zero",
        "",
        "Contacts:",
        "  - email: bill@acme.example, note: see https[:]//evil.example/",
    ]
)


def test_acceptance_opens_one_assigned_issue_holding_the_whole_kit(
    site: RunningJiraSandbox,
) -> None:
    box = site.sandbox
    made = target(site).create(
        [
            request(
                summary=SUMMARY,
                issue_type="Task",
                epic="OPS-1",
                components=["Onboarding"],
                labels=["onboarding"],
                priority="High",
                due_date=True,
            )
        ]
    )

    result = made["hubspot:101:1"]
    issue = box.issue(result.ref)
    assert result.ref == issue.key == "OPS-2"
    assert result.link == f"{site.url}/browse/OPS-2"
    assert result.owner == "ops-anna@example.com"
    fields = issue.fields
    assert fields["issuetype"]["name"] == "Task"
    assert fields["summary"] == "New customer onboarding: Acme"
    assert fields["assignee"]["accountId"] == box.user_by_email("ops-anna@example.com").account_id
    assert fields["parent"]["key"] == "OPS-1"
    assert [c["name"] for c in fields["components"]] == ["Onboarding"]
    assert fields["priority"]["name"] == "High"
    assert fields["duedate"] == "2027-01-15"
    assert fields["labels"] == ["onboarding", "fullkit-hubspot-101-1"]
    assert issue.properties == {"fullkit": {"handoffId": "hubspot:101:1"}}
    # The whole kit, as ADF: bullet lists for its items; the deal's URL the only link.
    document = fields["description"]
    assert "email: bill@acme.example, note: see https[:]//evil.example/" in texts(document)
    assert [b["type"] for b in document["content"]].count("bulletList") == 2
    links = [
        mark["attrs"]["href"]
        for text in _text_nodes(document)
        for mark in text.get("marks", [])
        if mark["type"] == "link"
    ]
    assert links == [DEAL_URL]


def _text_nodes(node: Any) -> list[dict[str, Any]]:
    own = [node] if node.get("type") == "text" else []
    return own + [t for child in node.get("content", []) for t in _text_nodes(child)]


def test_a_kit_without_owners_gets_an_unassigned_issue(site: RunningJiraSandbox) -> None:
    made = target(site).create([request(owner=None)])
    assert made["hubspot:101:1"].owner is None
    assert "assignee" not in site.sandbox.issue(made["hubspot:101:1"].ref).fields


def test_a_lost_answer_is_found_by_the_retry_and_one_issue_exists(
    site: RunningJiraSandbox,
) -> None:
    box = site.sandbox
    jira = target(site, JIRA_SEARCH_SETTLE_SECONDS="0")
    box.lose_next_answers(1)  # Jira creates it; the worker never hears so
    with pytest.raises(PartialFailure) as raised:
        jira.create([request()])
    assert isinstance(raised.value.failed["hubspot:101:1"], RetryableError)

    again = jira.create([request()], may_exist=True)

    assert [i.key for i in box.all_issues("OPS")] == ["OPS-1", "OPS-2"]
    assert again["hubspot:101:1"].ref == "OPS-2"
    assert again["hubspot:101:1"].owner == "ops-anna@example.com"


def test_a_retry_waits_for_the_search_index_rather_than_create_a_second_issue(
    site: RunningJiraSandbox,
) -> None:
    box = site.sandbox
    box.search_lag_seconds = 3600.0  # the index has not seen the create yet
    jira = target(site)
    box.lose_next_answers(1)
    with pytest.raises(PartialFailure):
        jira.create([request()])

    with pytest.raises(PartialFailure) as raised:
        jira.create([request()], may_exist=True)
    error = raised.value.failed["hubspot:101:1"]
    assert isinstance(error, RetryableError)
    assert error.retry_after is not None and 25 <= error.retry_after <= 30
    assert len(box.all_issues("OPS")) == 2  # the epic and the one issue

    box.index_now()
    again = jira.create([request()], may_exist=True)
    assert again["hubspot:101:1"].ref == "OPS-2"
    assert len(box.all_issues("OPS")) == 2


def test_a_retry_after_a_crash_before_sending_creates_the_issue(
    site: RunningJiraSandbox,
) -> None:
    made = target(site).create([request()], may_exist=True)
    assert made["hubspot:101:1"].ref == "OPS-2"
    assert len(site.sandbox.all_issues("OPS")) == 2


def test_a_create_a_spent_budget_held_back_is_retried_without_waiting_for_the_index(
    site: RunningJiraSandbox, embedded_redis_url: str
) -> None:
    now = [1_000_000.0]
    budgets = RateBudgets(redis.Redis.from_url(embedded_redis_url), clock=lambda: now[0])
    jira = target(site)  # the default settle time: a wrong wait would show as a Retry-After
    jira.rate_budgets = budgets
    built = jira._issue

    def then_spend_the_budget(request: OpsRequest) -> Any:
        made = built(request)
        budget = jira.api.budget
        assert budget is not None
        while budget.try_take()[0] is not None:  # other workers took every slot just now
            pass
        budget.max_wait = 0.0
        return made

    jira._issue = then_spend_the_budget  # type: ignore[method-assign]
    with pytest.raises(PartialFailure) as raised:
        jira.create([request()])
    assert isinstance(raised.value.failed["hubspot:101:1"], RetryableError)
    assert site.sandbox.calls("POST", "/rest/api/3/issue") == []  # nothing was sent

    jira._issue = built  # type: ignore[method-assign]
    now[0] += 2  # the window has passed
    made = jira.create([request()], may_exist=True)

    assert made["hubspot:101:1"].ref == "OPS-2"
    assert len(site.sandbox.calls(path_prefix="/rest/api/3/search")) == 1  # searched once
    assert len(site.sandbox.all_issues("OPS")) == 2  # the epic and the one issue


def test_a_label_copied_onto_another_issue_is_not_taken_for_the_handoffs(
    site: RunningJiraSandbox,
) -> None:
    box = site.sandbox
    copy = box.add_issue("OPS", "Task", "Someone's copy")
    copy.fields["labels"] = [handoff_label("hubspot:101:1")]
    made = target(site).create([request()], may_exist=True)
    assert made["hubspot:101:1"].ref == "OPS-3"


def test_a_revoked_token_stops_at_once(site: RunningJiraSandbox) -> None:
    jira = target(site)
    token = site.sandbox.api_token
    site.sandbox.revoke_token()
    with pytest.raises(AuthError) as raised:
        jira.create([request()])
    assert "JIRA_API_TOKEN" in str(raised.value) and token not in str(raised.value)
    assert len(site.sandbox.all_issues("OPS")) == 1


def test_no_permission_in_the_project_stops_at_once(site: RunningJiraSandbox) -> None:
    site.sandbox.fail_next(1, 403, "/rest/api/3/issue")
    with pytest.raises(PartialFailure) as raised:
        target(site).create([request()])
    refused = raised.value.failed["hubspot:101:1"]
    assert isinstance(refused, AuthError) and "permission to create issues" in str(refused)


def test_a_project_that_refuses_keeps_the_issues_made_for_the_others_of_the_batch(
    site: RunningJiraSandbox,
) -> None:
    """Two kits, two projects: the account may create in OPS but not in the other. The
    issue made in OPS is answered (its hand-off goes on) and only the refused one stops."""
    jira = target(site)
    opened = jira._open

    def then_refuse(request: OpsRequest, may_exist: bool) -> Any:
        made = opened(request, may_exist)
        site.sandbox.fail_next(1, 403, "/rest/api/3/issue")
        return made

    jira._open = then_refuse  # type: ignore[method-assign]
    with pytest.raises(PartialFailure) as raised:
        jira.create([request("101"), request("102")])
    assert raised.value.done["hubspot:101:1"].ref == "OPS-2"
    assert isinstance(raised.value.failed["hubspot:102:1"], AuthError)
    assert len(site.sandbox.all_issues("OPS")) == 2


def test_a_429_carries_retry_after_pauses_the_budget_and_the_paced_retry_succeeds(
    site: RunningJiraSandbox, backend: Backend
) -> None:
    now = [1_000_000.0]
    connection = redis.Redis.from_url(backend.redis_url)
    budgets = RateBudgets(connection, clock=lambda: now[0], max_wait=0.2)
    before = api_calls.counts(connection)
    jira = target(site)
    jira.rate_budgets = budgets
    site.sandbox.fail_next(1, 429, "/rest/api/3/issue", retry_after=7)
    with pytest.raises(PartialFailure) as raised:
        jira.create([request("101"), request("102")])
    first, second = raised.value.failed["hubspot:101:1"], raised.value.failed["hubspot:102:1"]
    assert isinstance(first, RetryableError) and first.retry_after == 7.0
    assert second is first  # the rest of the batch waits instead of spending calls
    calls = len(site.sandbox.calls())

    with pytest.raises(PartialFailure) as held:
        jira.create([request("101")], may_exist=True)
    assert isinstance(held.value.failed["hubspot:101:1"], RetryableError)
    assert len(site.sandbox.calls()) == calls  # the pause held every call back

    now[0] += 7.5
    made = jira.create([request("101"), request("102")], may_exist=True)
    assert [r.ref for r in made.values()] == ["OPS-2", "OPS-3"]
    # /metrics counts the refused call and the ones that worked, under jira.
    after = api_calls.counts(connection)
    assert after.get(("jira", "429"), 0) - before.get(("jira", "429"), 0) == 1
    assert after.get(("jira", "ok"), 0) - before.get(("jira", "ok"), 0) >= 2


def test_server_errors_are_retryable(site: RunningJiraSandbox) -> None:
    site.sandbox.fail_next(1, 503, "/rest/api/3/user/search")
    with pytest.raises(PartialFailure) as raised:
        target(site).create([request()])
    assert isinstance(raised.value.failed["hubspot:101:1"], RetryableError)


def test_an_unknown_ops_owner_fails_its_issue_alone(site: RunningJiraSandbox) -> None:
    with pytest.raises(PartialFailure) as raised:
        target(site).create([request("101"), request("102", owner="nobody@example.com")])
    error = raised.value.failed["hubspot:102:1"]
    assert isinstance(error, PermanentError) and "nobody@example.com" in str(error)
    assert list(raised.value.done) == ["hubspot:101:1"]


def test_an_owner_who_hides_their_email_is_still_found(site: RunningJiraSandbox) -> None:
    user = site.sandbox.add_user("ops-cleo@example.com", "Cleo Ops", email_hidden=True)
    made = target(site).create([request(owner="ops-cleo@example.com")])
    assert made["hubspot:101:1"].owner == user.account_id


def test_owners_are_looked_up_once(site: RunningJiraSandbox) -> None:
    jira = target(site)
    jira.create([request("101"), request("102")])
    assert len(site.sandbox.calls("GET", "/rest/api/3/user/search")) == 1


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"components": ["Nope"]}, "Component name 'Nope' is not valid"),
        ({"project": "NOPE"}, "Specify a valid project ID or key"),
        ({"issue_type": "Story"}, "Specify a valid issue type"),
        ({"epic": "OPS-99"}, "Could not find issue by id or key."),
    ],
)
def test_what_jira_refuses_fails_permanently_with_its_reason(
    site: RunningJiraSandbox, options: dict[str, Any], says: str
) -> None:
    with pytest.raises(PartialFailure) as raised:
        target(site).create([request(**options)])
    error = raised.value.failed["hubspot:101:1"]
    assert isinstance(error, PermanentError) and says in str(error)


def test_a_long_deal_is_cut_to_fit_jiras_description(site: RunningJiraSandbox) -> None:
    lines = ["Contacts:"] + [f"  - email: person{n}@acme.example, role: x" for n in range(2000)]
    made = target(site).create([request(summary="\n".join(lines))])
    document = site.sandbox.issue(made["hubspot:101:1"].ref).fields["description"]
    assert "did not fit in a Jira description" in texts(document)[-1]


# --- settings --------------------------------------------------------------------------


def test_without_settings_the_target_is_disabled_and_says_so() -> None:
    assert load(JiraSettings).unset() == [
        "JIRA_BASE_URL is not set: the jira ops target is disabled "
        "(kits naming it fail their hand-offs)"
    ]
    with pytest.raises(NotConfigured):
        JiraTarget(Settings()).create([request()])


def test_a_base_url_without_a_token_is_one_clear_line() -> None:
    with pytest.raises(SettingsError) as raised:
        load(JiraSettings, {"JIRA_BASE_URL": "https://acme.atlassian.net"})
    assert str(raised.value) == (
        "invalid setting JIRA_API_TOKEN: JIRA_BASE_URL needs JIRA_EMAIL and JIRA_API_TOKEN"
    )


# --- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "project: required"),
        ({"project": "ops"}, "project: must be a Jira project key"),
        ({"project": "OPS", "colour": "red"}, "colour: unknown key for target jira"),
        ({"project": "OPS", "issue_type": 3}, "issue_type: must be a non-empty string"),
        ({"project": "OPS", "epic": "12"}, "epic: must be an issue key"),
        ({"project": "OPS", "components": "Onboarding"}, "components: must be a non-empty list"),
        ({"project": "OPS", "labels": ["new customer"]}, "labels: must be labels without"),
        ({"project": "OPS", "due_date": "yes"}, "due_date: must be true or false"),
    ],
)
def test_options_are_validated(options: dict[str, Any], problem: str) -> None:
    problems = JiraTarget.validate_options(options)
    assert any(p.startswith(problem) for p in problems), problems


def test_good_options_pass() -> None:
    options = {"project": "OPS", "issue_type": "Task", "epic": "OPS-1",
               "components": ["Onboarding"], "labels": ["onboarding"], "priority": "High",
               "due_date": True}  # fmt: skip
    assert JiraTarget.validate_options(options) == []


def jira_rules(tmp_path: Path, ops: str) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    kit = rules / "kits" / "10-new-customer.yaml"
    shipped = '  target: hubspot_ticket\n  pipeline: "0"\n  stage: "1"\n'
    assert shipped in kit.read_text()
    kit.write_text(kit.read_text().replace(shipped, ops))
    return rules


def test_a_kit_with_bad_jira_options_is_refused_with_file_and_line(tmp_path: Path) -> None:
    rules = jira_rules(tmp_path, "  target: jira\n  epic: twelve\n")
    with pytest.raises(RulesError) as raised:
        load_rules(rules, load_all())
    text = str(raised.value)
    assert "10-new-customer.yaml" in text
    assert "project: required" in text and "epic: must be an issue key" in text


def test_a_kit_routed_to_jira_loads(tmp_path: Path) -> None:
    rules = load_rules(jira_rules(tmp_path, "  target: jira\n  project: OPS\n"), load_all())
    assert rules.kits[0].ops.target == "jira"
    assert rules.kits[0].ops.options == {"project": "OPS"}


def test_kit_validate_says_when_a_kits_jira_target_is_switched_off(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bridge.cli import cli

    rules = str(jira_rules(tmp_path, "  target: jira\n  project: OPS\n"))
    off = CliRunner().invoke(cli, ["kit", "validate"], env={"FULLKIT_RULES_DIR": rules})
    assert off.exit_code == 0
    assert (
        "note: kit new-customer: ops target jira is disabled here: JIRA_BASE_URL is not set: "
        "the jira ops target is disabled (kits naming it fail their hand-offs)"
    ) in off.output.splitlines()

    env = {"FULLKIT_RULES_DIR": rules, "JIRA_BASE_URL": "https://acme.atlassian.net",
           "JIRA_EMAIL": "bot@acme.example", "JIRA_API_TOKEN": "t"}  # fmt: skip
    on = CliRunner().invoke(cli, ["kit", "validate"], env=env)
    assert on.exit_code == 0 and "jira" not in on.output
