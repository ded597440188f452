"""Salesforce end to end: the org's outbound message -> receiver -> worker -> Case or Task."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from bridge import db, ledger
from bridge.app import create_app
from bridge.runtime import Runtime
from bridge.worker import build_worker
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import RunningSalesforceSandbox, start_salesforce_sandbox
from tests.conftest import ROOT
from tests.test_metrics import samples, value

KIT = """\
kit: sf-onboarding
title: Salesforce onboarding
crm: salesforce
handoff_stage: closedwon
ops:
  target: salesforce_case
  owners: [ops-anna@example.com, ops-ben@example.com]
  kickoff_within_days: 5
requirements:
  - id: amount
    check: 'deal.amount > 0'
    message: 'Deal amount must be above zero'
  - id: kickoff-date
    field: deal.kickoff_date
    message: 'Set the requested kickoff date'
"""


@dataclass
class SfStack:
    org: RunningSalesforceSandbox
    runtime: Runtime
    receiver: str = ""

    @property
    def box(self) -> SalesforceSandbox:
        return self.org.sandbox

    def opportunity(self, name: str, **fields: Any) -> str:
        values = {"Name": name, "StageName": "Negotiation/Review", "Amount": 12000,
                  "Kickoff_Date__c": "2027-01-15", **fields}  # fmt: skip
        return self.box.create_opportunity(
            {k: v for k, v in values.items() if v is not None},
            account={"Name": name},
            contacts=[{"LastName": "Bill", "Email": "bill@acme.example", "Role": "Billing"}],
            owner_email="sales-sam@example.com",
        )

    def work(self) -> None:
        """Salesforce's next delivery round, then every queued job to completion."""
        for delivery in self.box.deliver_outbound():
            assert delivery.acked, delivery.error
        build_worker(self.runtime).work(burst=True, logging_level="WARNING")

    def state(self, deal_id: str) -> str:
        with self.runtime.sessions() as session:
            history = ledger.deal_history(session, "salesforce", deal_id)
        assert history is not None
        return str(history["attempts"][-1]["state"])


@pytest.fixture
def stack(make_settings: Any, tmp_path: Path) -> Iterator[SfStack]:
    rules = tmp_path / "rules"
    (rules / "kits").mkdir(parents=True)
    shutil.copytree(ROOT / "kit_rules" / "mappings", rules / "mappings")
    (rules / "kits" / "20-salesforce.yaml").write_text(KIT)
    org = start_salesforce_sandbox()
    org.sandbox.seed_default_org()
    settings = make_settings(
        FULLKIT_RULES_DIR=str(rules),
        SALESFORCE_INSTANCE_URL=org.url,
        SALESFORCE_ACCESS_TOKEN=org.access_token,
        SALESFORCE_ORG_ID=org.sandbox.org_id,
    )
    runtime = Runtime.build(settings)
    db.prepare(runtime.engine, settings)
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver = f"http://127.0.0.1:{server.server_port}/webhooks/salesforce/outbound"
    org.sandbox.add_outbound_message(receiver)
    try:
        yield SfStack(org, runtime, receiver)
    finally:
        server.shutdown()
        org.stop()
        runtime.engine.dispose()


def test_a_complete_opportunity_gets_one_case_and_is_written_back(stack: SfStack) -> None:
    deal_id = stack.opportunity("Acme")
    stack.box.move_opportunity(deal_id, "Closed Won")
    stack.work()

    assert stack.state(deal_id) == "ops_created"
    cases = stack.box.all("Case")
    assert len(cases) == 1
    assert cases[0]["Fullkit_Opportunity__c"] == deal_id
    assert cases[0]["OwnerId"] == stack.box.user_by_email("ops-anna@example.com")
    deal = stack.box.get("Opportunity", deal_id)
    assert deal["Fullkit_Status__c"] == "accepted"
    assert deal["Fullkit_Ops_Owner__c"] == "ops-anna@example.com"
    assert cases[0]["Id"] in deal["Fullkit_Ops_Link__c"]


def test_an_incomplete_opportunity_goes_back_with_one_task(stack: SfStack) -> None:
    deal_id = stack.opportunity("Bare", Kickoff_Date__c=None)
    stack.box.move_opportunity(deal_id, "Closed Won")
    stack.work()

    assert stack.state(deal_id) == "returned"
    deal = stack.box.get("Opportunity", deal_id)
    assert deal["StageName"] == "Negotiation/Review"
    assert deal["Fullkit_Missing__c"] == "Set the requested kickoff date"
    tasks = [t for t in stack.box.all("Task") if t["WhatId"] == deal_id]
    assert [t["Subject"] for t in tasks] == ["Hand-off returned: 1 item missing"]
    assert tasks[0]["OwnerId"] == stack.box.user_by_email("sales-sam@example.com")
    assert stack.box.all("Case") == []


def test_one_notification_delivered_five_times_gives_one_case(stack: SfStack) -> None:
    deal_id = stack.opportunity("Twice")
    stack.box.move_opportunity(deal_id, "Closed Won")
    notification = stack.box.pending_notifications()[0]
    stack.work()
    stack.box.redeliver(notification.id, times=4)
    build_worker(stack.runtime).work(burst=True, logging_level="WARNING")

    assert len(stack.box.all("Case")) == 1
    # Fullkit's own write-backs sent no further notification.
    assert stack.box.pending_notifications() == []


def attempts(stack: SfStack, deal_id: str) -> list[str]:
    with stack.runtime.sessions() as session:
        history = ledger.deal_history(session, "salesforce", deal_id)
    assert history is not None
    return [str(a["state"]) for a in history["attempts"]]


def test_a_returned_opportunity_fixed_and_resubmitted_is_accepted(stack: SfStack) -> None:
    deal_id = stack.opportunity("Soylent", Kickoff_Date__c=None)
    stack.box.move_opportunity(deal_id, "Closed Won")
    stack.work()
    assert stack.box.get("Opportunity", deal_id)["StageName"] == "Negotiation/Review"

    # Sales adds what was missing and moves the opportunity on again, in the UI.
    stack.box.update("Opportunity", deal_id, {"Kickoff_Date__c": "2027-02-01"},
                     by="sales-sam@example.com")  # fmt: skip
    stack.box.move_opportunity(deal_id, "Closed Won")
    stack.work()

    assert attempts(stack, deal_id) == ["returned", "ops_created"]
    deal = stack.box.get("Opportunity", deal_id)
    assert deal["StageName"] == "Closed Won"
    assert deal["Fullkit_Status__c"] == "accepted"
    assert [c["Fullkit_Opportunity__c"] for c in stack.box.all("Case")] == [deal_id]


def test_fullkits_own_stage_writes_never_start_another_attempt(stack: SfStack) -> None:
    # A second flow that fires on every stage Fullkit may write, skipping the integration
    # user as the DX project's Fullkit_Handoff flow does.
    every_stage = ("Closed Won", "Negotiation/Review")
    stack.box.add_outbound_message(stack.receiver, every_stage,
                                   skip_saves_by=["fullkit-integration@example.com"])  # fmt: skip
    deal_id = stack.opportunity("Pushed", Amount=0)
    stack.box.move_opportunity(deal_id, "Closed Won")
    stack.work()

    deal = stack.box.get("Opportunity", deal_id)
    # The push-back is Fullkit's save: the one the skip is there for.
    assert deal["StageName"] == "Negotiation/Review"
    assert deal["LastModifiedById"] == stack.box.integration_user
    assert stack.box.pending_notifications() == []
    stack.work()
    assert attempts(stack, deal_id) == ["returned"]
    assert len([t for t in stack.box.all("Task") if t["WhatId"] == deal_id]) == 1


def test_a_burst_of_150_opportunities_is_served_in_a_handful_of_calls(stack: SfStack) -> None:
    complete = [stack.opportunity(f"Burst {n}") for n in range(100)]
    bare = [stack.opportunity(f"Bare {n}", Kickoff_Date__c=None) for n in range(50)]
    for deal_id in complete + bare:
        stack.box.move_opportunity(deal_id, "Closed Won")
    stack.box.reset_calls()
    stack.work()

    assert {stack.state(d) for d in complete} == {"ops_created"}
    assert {stack.state(d) for d in bare} == {"returned"}
    assert len(stack.box.all("Case")) == 100
    assert len([t for t in stack.box.all("Task") if t["WhatId"] in set(bare)]) == 50
    # Batches: the opportunities are read a batch at a time, never one query each.
    queries = stack.box.calls("GET", "/services/data/")
    assert len([c for c in queries if "/query" in c.path]) <= 10
    assert len(stack.box.calls()) <= 15  # measured: 9 (5 queries, 4 collection writes)


def test_metrics_count_the_orgs_calls_apart_from_the_case_targets(stack: SfStack) -> None:
    deal_id = stack.opportunity("Counted")
    stack.box.move_opportunity(deal_id, "Closed Won")
    stack.work()
    metrics = stack.receiver.replace("/webhooks/salesforce/outbound", "/metrics")
    found = samples(requests.get(metrics, timeout=10).text)
    handoffs = "fullkit_handoffs_total"
    assert value(found, handoffs, crm="salesforce", kit="sf-onboarding", outcome="accepted") == 1
    assert value(found, "fullkit_api_calls_total", system="salesforce", outcome="ok") > 0
    assert value(found, "fullkit_api_calls_total", system="salesforce_case", outcome="ok") > 0
    # The org's daily allocation, as its Sforce-Limit-Info header last said.
    assert value(found, "fullkit_crm_rate_limit_max", crm="salesforce") > 0
