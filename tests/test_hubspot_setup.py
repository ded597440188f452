"""`fullkit hubspot setup` names, before the first real deal fails on it, every scope the
token lacks, every kit ticket pipeline or stage the portal lacks, and every unknown owner."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bridge.cli import cli
from connectors.hubspot_app import required_scopes
from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox
from tests.conftest import ROOT

APP_SCOPES = frozenset(required_scopes())


@pytest.fixture
def served() -> Iterator[RunningSandbox]:
    box = HubSpotSandbox(rate_limit=None)
    box.seed_default_portal()  # ops-anna and ops-ben are HubSpot owners
    with start_sandbox(sandbox=box) as running:
        yield running


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "kit_rules"
    shutil.copytree(ROOT / "kit_rules", folder)
    return folder


def edit_kit(rules: Path, old: str, new: str) -> None:
    kit = rules / "kits" / "10-new-customer.yaml"
    text = kit.read_text()
    assert old in text
    kit.write_text(text.replace(old, new))


def setup(served: RunningSandbox, rules: Path, tmp_path: Path) -> Result:
    env = {
        "HUBSPOT_ACCESS_TOKEN": served.access_token,
        "HUBSPOT_API_BASE": served.url,
        "FULLKIT_RULES_DIR": str(rules),
        "FULLKIT_HOME": str(tmp_path / "home"),
    }
    return CliRunner().invoke(cli, ["hubspot", "setup"], env=env)


def problems(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("problem: ")]


def test_all_good_exits_0_and_a_second_run_changes_nothing(
    served: RunningSandbox, rules: Path, tmp_path: Path
) -> None:
    first = setup(served, rules, tmp_path)
    assert first.exit_code == 0, first.output
    assert "token scopes: all 14 required scopes granted" in first.stdout
    assert "kit new-customer: ticket pipeline '0' (Support Pipeline), stage '1' (New) found" in (
        first.stdout
    )
    assert "kit new-customer: ops owners are HubSpot owners" in first.stdout
    served.sandbox.reset_calls()
    second = setup(served, rules, tmp_path)
    assert second.exit_code == 0
    writes = [c for c in served.sandbox.calls() if c.method != "GET"]
    assert [(c.method, c.path) for c in writes] == [
        ("POST", "/oauth/v2/private-apps/get/access-token-info")  # a read, of the token
    ]


def test_each_missing_scope_is_named(served: RunningSandbox, rules: Path, tmp_path: Path) -> None:
    box = served.sandbox
    box.set_scopes(box.access_token, APP_SCOPES - {"crm.objects.contacts.write", "tickets"})
    result = setup(served, rules, tmp_path)
    assert result.exit_code == 1
    found = problems(result)
    assert any("token lacks scope crm.objects.contacts.write" in line for line in found)
    assert any("token lacks scope tickets" in line for line in found)
    # What the token may do was still done: the deal properties exist.
    assert "fullkit_status" in box.properties["deals"]
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == "fullkit: HubSpot setup found 4 problem(s)"


def test_a_kit_naming_a_missing_ticket_pipeline_lists_the_valid_ones(
    served: RunningSandbox, rules: Path, tmp_path: Path
) -> None:
    edit_kit(rules, 'pipeline: "0"', 'pipeline: "7"')
    result = setup(served, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: kit new-customer: ticket pipeline '7' does not exist in HubSpot; "
        "valid pipelines: 0 (Support Pipeline)"
    ]


def test_a_kit_naming_a_missing_stage_lists_the_pipelines_stages(
    served: RunningSandbox, rules: Path, tmp_path: Path
) -> None:
    edit_kit(rules, 'stage: "1"', 'stage: "9"')
    result = setup(served, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: kit new-customer: stage '9' is not in ticket pipeline '0' (Support Pipeline); "
        "valid stages: 1 (New), 2 (Waiting on contact), 3 (Waiting on us), 4 (Closed)"
    ]


def test_an_ops_owner_who_is_no_hubspot_owner_is_named(
    served: RunningSandbox, rules: Path, tmp_path: Path
) -> None:
    edit_kit(rules, "ops-ben@example.com", "ops-nobody@example.com")
    result = setup(served, rules, tmp_path)
    assert result.exit_code == 1
    assert problems(result) == [
        "problem: kit new-customer: ops owner ops-nobody@example.com is not a HubSpot owner "
        "in this portal; add the user in HubSpot or fix the kit's ops.owners"
    ]


def test_a_refused_token_is_one_line(served: RunningSandbox, rules: Path, tmp_path: Path) -> None:
    env: dict[str, Any] = {
        "HUBSPOT_ACCESS_TOKEN": "pat-na1-revoked",
        "HUBSPOT_API_BASE": served.url,
        "FULLKIT_RULES_DIR": str(rules),
        "FULLKIT_HOME": str(tmp_path / "home"),
    }
    result = CliRunner().invoke(cli, ["hubspot", "setup"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "fullkit: HubSpot setup failed: HubSpot read the token's scopes: "
        "the access token was refused (HTTP 401)"
    ]
    assert "pat-na1-revoked" not in result.output


def test_a_token_hubspot_will_not_describe_still_gets_the_other_checks(
    served: RunningSandbox, rules: Path, tmp_path: Path
) -> None:
    served.sandbox.fail_next(1, status=404, path_prefix="/oauth/v2/private-apps/")
    result = setup(served, rules, tmp_path)
    assert result.exit_code == 0, result.output
    assert "token scopes: HubSpot does not reveal them for this token" in result.stdout
    assert "kit new-customer: ops owners are HubSpot owners" in result.stdout


def test_a_hubspot_outage_mid_setup_keeps_the_report_and_names_what_was_not_checked(
    served: RunningSandbox, rules: Path, tmp_path: Path
) -> None:
    served.sandbox.fail_next(10, status=503, path_prefix="/crm/v3/pipelines/tickets")
    result = setup(served, rules, tmp_path)
    assert result.exit_code == 1
    assert "deals: property fullkit_status (enumeration) created" in result.stdout
    assert [p for p in problems(result) if "ticket pipelines not checked" in p]
    assert "kit new-customer: ops owners are HubSpot owners" in result.stdout
    assert "Traceback" not in result.output
