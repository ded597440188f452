"""The Salesforce connector against the loopback org: few calls per batch, exact writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.rules import load_rules
from bridge.settings import Settings
from connectors.salesforce import SalesforceConnector, marker_of
from kernel.connector import Acceptance, PushBack
from kernel.errors import PartialFailure, PermanentError
from sandbox.server import RunningSalesforceSandbox, start_salesforce_sandbox

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def org() -> Iterator[RunningSalesforceSandbox]:
    served = start_salesforce_sandbox()
    served.sandbox.seed_default_org()
    yield served
    served.stop()


def connector(org: RunningSalesforceSandbox) -> SalesforceConnector:
    mapping = load_rules(ROOT / "kit_rules").mappings["salesforce"]
    settings = Settings(SALESFORCE_INSTANCE_URL=org.url, SALESFORCE_ACCESS_TOKEN=org.access_token)
    return SalesforceConnector(settings, mapping)


def opportunity(org: RunningSalesforceSandbox, n: int, *, files: bool = True) -> str:
    box = org.sandbox
    record = box.create_opportunity(
        {"Name": f"Deal {n}", "StageName": "Negotiation/Review", "Amount": 1000 + n},
        account={"Name": f"Acme {n}", "Website": "acme.example"},
        contacts=[
            {"LastName": "Nobody", "Email": "nobody@acme.example"},
            {"LastName": "Bill", "Email": "bill@acme.example", "Role": "Billing"},
        ],
        line_items=[{"Name": "Pro plan", "Quantity": 3, "UnitPrice": 500}],
        files=[("Signed order form", "pdf")] if files else [],
        owner_email="sales-sam@example.com",
    )
    box.move_opportunity(record, "Closed Won")
    return record


def push_back(deal_id: str, *missing: str) -> PushBack:
    return PushBack(f"salesforce:{deal_id}:1", deal_id, "Negotiation/Review", missing, None, NOW)


def test_many_opportunities_are_read_in_one_query(org: RunningSalesforceSandbox) -> None:
    ids = [opportunity(org, n) for n in range(5)]
    org.sandbox.reset_calls()
    packets = connector(org).fetch_packets(ids, with_attachments=True)

    # One query for the packets, one for every stage history.
    assert len(org.sandbox.calls()) == 2
    packet = packets[ids[2]]
    assert packet.deal["amount"] == 1002.0
    assert packet.company == {"name": "Acme 2", "domain": "acme.example"}
    roles = sorted(contact["role"] for contact in packet.contacts)
    assert roles == ["", "Billing"]  # a contact without a role still has one: empty
    assert packet.line_items[0]["quantity"] == 3.0
    assert packet.attachments[0]["name"] == "Signed order form.pdf"
    assert packet.stage_ref == "Closed Won"
    assert packet.previous_stage_ref == "Negotiation/Review"
    assert packet.owner_ref == org.sandbox.user_by_email("sales-sam@example.com")
    # Parent fields of the same query: the owner's name costs no call.
    assert (packet.owner_email, packet.owner_name) == ("sales-sam@example.com", "Sam Sales")


def test_an_unknown_or_short_id_is_answered_by_the_id_asked_for(
    org: RunningSalesforceSandbox,
) -> None:
    known = opportunity(org, 1, files=False)
    packets = connector(org).fetch_packets([known[:15], "006000000000000AAA"])
    assert list(packets) == [known[:15]]


def test_push_back_writes_the_deal_and_one_task_even_when_retried(
    org: RunningSalesforceSandbox,
) -> None:
    deal_id = opportunity(org, 1)
    crm = connector(org)
    item = push_back(deal_id, "Set the requested kickoff date", "Add a billing contact")

    first = crm.create_return_tasks([item])
    again = crm.create_return_tasks([item], may_exist=True)  # a retry after a crash
    crm.write_outcomes([item], [])

    assert first == again
    tasks = [t for t in org.sandbox.all("Task") if t["WhatId"] == deal_id]
    assert len(tasks) == 1
    task = tasks[0]
    assert task["Subject"] == "Hand-off returned: 2 items missing"
    assert "Set the requested kickoff date" in task["Description"]
    assert marker_of(task["Description"]) == item.handoff_id
    assert task["ActivityDate"] == "2026-12-02"
    deal = org.sandbox.get("Opportunity", deal_id)
    assert deal["StageName"] == "Negotiation/Review"
    assert deal["Fullkit_Status__c"] == "returned"
    assert deal["Fullkit_Missing__c"] == "Set the requested kickoff date\nAdd a billing contact"


def test_returns_and_acceptances_share_one_collection_call(
    org: RunningSalesforceSandbox,
) -> None:
    returned, accepted = opportunity(org, 1), opportunity(org, 2)
    org.sandbox.reset_calls()
    connector(org).write_outcomes(
        [push_back(returned, "Deal amount must be above zero")],
        [
            Acceptance(
                f"salesforce:{accepted}:1",
                accepted,
                "ops-anna@example.com",
                "https://ops.example/case/1",
                dt.date(2026, 12, 9),
            )
        ],
    )
    assert len(org.sandbox.calls()) == 1
    deal = org.sandbox.get("Opportunity", accepted)
    assert deal["Fullkit_Status__c"] == "accepted"
    assert deal["Fullkit_Ops_Owner__c"] == "ops-anna@example.com"
    assert deal["Fullkit_Ops_Link__c"] == "https://ops.example/case/1"
    assert str(deal["Fullkit_Expected_Kickoff__c"]) == "2026-12-09"


def test_a_refused_opportunity_fails_alone(org: RunningSalesforceSandbox) -> None:
    good, bad = opportunity(org, 1), opportunity(org, 2)
    items = [push_back(good, "x"), push_back(bad, "y")]
    items[1] = PushBack(items[1].handoff_id, bad, "No Such Stage", ("y",), None, NOW)
    with pytest.raises(PartialFailure) as raised:
        connector(org).write_outcomes(items, [])
    assert list(raised.value.failed) == [bad]
    assert isinstance(raised.value.failed[bad], PermanentError)
    assert org.sandbox.get("Opportunity", good)["Fullkit_Status__c"] == "returned"
