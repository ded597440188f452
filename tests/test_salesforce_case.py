"""The `salesforce_case` ops target against the loopback org, and the kits it may serve."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.rules import RulesError, load_rules
from bridge.settings import Settings
from connectors import load_all
from connectors.salesforce_case import SalesforceCaseTarget
from kernel.connector import OpsRequest
from kernel.errors import PartialFailure, PermanentError
from kernel.packet import Packet
from sandbox.server import RunningSalesforceSandbox, start_salesforce_sandbox

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def org() -> Iterator[RunningSalesforceSandbox]:
    served = start_salesforce_sandbox()
    served.sandbox.seed_default_org()
    yield served
    served.stop()


def target(org: RunningSalesforceSandbox, **values: Any) -> SalesforceCaseTarget:
    settings = Settings(
        SALESFORCE_INSTANCE_URL=org.url, SALESFORCE_ACCESS_TOKEN=org.access_token, **values
    )
    return SalesforceCaseTarget(settings)


def won_deal(org: RunningSalesforceSandbox, n: int = 1) -> tuple[str, str]:
    deal_id = org.sandbox.create_opportunity(
        {"Name": f"Deal {n}", "StageName": "Closed Won", "Amount": 1000},
        account={"Name": f"Acme {n}"},
    )
    return deal_id, str(org.sandbox.get("Opportunity", deal_id)["AccountId"])


def request(
    deal_id: str, account_id: str | None, owner: str | None = "ops-anna@example.com", **options: Any
) -> OpsRequest:
    return OpsRequest(
        handoff_id=f"salesforce:{deal_id}:1",
        crm="salesforce",
        deal_id=deal_id,
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options=options,
        owner_email=owner,
        subject="Onboard Acme\nhttps://evil.example/",
        summary="Kit complete.\nPlan: pro",
        expected_kickoff=dt.date(2026, 12, 9),
        packet=Packet(crm="salesforce", deal_id=deal_id, company_ref=account_id),
    )


def test_acceptance_opens_one_case_owned_by_the_next_ops_owner(
    org: RunningSalesforceSandbox,
) -> None:
    deal_id, account_id = won_deal(org)
    made = target(org).create([request(deal_id, account_id)])

    case = org.sandbox.get("Case", made[f"salesforce:{deal_id}:1"].ref)
    assert case["Fullkit_Handoff_Id__c"] == f"salesforce:{deal_id}:1"
    assert case["Fullkit_Opportunity__c"] == deal_id
    assert case["AccountId"] == account_id
    assert case["OwnerId"] == org.sandbox.user_by_email("ops-anna@example.com")
    # The subject stays one line whatever it holds (CRM values in it are inert already).
    assert case["Subject"] == "Onboard Acme https://evil.example/"
    assert made[f"salesforce:{deal_id}:1"].link.endswith(f"/lightning/r/Case/{case['Id']}/view")


def test_a_retry_upserts_the_same_case(org: RunningSalesforceSandbox) -> None:
    deal_id, account_id = won_deal(org)
    first = target(org).create([request(deal_id, account_id)])
    again = target(org).create([request(deal_id, account_id)])  # another worker, after a crash

    assert first == again
    assert len(org.sandbox.all("Case")) == 1


def test_many_cases_cost_one_owner_query_and_one_upsert(org: RunningSalesforceSandbox) -> None:
    deals = [won_deal(org, n) for n in range(5)]
    org.sandbox.reset_calls()
    made = target(org).create([request(d, a) for d, a in deals])
    assert len(made) == 5
    assert len(org.sandbox.calls()) == 2


def test_an_unknown_ops_owner_fails_its_case_alone(org: RunningSalesforceSandbox) -> None:
    (good, good_account), (bad, bad_account) = won_deal(org, 1), won_deal(org, 2)
    with pytest.raises(PartialFailure) as raised:
        target(org).create(
            [request(good, good_account), request(bad, bad_account, "nobody@example.com")]
        )
    assert list(raised.value.failed) == [f"salesforce:{bad}:1"]
    assert isinstance(raised.value.failed[f"salesforce:{bad}:1"], PermanentError)
    assert [c["Fullkit_Opportunity__c"] for c in org.sandbox.all("Case")] == [good]


def test_a_custom_object_and_record_type_are_configurable(org: RunningSalesforceSandbox) -> None:
    box = org.sandbox
    box.store.create(
        box.store.object("RecordType"),
        {"Name": "Onboarding", "DeveloperName": "Onboarding", "SobjectType": "Onboarding__c"},
        box.integration_user,
    )
    deal_id, account_id = won_deal(org)
    made = target(org).create(
        [request(deal_id, account_id, object="Onboarding__c", record_type="Onboarding")]
    )
    record = box.get("Onboarding__c", made[f"salesforce:{deal_id}:1"].ref)
    assert record["Fullkit_Opportunity__c"] == deal_id
    assert record["RecordTypeId"]


# --- which CRMs a target serves --------------------------------------------------------

KIT = """\
kit: onboarding
title: Onboarding
crm: {crm}
handoff_stage: closedwon
ops:
  target: {target}
requirements:
  - id: amount
    check: 'deal.amount > 0'
    message: 'Deal amount must be above zero'
"""


def rules_with(tmp_path: Path, crm: str, target_name: str) -> Path:
    (tmp_path / "kits").mkdir()
    (tmp_path / "mappings").mkdir()
    for name in ("hubspot", "salesforce"):
        source = ROOT / "kit_rules" / "mappings" / f"{name}.yaml"
        (tmp_path / "mappings" / f"{name}.yaml").write_text(source.read_text())
    (tmp_path / "kits" / "10-kit.yaml").write_text(KIT.format(crm=crm, target=target_name))
    return tmp_path


@pytest.mark.parametrize(
    ("crm", "target_name"), [("salesforce", "hubspot_ticket"), ("hubspot", "salesforce_case")]
)
def test_a_kit_pairing_a_crm_with_a_target_that_cannot_serve_it_is_refused(
    tmp_path: Path, crm: str, target_name: str
) -> None:
    with pytest.raises(RulesError) as raised:
        load_rules(rules_with(tmp_path, crm, target_name), load_all())
    assert f"ops target '{target_name}' cannot serve {crm} deals" in str(raised.value)


def test_a_salesforce_kit_with_a_case_target_loads(tmp_path: Path) -> None:
    rules = load_rules(rules_with(tmp_path, "salesforce", "salesforce_case"), load_all())
    assert [kit.ops.target for kit in rules.kits] == ["salesforce_case"]
