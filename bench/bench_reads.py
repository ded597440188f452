"""Deal reads at real sizes against the sandbox HubSpot over loopback HTTP:

    python -m bench.bench_reads

* API calls and seconds to read one deal with 250 contacts and 120 line items (paged
  associations followed to the end);
* the same with the files on its notes and emails, as a kit using `attachments` asks;
* API calls to read 120 deals with their stage history (batches of 50).
"""

from __future__ import annotations

import time
from pathlib import Path

from bridge.rules import load_rules
from bridge.settings import Settings
from connectors.hubspot import HubSpotConnector
from connectors.hubspot_setup import setup_properties
from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox

RULES = Path(__file__).resolve().parent.parent / "kit_rules"


def _big_deal(box: HubSpotSandbox) -> str:
    deal_id = box.create_deal(
        {"dealname": "Big", "dealstage": "contractsent", "amount": "90000"},
        company={"name": "Big Co", "domain": "big.example"},
        contacts=[{"email": f"person{n}@big.example"} for n in range(250)],
        line_items=[{"name": f"Item {n}", "quantity": "1"} for n in range(120)],
    )
    for n in range(5):
        box.attach_file(deal_id, f"Document {n}", "pdf", via="notes" if n % 2 else "emails")
    box.move_deal(deal_id, "closedwon")
    return deal_id


def _timed_read(
    running: RunningSandbox, hub: HubSpotConnector, ids: list[str], attachments: bool = False
) -> tuple[int, float]:
    running.sandbox.reset_calls()
    started = time.perf_counter()
    hub.fetch_packets(ids, with_attachments=attachments)
    took = time.perf_counter() - started
    calls = [c for c in running.sandbox.calls() if "account-info" not in c.path]
    return len(calls), took


def main() -> None:
    print("Deal reads at real sizes (sandbox HubSpot on loopback, no rate limit)")
    box = HubSpotSandbox(rate_limit=None)
    box.seed_default_portal()
    with start_sandbox(sandbox=box) as running:
        settings = Settings(
            HUBSPOT_ACCESS_TOKEN=running.access_token,
            HUBSPOT_API_BASE=running.url,
            HUBSPOT_APP_BASE=running.url,
        )
        setup_properties(settings)
        hub = HubSpotConnector(settings, load_rules(RULES).mappings["hubspot"])
        big = _big_deal(box)
        hub.fetch_packets([big])  # the account details, once per process
        calls, took = _timed_read(running, hub, [big])
        print(f"  one deal, 250 contacts + 120 line items: {calls} API calls, {took:.2f} s")
        calls, took = _timed_read(running, hub, [big], attachments=True)
        print(f"  the same with 5 attachments on notes and emails: {calls} calls, {took:.2f} s")
        many = [box.create_deal({"dealname": f"Quarter end {n}"}) for n in range(120)]
        calls, took = _timed_read(running, hub, many)
        print(f"  120 deals with stage history: {calls} API calls, {took:.2f} s")


if __name__ == "__main__":
    main()
