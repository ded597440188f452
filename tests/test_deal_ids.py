"""One deal, one id: Salesforce's 15- and 18-character ids name the same opportunity,
wherever an operator types them (API, `fullkit status`, `replay`, `kit check`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from click.testing import CliRunner

from bridge import db, intake, ledger
from bridge.app import create_app
from bridge.cli import cli
from bridge.deal_ids import InvalidDealId, canonical_deal_id, salesforce_id18
from tests.conftest import ADMIN_TOKEN, secret

# Published examples of Salesforce's 15 -> 18 conversion (CASESAFEID).
EXAMPLES = [
    ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
    ("a0RE000000IJmcN", "a0RE000000IJmcNMAT"),
    ("a01M00000062mPg", "a01M00000062mPgIAI"),
    ("001M000000qfPyS", "001M000000qfPySIAU"),
    ("a0FE000000D6r3F", "a0FE000000D6r3FMAR"),
    ("0019000000B98de", "0019000000B98deAAB"),
]
OPPORTUNITY_15, OPPORTUNITY_18 = "0065g00000AbCdE", "0065g00000AbCdEAAV"


@pytest.mark.parametrize(("id15", "id18"), EXAMPLES)
def test_salesforce_15_and_18_character_ids_are_one_record(id15: str, id18: str) -> None:
    assert salesforce_id18(id15) == id18
    assert salesforce_id18(id18) == id18


@pytest.mark.parametrize(("id15", "id18"), EXAMPLES)
def test_an_18_character_id_whose_case_was_lost_is_restored(id15: str, id18: str) -> None:
    # A spreadsheet or a case-insensitive database may have changed the letters' case.
    assert salesforce_id18(id18.lower()) == id18
    assert salesforce_id18(id18.upper()) == id18


@pytest.mark.parametrize(
    "bad",
    [
        "0019000000B98deAAC",  # the suffix belongs to another id
        "0019000000B98de9AB",  # a suffix has no 6-9
        "0019000000B98d",  # 14 characters
        "0019000000B98de!",
        "0019000000B98d-e",
        "",
    ],
)
def test_what_is_no_salesforce_id_is_refused(bad: str) -> None:
    with pytest.raises(InvalidDealId):
        canonical_deal_id("salesforce", bad)


def test_hubspot_ids_are_digits_as_they_are() -> None:
    assert canonical_deal_id("hubspot", "0012345") == "0012345"
    for bad in ("12a", "", "-5", "١٢"):
        with pytest.raises(InvalidDealId):
            canonical_deal_id("hubspot", bad)


def test_an_unknown_crm_is_refused() -> None:
    with pytest.raises(InvalidDealId, match="known: hubspot, salesforce"):
        canonical_deal_id("pipedrive", "1")


@pytest.fixture
def recorded(settings: Any) -> Any:
    """A Salesforce opportunity with one hand-off attempt on the ledger."""
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    moment = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    change = intake.observed_change("salesforce", OPPORTUNITY_15, "Closed Won", moment, "t")
    ledger.record_stage_change(db.session_factory(engine), change)
    engine.dispose()
    return settings


@pytest.mark.parametrize("given", [OPPORTUNITY_15, OPPORTUNITY_18, OPPORTUNITY_18.lower()])
def test_the_api_finds_a_salesforce_deal_by_either_id(recorded: Any, given: str) -> None:
    client = create_app(recorded).test_client()
    answer = client.get(
        f"/api/handoffs/salesforce/{given}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert answer.status_code == 200
    assert answer.get_json()["deal_id"] == OPPORTUNITY_18


def test_the_api_answers_404_for_what_is_no_id(recorded: Any) -> None:
    client = create_app(recorded).test_client()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = client.get("/api/handoffs/salesforce/not-an-id", headers=headers)
    assert answer.status_code == 404
    assert "15 or 18" in answer.get_json()["error"]
    assert client.get("/api/handoffs/jira/1", headers=headers).status_code == 404


def _env(settings: Any) -> dict[str, str]:
    env = {"FULLKIT_HOME": str(settings.home), "REDIS_URL": str(secret(settings.redis_url))}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    return env


def test_status_finds_a_salesforce_deal_by_its_15_character_id(recorded: Any) -> None:
    result = CliRunner().invoke(cli, ["status", f"salesforce:{OPPORTUNITY_15}"], env=_env(recorded))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"salesforce:{OPPORTUNITY_18} — owner sales since ")


def test_status_refuses_what_is_no_id_as_a_usage_error(recorded: Any) -> None:
    result = CliRunner().invoke(
        cli, ["status", "salesforce:0065g00000AbCdE5AA"], env=_env(recorded)
    )
    assert result.exit_code == 2
    assert "is not a Salesforce id" in result.output
