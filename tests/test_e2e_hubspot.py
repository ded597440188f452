"""The HubSpot hand-off end to end, through the sandbox over real HTTP: what sales sees in
HubSpot, what ops gets, and what the ledger says."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge import jobs, ledger
from bridge.lease import LEASE_SECONDS, lease_key
from bridge.models import Attempt
from connectors.hubspot_client import HubSpotApi
from kernel.rate_budget import RateBudgets
from tests.conftest import ADMIN_TOKEN, ROOT, secret
from tests.e2e import KICKOFF, Stack, start_stack


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def forget_the_ticket(stack: Stack) -> None:
    """As if the worker died after creating the ticket, before writing it down."""
    with stack.runtime.sessions() as session:
        attempt = session.get(Attempt, 1)
        attempt.state, attempt.ops_ref, attempt.ops_link = "accepted", None, None
        attempt.updated_at = ledger.utcnow() - dt.timedelta(minutes=5)
        session.commit()


def hand_off(stack: Stack, deal_id: str) -> None:
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()


def test_complete_kit_is_accepted_into_one_assigned_ticket(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    hand_off(stack, deal_id)

    tickets = stack.sandbox.tickets()
    assert len(tickets) == 1
    ticket = tickets[0]
    owners = {o.id: o.email for o in stack.sandbox.owners.values()}
    assert owners[ticket["properties"]["hubspot_owner_id"]] == "ops-anna@example.com"
    assert ticket["properties"]["hs_pipeline"] == "0"
    assert ticket["properties"]["hs_pipeline_stage"] == "1"
    assert ticket["properties"]["fullkit_handoff_id"] == f"hubspot:{deal_id}:1"
    assert (
        "bill@acmecorp.example" in ticket["properties"]["content"]
    )  # the whole kit, in the ticket
    assert deal_id in ticket["associations"]["deals"]
    assert ticket["associations"].get("companies")

    deal = stack.deal(deal_id)
    assert deal["fullkit_status"] == "accepted"
    assert deal["fullkit_ops_owner"] == "ops-anna@example.com"
    assert ticket["id"] in deal["fullkit_ops_link"]
    assert deal["fullkit_expected_kickoff"] >= KICKOFF
    assert deal["dealstage"] == "closedwon"

    history = stack.history(deal_id)
    assert history is not None
    assert history["owner"] == "ops"
    assert [t["state"] for t in history["attempts"][0]["transitions"]] == [
        "received", "evaluating", "accepted", "ops_created",
    ]  # fmt: skip


def test_incomplete_kit_goes_back_with_a_task_then_resubmission_is_accepted(
    stack: Stack,
) -> None:
    deal_id = stack.complete_deal(kickoff_date="", amount="0")
    hand_off(stack, deal_id)

    deal = stack.deal(deal_id)
    assert deal["dealstage"] == "contractsent"  # back where it came from
    assert deal["fullkit_status"] == "returned"
    assert deal["fullkit_missing"].splitlines() == [
        "Deal amount must be above zero",
        "Set the requested kickoff date",
    ]
    tasks = stack.sandbox.tasks_for_deal(deal_id)
    assert len(tasks) == 1
    task = tasks[0]["properties"]
    assert task["hs_task_subject"] == "Hand-off returned: 2 items missing"
    assert "Set the requested kickoff date" in task["hs_task_body"]
    assert task["hubspot_owner_id"] == deal["hubspot_owner_id"]
    assert task["hs_task_status"] == "NOT_STARTED"
    assert stack.sandbox.tickets() == []
    assert stack.history(deal_id)["owner"] == "sales"

    from sandbox import WriteSource

    stack.sandbox.update(
        "deals", deal_id, {"amount": "5000", "kickoff_date": KICKOFF}, source=WriteSource.user(None)
    )
    hand_off(stack, deal_id)

    history = stack.history(deal_id)
    assert [a["state"] for a in history["attempts"]] == ["returned", "ops_created"]
    assert history["owner"] == "ops"
    assert len(stack.sandbox.tickets()) == 1
    assert len(stack.sandbox.tasks_for_deal(deal_id)) == 1
    assert stack.deal(deal_id)["fullkit_status"] == "accepted"
    assert stack.deal(deal_id).get("fullkit_missing", "") == ""


def test_same_event_delivered_ten_times_at_once_makes_one_ticket(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    event = stack.sandbox.deal_event(deal_id, "closedwon")
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: stack.sandbox.send_events([event]), range(10)))
    assert statuses == [204] * 10
    stack.work()
    assert len(stack.sandbox.tickets()) == 1
    assert len(stack.history(deal_id)["attempts"]) == 1


def test_concurrent_jobs_for_one_deal_make_one_ticket(stack: Stack) -> None:
    """Past the queue's de-duplication (a replayed job, two subscriptions, a second change
    a moment later): the ledger's change key and the in-progress rule start one attempt."""
    deal_id = stack.complete_deal()
    occurred = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    moments = [occurred, occurred, occurred, occurred + 1, occurred + 2, occurred + 3]

    def intake(at: int) -> str:
        with jobs.serving(stack.runtime):
            return jobs.handle_stage_change("hubspot", deal_id, "closedwon", at, "e")

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(intake, moments))
    stack.work()
    assert outcomes.count("started") == 1
    assert outcomes.count("duplicate") == 2
    assert len(stack.sandbox.tickets()) == 1
    assert [a["state"] for a in stack.history(deal_id)["attempts"]] == ["ops_created"]


def test_fullkits_own_writes_start_nothing(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    # A write with the app's own token is Fullkit's: HubSpot marks it INTEGRATION + app id.
    answer = requests.patch(
        f"{stack.running.url}/crm/v3/objects/deals/{deal_id}",
        json={"properties": {"dealstage": "closedwon"}},
        headers={"Authorization": f"Bearer {stack.sandbox.access_token}"},
        timeout=5,
    )
    assert answer.status_code == 200
    stack.work()
    deliveries = stack.sandbox.deliveries
    assert deliveries and all(d.status == 204 for d in deliveries)
    assert stack.history(deal_id) is None
    assert stack.sandbox.tickets() == []


def test_a_100_event_batch_is_settled(stack: Stack) -> None:
    deals = [stack.complete_deal(f"Batch {n}", amount="0" if n % 4 == 0 else "900")
             for n in range(100)]  # fmt: skip
    with stack.sandbox.hold_webhooks():
        for deal_id in deals:
            stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    deliveries = stack.sandbox.deliveries
    assert len(deliveries[0].events) == 100
    # The rest are Fullkit's own push-back writes, delivered by HubSpot and ignored.
    assert all(d.status == 204 for d in deliveries)
    assert all(e["changeSource"] == "INTEGRATION" for d in deliveries[1:] for e in d.events)
    states = [stack.history(d)["attempts"][-1]["state"] for d in deals]
    assert states.count("ops_created") == 75
    assert states.count("returned") == 25
    assert len(stack.sandbox.tickets()) == 75


def test_server_errors_are_retried_and_finish(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.fail_next(2, status=503, path_prefix="/crm/v3/objects/tickets")
    hand_off(stack, deal_id)
    with stack.runtime.sessions() as session:
        attempt = ledger.latest_attempt(session, "hubspot", deal_id)
        assert attempt is not None and attempt.state == "accepted" and attempt.retries == 1
    while stack.run_scheduled_now():
        stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    assert len(stack.sandbox.tickets()) == 1


def test_retries_end_as_failed_after_the_window(make_settings: Any) -> None:
    for stack in start_stack(
        lambda **kw: make_settings(FULLKIT_RETRY_WINDOW_SECONDS="0.001", **kw)
    ):
        deal_id = stack.complete_deal()
        stack.sandbox.fail_next(50, status=502, path_prefix="/crm/v3/objects/deals")
        hand_off(stack, deal_id)
        while stack.run_scheduled_now():
            stack.work()
        attempt = stack.history(deal_id)["attempts"][0]
        assert attempt["state"] == "failed"
        assert "retries exhausted" in attempt["error"]


def test_auth_error_stops_at_once(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    with stack.sandbox.lock:
        del stack.sandbox.tokens[stack.sandbox.access_token]  # the private app was revoked
    hand_off(stack, deal_id)
    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "failed"
    assert attempt["error"].startswith("AuthError")
    assert stack.run_scheduled_now() == 0


def test_stalled_attempt_is_resumed_without_a_second_ticket(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    hand_off(stack, deal_id)
    forget_the_ticket(stack)
    assert jobs.resume_stalled(stack.runtime) == [1]
    stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    assert len(stack.sandbox.tickets()) == 1


def test_history_api(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    hand_off(stack, deal_id)
    url = f"{stack.url}/api/handoffs/hubspot/{deal_id}"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer no"}, timeout=5).status_code == 403
    ok = requests.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    assert ok.status_code == 200
    body = ok.json()
    assert body["owner"] == "ops" and body["attempts"][0]["ops_owner"] == "ops-anna@example.com"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    missing = requests.get(f"{stack.url}/api/handoffs/hubspot/999999", headers=admin, timeout=5)
    assert missing.status_code == 404


def test_returned_deal_goes_back_to_the_stage_it_came_from(stack: Stack) -> None:
    deal_id = stack.complete_deal(dealstage="decisionmakerboughtin", amount="0")
    hand_off(stack, deal_id)
    assert stack.deal(deal_id)["dealstage"] == "decisionmakerboughtin"
    assert stack.history(deal_id)["attempts"][0]["state"] == "returned"


def test_deal_no_kit_applies_to_is_recorded_and_left_alone(
    make_settings: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    kit = rules / "kits" / "10-new-customer.yaml"
    original = """applies_when: 'deal.pipeline == "default"'"""
    kit.write_text(kit.read_text().replace(original, "applies_when: 'deal.amount > 1000000.0'"))
    assert "1000000" in kit.read_text()
    for stack in start_stack(lambda **kw: make_settings(FULLKIT_RULES_DIR=str(rules), **kw)):
        deal_id = stack.complete_deal()
        stack.sandbox.move_deal(deal_id, "closedwon")
        before = stack.deal(deal_id)
        stack.work()
        history = stack.history(deal_id)
        assert [a["state"] for a in history["attempts"]] == ["no_kit"]
        assert history["owner"] == "sales"
        assert stack.deal(deal_id) == before  # nothing written to the CRM
        assert stack.sandbox.tickets() == [] and stack.sandbox.tasks_for_deal(deal_id) == []


def test_a_portal_nearly_out_of_budget_is_waited_for_without_a_429(stack: Stack) -> None:
    # A worker waits in place for at most this long; longer waits go back to the queue.
    stack.runtime.rate_budgets = RateBudgets(stack.runtime.redis, max_wait=0.5)
    deal_id = stack.complete_deal()
    with stack.sandbox.lock:
        stack.sandbox.rate_limit = (2, 10.0)  # something else spent most of the window
        stack.sandbox.request_times.clear()
    hand_off(stack, deal_id)
    # HubSpot's X-HubSpot-RateLimit-Remaining wins over Fullkit's own count: it stops
    # asking before HubSpot has to say no.
    assert [c for c in stack.sandbox.calls() if c.status == 429] == []
    with stack.runtime.sessions() as session:
        attempt = ledger.latest_attempt(session, "hubspot", deal_id)
        assert attempt is not None and attempt.state == "evaluating" and attempt.retries == 1
        assert attempt.next_run_at is not None
        wait = (attempt.next_run_at - attempt.updated_at).total_seconds()
    assert wait >= 9.0  # until the window HubSpot reported frees a call, not a blind backoff
    with stack.sandbox.lock:
        stack.sandbox.rate_limit = None
    for key in stack.runtime.redis.scan_iter("fullkit:rate:*"):
        stack.runtime.redis.delete(key)  # the window has passed
    while stack.run_scheduled_now():
        stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    assert stack.history(deal_id)["attempts"][0]["error"] is None


def test_a_429_pauses_every_worker_for_the_window_hubspot_names(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.fail_next(1, 429, "/crm/v3/objects/deals", retry_after=4)
    hand_off(stack, deal_id)
    with stack.runtime.sessions() as session:
        attempt = ledger.latest_attempt(session, "hubspot", deal_id)
        assert attempt is not None and attempt.retries == 1
        assert attempt.next_run_at is not None
        assert (attempt.next_run_at - attempt.updated_at).total_seconds() >= 4.0
    # Another worker process, with its own connection, holds back too.
    other = RateBudgets(redis.Redis.from_url(secret(stack.settings.redis_url) or ""))
    budget = HubSpotApi(stack.settings, budgets=other).budget
    assert budget is not None
    slot, wait = budget.try_take()
    assert slot is None and 0.0 < wait <= 4.0  # what is left of the 4 s, however slow we were


def test_a_dead_workers_lease_delays_resumption_only_until_it_lapses(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    hand_off(stack, deal_id)
    forget_the_ticket(stack)
    key = lease_key(1)
    stack.runtime.redis.set(key, "dead-worker", px=int(LEASE_SECONDS * 1000))
    assert jobs.resume_stalled(stack.runtime) == []  # still leased: not ours to take yet
    assert 0 < stack.runtime.redis.pttl(key) <= LEASE_SECONDS * 1000
    stack.runtime.redis.delete(key)  # the lease lapses: the dead worker renews nothing
    assert jobs.resume_stalled(stack.runtime) == [1]
    stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
    assert len(stack.sandbox.tickets()) == 1


def test_each_handoff_stage_is_judged_by_its_own_kit(make_settings: Any, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    (rules / "kits" / "20-contract-review.yaml").write_text(
        "kit: contract-review\n"
        "title: Contract review\n"
        "crm: hubspot\n"
        "handoff_stage: contractsent\n"
        "ops: {target: hubspot_ticket, owners: [ops-ben@example.com]}\n"
        "requirements:\n"
        "  - id: legal-sized\n"
        "    check: 'deal.amount < 100000.0'\n"
        "    message: 'Contracts of 100k or more go through legal first'\n"
    )
    for stack in start_stack(lambda **kw: make_settings(FULLKIT_RULES_DIR=str(rules), **kw)):
        deal_id = stack.complete_deal(dealstage="qualifiedtobuy", amount="250000")
        stack.sandbox.move_deal(deal_id, "contractsent")
        stack.work()
        attempt = stack.history(deal_id)["attempts"][0]
        assert attempt["kit"] == "contract-review"
        assert [f["id"] for f in attempt["findings"]] == ["legal-sized"]
        assert stack.deal(deal_id)["dealstage"] == "qualifiedtobuy"


def test_replay_finishes_a_failed_handoff_once_the_cause_is_fixed(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    token = stack.sandbox.access_token
    with stack.sandbox.lock:
        app_id = stack.sandbox.tokens.pop(token)
    hand_off(stack, deal_id)
    assert stack.history(deal_id)["attempts"][0]["state"] == "failed"
    stack.sandbox.add_token(token, app_id)  # the admin fixed the private app

    assert jobs.replay_failed(stack.runtime, [("hubspot", deal_id)]) == [f"hubspot:{deal_id}:1"]
    stack.work()
    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "ops_created" and attempt["error"] is None
    assert [t["state"] for t in attempt["transitions"]] == [
        "received", "evaluating", "failed", "evaluating", "accepted", "ops_created",
    ]  # fmt: skip
    assert len(stack.sandbox.tickets()) == 1
    assert jobs.replay_failed(stack.runtime) == []  # nothing failed any more


def crowd_deal(stack: Stack, name: str, contacts: list[dict[str, str]]) -> str:
    domain = f"{name.lower()}.example"
    return stack.sandbox.create_deal(
        {"dealname": name, "pipeline": "default", "dealstage": "contractsent",
         "amount": "5000", "plan_tier": "pro", "kickoff_date": KICKOFF},
        company={"name": name, "domain": domain},
        contacts=[{"email": f"person{i}@{domain}"} for i in range(60)] + contacts,
        line_items=[{"name": "Seat", "quantity": "5", "price": "1000"}],
    )  # fmt: skip


def test_a_deal_with_many_contacts_without_a_role_settles(stack: Stack) -> None:
    # Most real contacts have no role; a few dozen once made evaluation blow up.
    with_billing = crowd_deal(
        stack, "Crowd", [{"email": "ap@crowd.example", "contact_role": "billing"}]
    )
    without = crowd_deal(stack, "Throng", [])
    stack.sandbox.move_deal(with_billing, "closedwon")
    hand_off(stack, without)

    assert stack.deal(with_billing)["fullkit_status"] == "accepted"
    returned = stack.deal(without)
    assert returned["fullkit_status"] == "returned"
    assert "Add a billing contact with an email address" in returned["fullkit_missing"]
