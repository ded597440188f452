"""Salesforce hand-off figures on real processes (`fullkit serve` + `fullkit worker`,
embedded Valkey, SQLite) against the loopback Salesforce org, which delivers its outbound
messages to the receiver as a record-triggered Flow would:

    python -m bench.bench_salesforce [--burst 1000] [--cap 60]

* Salesforce API calls one accepted and one returned opportunity make, alone;
* a quarter-end burst: N opportunities (half complete, half not) moved to Closed Won at
  once, delivered in outbound messages of 100 notifications: seconds until all are
  settled, API calls, calls per opportunity. Stopped after --cap seconds and reported as
  far as it got.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.figures import Figure
from bridge import db, ledger
from bridge.demo import start_stack
from bridge.models import Attempt
from bridge.valkey import EmbeddedValkey
from sandbox import HubSpotSandbox, start_sandbox
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import start_salesforce_sandbox

HOME = Path(".fullkit") / "bench" / "salesforce"
MAPPINGS = Path(__file__).resolve().parent.parent / "kit_rules" / "mappings"
HANDOFF_STAGE = "Closed Won"
# The bench's own kit, so that its figures do not move when the shipped kits change.
KIT = """\
kit: sf-bench
title: Salesforce onboarding (bench)
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
  - id: billing-contact
    check: 'contacts.exists(c, c.role == "Billing" && has(c.email))'
    message: 'Add a billing contact with an email address'
"""


class SalesforceBench:
    def __init__(self) -> None:
        home = HOME.resolve()
        if home.exists():
            EmbeddedValkey(home).stop()
        shutil.rmtree(home, ignore_errors=True)
        rules = home / "rules"
        (rules / "kits").mkdir(parents=True)
        (rules / "kits" / "20-sf-bench.yaml").write_text(KIT)
        shutil.copytree(MAPPINGS, rules / "mappings")
        self.home = home
        self.org = start_salesforce_sandbox(sandbox=SalesforceSandbox())
        self.box.seed_default_org()
        # The demo stack also serves HubSpot; its portal stays idle here.
        self.hubspot = HubSpotSandbox(rate_limit=None)
        self.hubspot.seed_default_portal()
        self.portal = start_sandbox(sandbox=self.hubspot)
        env = {
            "FULLKIT_RULES_DIR": str(rules),
            "SALESFORCE_INSTANCE_URL": self.org.url,
            "SALESFORCE_ACCESS_TOKEN": self.org.access_token,
            "SALESFORCE_ORG_ID": self.box.org_id,
        }
        try:
            self.stack = start_stack(
                home, self.portal.url, self.hubspot, verbose=False, env_overrides=env
            )
        except BaseException:
            self.portal.stop()
            self.org.stop()
            raise
        self.box.add_outbound_message(
            f"{self.stack.url}/webhooks/salesforce/outbound", stages=(HANDOFF_STAGE,)
        )
        self.sessions = db.session_factory(db.make_engine(self.stack.settings))

    @property
    def box(self) -> SalesforceSandbox:
        return self.org.sandbox

    def close(self) -> None:
        self.stack.stop()
        self.portal.stop()
        self.org.stop()
        EmbeddedValkey(self.home).stop()

    def opportunity(self, n: int, complete: bool) -> str:
        fields = {"Name": f"Bench {n}", "StageName": "Negotiation/Review", "Amount": 12000,
                  "Kickoff_Date__c": "2027-02-01"}  # fmt: skip
        if not complete:
            del fields["Kickoff_Date__c"]
        return self.box.create_opportunity(
            fields,
            account={"Name": f"Bench {n}", "Website": f"bench{n}.example"},
            contacts=[{"LastName": "Bill", "Email": f"bill@bench{n}.example", "Role": "Billing"},
                      {"LastName": "Chad", "Email": f"chad@bench{n}.example", "Role": "Champion"}],
            line_items=[{"Name": "Seat", "Quantity": 5, "UnitPrice": 1000}],
            owner_email="sales-sam@example.com",
        )  # fmt: skip

    def settle(self, deal_ids: list[str], cap: float) -> tuple[int, float]:
        """Move the opportunities at once and let the org deliver its outbound messages;
        (how many settled, seconds until the last one did), giving up after `cap` s."""
        moved = time.time()
        for deal_id in deal_ids:
            self.box.move_opportunity(deal_id, HANDOFF_STAGE)
        for delivery in self.box.deliver_outbound():
            if not delivery.acked:
                raise RuntimeError(f"outbound message not acknowledged: {delivery.error}")
        query = select(func.count(), func.max(Attempt.updated_at)).where(
            Attempt.crm == "salesforce",
            Attempt.deal_id.in_(deal_ids),
            Attempt.state.not_in(ledger.IN_PROGRESS),
        )
        settled, last = 0, None
        while time.time() - moved < cap:
            with self.sessions() as session:
                settled, last = session.execute(query).one()
            if settled >= len(deal_ids):
                break
            time.sleep(0.1)
        return settled, (last.timestamp() - moved) if last else cap


def api_calls(bench: SalesforceBench) -> list[Figure]:
    """Calls per opportunity alone. The first Cases look up each ops owner's User (kept
    in Redis for every process): two warm-up opportunities, one per owner of the kit's
    round robin, then the figures of an org in use."""
    figures = []
    rounds = (
        (True, "first accepted (cold)"), (True, "second accepted (2nd owner)"),
        (True, "accepted"), (False, "returned"),
    )  # fmt: skip
    for n, (complete, label) in enumerate(rounds):
        deal_id = bench.opportunity(900 + n, complete)
        bench.box.reset_calls()
        settled, took = bench.settle([deal_id], 30.0)
        if settled != 1:
            raise RuntimeError(f"the {label} opportunity did not settle in 30 s")
        calls = bench.box.calls()
        paths = ", ".join(f"{c.method} {_short(c.path)}" for c in calls)
        print(f"  one {label} opportunity: {len(calls)} Salesforce API calls, {took:.2f} s"
              f"   [{paths}]")  # fmt: skip
        if label in ("accepted", "returned"):
            figures.append(
                Figure(f"Salesforce: one {label} opportunity: API calls", len(calls), "")
            )
    return figures


def _short(path: str) -> str:
    # /services/data/v62.0/composite/sobjects -> composite/sobjects; a query's SOQL dropped.
    return path.split("?")[0].split("/services/data/", 1)[-1].partition("/")[2] or path


def burst(bench: SalesforceBench, count: int, cap: float) -> list[Figure]:
    deals = [bench.opportunity(n, complete=n % 2 == 0) for n in range(count)]
    bench.box.reset_calls()
    settled, took = bench.settle(deals, cap)
    calls = len(bench.box.calls())
    done = "all settled" if settled == count else f"{settled} settled (stopped)"
    per_deal = calls / max(settled, 1)
    print(f"  {count} opportunities moved at once (half complete): {done} in {took:.1f} s, "
          f"{calls} API calls ({per_deal:.3f} per opportunity)")  # fmt: skip
    label = f"Salesforce: {count}-opportunity burst"
    stopped = "" if settled == count else f"(stopped: {settled}/{count} settled)"
    return [
        Figure(f"{label}: seconds until all settled", took if settled == count else cap, "s",
               None, stopped),
        Figure(f"{label}: API calls", calls, ""),
        Figure(f"{label}: API calls per opportunity", per_deal, ""),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--cap", type=float, default=60.0)
    args = parser.parse_args(argv)
    print("Salesforce hand-off figures (real serve + worker processes, sandbox org on loopback)")
    bench = SalesforceBench()
    try:
        figures = api_calls(bench)
        figures += burst(bench, args.burst, args.cap)
    finally:
        bench.close()
    return figures


if __name__ == "__main__":
    main()
