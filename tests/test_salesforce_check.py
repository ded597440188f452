"""`fullkit salesforce check` against the loopback org: what an admin reads before going live."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bridge.cli import cli
from sandbox.server import RunningSalesforceSandbox, start_salesforce_sandbox
from tests.conftest import ROOT

KIT = """\
kit: sf-onboarding
title: Salesforce onboarding
crm: salesforce
handoff_stage: closedwon
ops:
  target: salesforce_case
  owners: [ops-anna@example.com, ops-ben@example.com]
requirements:
  - id: amount
    check: 'deal.amount > 0'
    message: 'Deal amount must be above zero'
"""


@pytest.fixture
def org() -> Iterator[RunningSalesforceSandbox]:
    running = start_salesforce_sandbox()
    running.sandbox.seed_default_org()  # the mapping's custom fields and the ops users
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "kit_rules"
    shutil.copytree(ROOT / "kit_rules", folder)
    (folder / "kits" / "20-salesforce.yaml").write_text(KIT)
    return folder


def check(org: RunningSalesforceSandbox, rules: Path, tmp_path: Path, token: str = "") -> Result:
    env = {
        "SALESFORCE_INSTANCE_URL": org.url,
        "SALESFORCE_ACCESS_TOKEN": token or org.access_token,
        "FULLKIT_RULES_DIR": str(rules),
        "FULLKIT_HOME": str(tmp_path / "home"),
    }
    return CliRunner().invoke(cli, ["salesforce", "check"], env=env)


def problems(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("problem: ")]


def test_a_ready_org_passes(org: RunningSalesforceSandbox, rules: Path, tmp_path: Path) -> None:
    result = check(org, rules, tmp_path)
    assert result.exit_code == 0, result.output
    assert problems(result) == []
    assert "kit sf-onboarding: ops owners are active Salesforce users" in result.stdout
    assert "Salesforce org: ready for Fullkit" in result.stdout


def test_a_removed_field_is_named(
    org: RunningSalesforceSandbox, rules: Path, tmp_path: Path
) -> None:
    org.sandbox.remove_field("Opportunity", "Fullkit_Ops_Link__c")
    org.sandbox.remove_field("Opportunity", "Plan__c")
    result = check(org, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: Opportunity.Plan__c is missing or hidden from this user (needed for "
        "mapping deal.plan); deploy salesforce-app/ and assign its Fullkit_Integration "
        "permission set",
        "problem: Opportunity.Fullkit_Ops_Link__c is missing or hidden from this user "
        "(needed for the hand-off write-back); deploy salesforce-app/ and assign its "
        "Fullkit_Integration permission set",
    ]
    assert "Salesforce check found 2 problem(s)" in result.stderr


def test_a_read_only_field_is_named(
    org: RunningSalesforceSandbox, rules: Path, tmp_path: Path
) -> None:
    org.sandbox.restrict_field("Opportunity", "Fullkit_Status__c")
    org.sandbox.restrict_field("Case", "Fullkit_Handoff_Id__c")
    result = check(org, rules, tmp_path)
    assert result.exit_code == 1
    grant = (
        "assign the Fullkit_Integration permission set or grant Edit in its field-level security"
    )
    assert problems(result) == [
        "problem: Opportunity.Fullkit_Status__c is not updateable by this user (needed for "
        f"the hand-off write-back); {grant}",
        "problem: Case.Fullkit_Handoff_Id__c is not createable by this user (needed for "
        f"the ops record (Case)); {grant}",
        "problem: Case.Fullkit_Handoff_Id__c is not updateable by this user (needed for "
        f"the ops record (Case)); {grant}",
    ]


def test_a_field_of_the_wrong_type_is_named(
    org: RunningSalesforceSandbox, rules: Path, tmp_path: Path
) -> None:
    org.sandbox.remove_field("Opportunity", "Fullkit_Expected_Kickoff__c")
    org.sandbox.define_field("Opportunity", "Fullkit_Expected_Kickoff__c", "string")
    result = check(org, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: Opportunity.Fullkit_Expected_Kickoff__c has type string, Fullkit needs "
        "date (for the hand-off write-back)"
    ]


def test_an_ops_owner_who_is_no_active_user_is_named(
    org: RunningSalesforceSandbox, rules: Path, tmp_path: Path
) -> None:
    kit = rules / "kits" / "20-salesforce.yaml"
    kit.write_text(kit.read_text().replace("ops-ben@", "ops-nobody@"))
    result = check(org, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: kit sf-onboarding: ops owner ops-nobody@example.com is no active "
        "Salesforce user; add or activate the user in Salesforce or fix the kit's ops.owners"
    ]


def test_bad_credentials_are_one_line(
    org: RunningSalesforceSandbox, rules: Path, tmp_path: Path
) -> None:
    result = check(org, rules, tmp_path, token="00D000000000001!revoked")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "fullkit: Salesforce check failed: Salesforce describe Opportunity: "
        "SALESFORCE_ACCESS_TOKEN expired or revoked"
    ]
    assert "Traceback" not in result.output


def test_a_status_picklist_without_returned_is_named(
    org: RunningSalesforceSandbox, rules: Path, tmp_path: Path
) -> None:
    # Restricted, so Salesforce would refuse every push-back's write.
    org.sandbox.remove_field("Opportunity", "Fullkit_Status__c")
    org.sandbox.define_field(
        "Opportunity", "Fullkit_Status__c", "picklist", picklist=("accepted",), restricted=True
    )
    result = check(org, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: Opportunity.Fullkit_Status__c: its picklist lacks 'returned', "
        "a value Fullkit writes"
    ]
