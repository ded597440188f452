"""The Salesforce half of `fullkit demo`: a loopback org whose record-triggered flow
sends real outbound messages to the demo's receiver, and a few opportunities to hand off.

The org's flow skips saves by Fullkit's integration user, as the DX project's
`Fullkit_Handoff` flow does, so Fullkit's own push-backs start nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.salesforce import SalesforceSandbox
from sandbox.server import RunningSalesforceSandbox, start_salesforce_sandbox

HANDOFF_STAGE = "Closed Won"
FROM_STAGE = "Negotiation/Review"
SALES_REP = "sales-sue@example.com"
INTEGRATION_USER = "fullkit-integration@example.com"


@dataclass
class Opportunity:
    label: str
    expect: str  # accepted | returned
    fields: dict[str, Any]
    website: str | None = "example.com"
    billing: bool = True
    products: int = 1
    files: list[str] = field(default_factory=list)
    deal_id: str = ""
    moved_at: float = 0.0

    @property
    def name(self) -> str:
        return str(self.fields["Name"])


def opportunities(kickoff: str) -> list[Opportunity]:
    def fields(name: str, **extra: Any) -> dict[str, Any]:
        values = {"Name": name, "StageName": FROM_STAGE, "Amount": 15000,
                  "Plan__c": "pro", "Kickoff_Date__c": kickoff, **extra}  # fmt: skip
        return {k: v for k, v in values.items() if v is not None}

    return [
        Opportunity("complete pro opportunity", "accepted", fields("Vandelay — Pro"),
                    "vandelay.example"),
        Opportunity("complete enterprise opportunity", "accepted",
                    fields("Pied Piper — Enterprise", Plan__c="enterprise",
                           SSO_Provider__c="Okta"),
                    "piedpiper.example", files=["Signed Order Form"]),
        Opportunity("kickoff date missing", "returned",
                    fields("Dunder Mifflin — Pro", Kickoff_Date__c=None), "dundermifflin.example"),
        Opportunity("enterprise without order form, no billing role", "returned",
                    fields("Wonka — Enterprise", Plan__c="enterprise", SSO_Provider__c="Okta"),
                    "wonka.example", billing=False),
    ]  # fmt: skip


def start_org() -> RunningSalesforceSandbox:
    org = start_salesforce_sandbox()
    org.sandbox.seed_default_org()
    return org


def org_env(org: RunningSalesforceSandbox) -> dict[str, str]:
    """What an operator sets to connect Fullkit's serve and worker to this org."""
    return {
        "SALESFORCE_INSTANCE_URL": org.url,
        "SALESFORCE_ACCESS_TOKEN": org.sandbox.access_token,
        "SALESFORCE_ORG_ID": org.sandbox.org_id,
    }


def connect(box: SalesforceSandbox, fullkit_url: str) -> None:
    """The flow: an outbound message to Fullkit when StageName becomes the hand-off stage."""
    box.add_outbound_message(f"{fullkit_url}/webhooks/salesforce/outbound", (HANDOFF_STAGE,),
                             skip_saves_by=(INTEGRATION_USER,))  # fmt: skip


def seed(box: SalesforceSandbox, kickoff: str) -> list[Opportunity]:
    plays = opportunities(kickoff)
    for play in plays:
        slug = play.name.split()[0].lower()
        role = "Billing" if play.billing else "Champion"
        play.deal_id = box.create_opportunity(
            play.fields,
            account={"Name": play.name.split(" — ")[0], "Website": play.website},
            contacts=[{"FirstName": "Pat", "LastName": "Customer",
                       "Email": f"pat@{slug}.example", "Role": role}],
            line_items=[{"Name": "Platform licence", "Quantity": 10, "UnitPrice": 1500}
                        for _ in range(play.products)],
            files=[(title, "pdf") for title in play.files],
            owner_email=SALES_REP,
        )  # fmt: skip
    return plays


def hand_off(box: SalesforceSandbox, plays: list[Opportunity]) -> None:
    """Sales closes the opportunities; the org delivers its outbound messages."""
    for play in plays:
        play.moved_at = time.time()
        box.move_opportunity(play.deal_id, HANDOFF_STAGE)
    for delivery in box.deliver_outbound():
        if not delivery.acked:
            raise RuntimeError(f"the receiver refused Salesforce's outbound message: "
                               f"{delivery.status} {delivery.error or ''}")  # fmt: skip


def tally(box: SalesforceSandbox, plays: list[Opportunity]) -> tuple[int, int]:
    """Cases and Tasks Fullkit made in the org for these opportunities."""
    ids = {play.deal_id for play in plays}
    cases = [c for c in box.all("Case") if c.get("Fullkit_Opportunity__c") in ids]
    tasks = [t for t in box.all("Task") if t.get("WhatId") in ids]
    return len(cases), len(tasks)
