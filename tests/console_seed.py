"""A ledger with one deal in each situation the console shows, for its tests and screenshot.

Written through the models, as the worker would leave them: the console only reads the
ledger, so the deals need no CRM behind them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy.orm import sessionmaker

from bridge.deal_ids import salesforce_id18
from bridge.models import Attempt, DecisionRecord, StageChange, Transition

PORTAL = "https://app.hubspot.com/contacts/4100001/record/0-3"
SALESFORCE_DEAL = salesforce_id18("0065g00000AbCdE")
ANNA, BEN = "ops-anna@example.com", "ops-ben@example.com"


@dataclass
class Step:
    state: str
    minutes_ago: float
    detail: str | None = None


@dataclass
class Seeded:
    crm: str
    deal_id: str
    kit: str | None
    steps: list[Step]
    findings: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    ops_owner: str | None = None
    ops_link: str | None = None
    sales_owner: str | None = "75310"
    deal_url: str | None = None
    number: int = 1


OWNER = {"accepted": "ops", "ops_created": "ops"}

DEALS = [
    Seeded("hubspot", "1001", "new-customer",
           [Step("received", 2880), Step("evaluating", 2880), Step("returned", 2879.9)],
           findings=[("billing-contact", "Add a billing contact with an email address"),
                     ("kickoff-date", "Set the requested kickoff date")],
           deal_url=f"{PORTAL}/1001"),
    Seeded("hubspot", "1001", "new-customer",
           [Step("received", 300), Step("evaluating", 300), Step("accepted", 299.9),
            Step("ops_created", 299.8)],
           ops_owner=ANNA, ops_link="https://app.hubspot.com/contacts/4100001/ticket/9001",
           deal_url=f"{PORTAL}/1001", number=2),
    Seeded("hubspot", "1002", "new-customer",
           [Step("received", 1440), Step("evaluating", 1440), Step("accepted", 1439.9),
            Step("ops_created", 1439.8)],
           ops_owner=BEN, ops_link="https://app.hubspot.com/contacts/4100001/ticket/9002",
           deal_url=f"{PORTAL}/1002", sales_owner="75311"),
    Seeded("hubspot", "1003", "new-customer",
           [Step("received", 90), Step("evaluating", 90),
            Step("failed", 75, "HubSpot refused the access token (401)")],
           error="HubSpot refused the access token (401): the private app's token was "
                 "revoked or lacks the crm.objects.deals.read scope; fix it, then replay",
           deal_url=f"{PORTAL}/1003"),
    Seeded("hubspot", "1004", "enterprise",
           [Step("received", 20), Step("evaluating", 20), Step("returned", 19.9)],
           findings=[("sso-provider", "Enterprise deals need the SSO provider")],
           deal_url=f"{PORTAL}/1004", sales_owner="75312"),
    Seeded("hubspot", "1005", None, [Step("received", 600), Step("no_kit", 599.9)],
           sales_owner=None),
    Seeded("hubspot", "1006", "new-customer", [Step("received", 0.5), Step("evaluating", 0.4)],
           deal_url=f"{PORTAL}/1006"),
    Seeded("salesforce", SALESFORCE_DEAL, "salesforce-new-customer",
           [Step("received", 4000), Step("evaluating", 4000), Step("accepted", 3999.9),
            Step("ops_created", 3999.8)],
           ops_owner=ANNA, ops_link="https://example.my.salesforce.com/lightning/r/Case/500x/view",
           deal_url=f"https://example.my.salesforce.com/lightning/r/Opportunity/{SALESFORCE_DEAL}/view",
           sales_owner="0055g00000Owner1AAA"),
]  # fmt: skip

# Everything a CRM user can type, shown as text and never run.
HOSTILE = Seeded(
    "hubspot", "6666", "new-customer",
    [Step("received", 45), Step("evaluating", 45), Step("failed", 44, "<b>bold</b>")],
    findings=[("amount", '<img src=x onerror="alert(1)">Deal amount must be above zero')],
    error="<script>alert('error')</script>",
    deal_url="javascript:alert(document.cookie)",
    sales_owner="<i>owner</i>",
)  # fmt: skip


def seed(sessions: sessionmaker, deals: list[Seeded] | None = None) -> None:
    now = dt.datetime.now(dt.UTC)
    with sessions() as session:
        for deal in deals if deals is not None else DEALS:
            attempt = _attempt(deal, now)
            session.add(attempt)
            session.flush()
            session.add(
                StageChange(
                    crm=deal.crm, change_key=f"{deal.deal_id}:{deal.number}",
                    deal_id=deal.deal_id, stage_ref="closedwon", occurred_at=attempt.created_at,
                    received_at=attempt.created_at, outcome="started", attempt_id=attempt.id,
                )
            )  # fmt: skip
        session.commit()


def _attempt(deal: Seeded, now: dt.datetime) -> Attempt:
    times = [now - dt.timedelta(minutes=step.minutes_ago) for step in deal.steps]
    owner, owner_since = "sales", times[0]
    transitions = []
    for step, at in zip(deal.steps, times, strict=True):
        new_owner = OWNER.get(step.state, "sales" if step.state != "failed" else owner)
        if new_owner != owner:
            owner, owner_since = new_owner, at
        transitions.append(Transition(state=step.state, owner=owner, at=at, detail=step.detail))
    findings = [{"id": i, "path": "", "message": m} for i, m in deal.findings]
    attempt = Attempt(
        crm=deal.crm, deal_id=deal.deal_id, number=deal.number, kit_id=deal.kit,
        state=deal.steps[-1].state, owner=owner, owner_since=owner_since, findings=findings,
        trigger_stage="closedwon", trigger_at=times[0], ops_owner=deal.ops_owner,
        ops_link=deal.ops_link, ops_ref=_ops_ref(deal.ops_link),
        error=deal.error, retries=0, task_started=False, ops_started=False,
        created_at=times[0], updated_at=times[-1], transitions=transitions,
    )  # fmt: skip
    if deal.kit is not None:
        attempt.decision = DecisionRecord(
            kit_id=deal.kit, outcome="returned" if findings else "accepted", findings=findings,
            judged_on=times[0].date(), owner_ref=deal.sales_owner, deal_url=deal.deal_url,
            created_at=times[0],
        )  # fmt: skip
    return attempt


def _ops_ref(link: str | None) -> str | None:
    return link.rstrip("/").removesuffix("/view").rsplit("/", 1)[-1] if link else None
