"""Batched hand-offs: many deals per API call, each failure kept to its own deal, and
any number of worker processes sharing the work without doing any of it twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bridge import db, intake, ledger
from bridge.models import Attempt
from bridge.queue import HandoffQueue, connect
from bridge.settings import load_settings
from bridge.valkey import EmbeddedValkey
from sandbox import HubSpotSandbox, start_sandbox
from tests.conftest import ROOT, Backend
from tests.e2e import KICKOFF, Stack, move_together, start_stack

ACCEPTED = ["received", "evaluating", "accepted", "ops_created"]
RETURNED = ["received", "evaluating", "returned"]


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def mixed_deals(stack: Stack, count: int) -> tuple[list[str], list[str]]:
    complete = [stack.complete_deal(f"Whole {n}") for n in range(count)]
    incomplete = [stack.complete_deal(f"Short {n}", amount="0") for n in range(count)]
    return complete, incomplete


def states(stack: Stack, deal_ids: list[str]) -> list[list[str]]:
    return [
        [t["state"] for t in stack.history(deal_id)["attempts"][-1]["transitions"]]
        for deal_id in deal_ids
    ]


def calls(stack: Stack, path: str) -> int:
    return len(stack.sandbox.calls("POST", path))


def test_a_batch_mixing_complete_and_incomplete_deals_shares_each_call(stack: Stack) -> None:
    complete, incomplete = mixed_deals(stack, 4)
    stack.sandbox.reset_calls()
    move_together(stack, complete + incomplete)
    stack.work()

    assert states(stack, complete) == [ACCEPTED] * 4
    assert states(stack, incomplete) == [RETURNED] * 4
    assert len(stack.sandbox.tickets()) == 4
    assert all(len(stack.sandbox.tasks_for_deal(d)) == 1 for d in incomplete)
    assert all(stack.deal(d)["fullkit_status"] == "accepted" for d in complete)
    assert all(stack.deal(d)["dealstage"] == "contractsent" for d in incomplete)
    # Eight deals, one call per step: one read, one ticket create, one task create, and
    # one deal update writing back push-backs and acceptances alike.
    assert calls(stack, "/crm/v3/objects/deals/batch/read") == 1
    assert calls(stack, "/crm/v3/objects/tickets/batch/create") == 1
    assert calls(stack, "/crm/v3/objects/tasks/batch/create") == 1
    assert calls(stack, "/crm/v3/objects/deals/batch/update") == 1
    assert stack.sandbox.calls("PATCH") == []
    assert len(stack.sandbox.calls()) <= 15  # a per-deal path makes about 8 each


def test_a_deal_hubspot_no_longer_has_fails_alone(stack: Stack) -> None:
    complete, incomplete = mixed_deals(stack, 2)
    gone = stack.complete_deal("Gone Co")
    move_together(stack, [*complete, gone, *incomplete])
    stack.sandbox.archive("deals", gone)  # deleted before Fullkit read it: a 207 item error
    stack.work()

    attempt = stack.history(gone)["attempts"][0]
    assert attempt["state"] == "failed"
    assert attempt["error"] == f"PermanentError: the CRM has no deal {gone}"
    assert states(stack, complete) == [ACCEPTED] * 2
    assert states(stack, incomplete) == [RETURNED] * 2
    assert stack.run_scheduled_now() == 0  # nothing left to retry


def test_a_ticket_hubspot_refuses_fails_alone(stack: Stack) -> None:
    complete = [stack.complete_deal(f"Rota {n}") for n in range(4)]
    with stack.sandbox.lock:  # the kit's second ops owner left the company
        ben = next(k for k, o in stack.sandbox.owners.items() if o.email.startswith("ops-ben"))
        del stack.sandbox.owners[ben]
    move_together(stack, complete)
    stack.work()

    attempts = [stack.history(d)["attempts"][0] for d in complete]
    # Round robin: anna, ben, anna, ben. Ben's tickets fail; anna's are made.
    assert [a["state"] for a in attempts] == ["ops_created", "failed"] * 2
    assert all("ops-ben@example.com is not a HubSpot user" in a["error"] for a in attempts[1::2])
    assert len(stack.sandbox.tickets()) == 2


def test_a_retryable_failure_of_one_item_retries_that_item_only(stack: Stack) -> None:
    complete = [stack.complete_deal(f"Flaky {n}") for n in range(4)]
    # The sales owner's name is remembered already: the 503 meets the ops owner's lookup.
    stack.runtime.crm("hubspot").fetch_packets(complete[:1])
    stack.sandbox.fail_next(1, status=503, path_prefix="/crm/v3/owners")
    move_together(stack, complete)
    stack.work()

    first = [stack.history(d)["attempts"][0] for d in complete]
    # Anna's lookup met the 503 for the first ticket only; the second one found her.
    assert [a["state"] for a in first] == ["accepted", "ops_created", "ops_created", "ops_created"]
    assert first[0]["error"].startswith("retrying:")
    assert len(stack.sandbox.tickets()) == 3
    stack.sandbox.reset_calls()

    while stack.run_scheduled_now():
        stack.work()
    assert states(stack, complete) == [ACCEPTED] * 4
    assert len(stack.sandbox.tickets()) == 4
    # The retry carried that one deal: one ticket made alone, no deal read again.
    assert len(stack.sandbox.calls("POST", "/crm/v3/objects/tickets")) == 1
    assert calls(stack, "/crm/v3/objects/deals/batch/read") == 0


# --- three worker processes ------------------------------------------------------------


def _wait_for(check: Any, timeout: float) -> None:
    """Wait for other processes to reach a state; fails the test past the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_three_workers_settle_200_deals_each_exactly_once(backend: Backend, tmp_path: Path) -> None:
    box = HubSpotSandbox(rate_limit=None)
    box.seed_default_portal()
    running = start_sandbox(sandbox=box)
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))},
        "FULLKIT_HOME": str(home),
        "FULLKIT_RULES_DIR": str(ROOT / "kit_rules"),
        "HUBSPOT_ACCESS_TOKEN": box.access_token,
        "HUBSPOT_API_BASE": running.url,
        "HUBSPOT_RATE_LIMIT": "off",
        # Three workers of one process each: the test is about workers sharing a queue.
        "FULLKIT_WORKER_PROCESSES": "1",
    }
    if backend.name == "real":  # CI: this machine's PostgreSQL and Redis, as in production
        env.update({k: str(v) for k, v in backend.env(home).items()})
    settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
    from connectors.hubspot_setup import setup_properties

    setup_properties(settings)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    deals = []
    for n in range(200):
        props = {"dealname": f"Crowd {n}", "pipeline": "default", "dealstage": "contractsent",
                 "amount": "0" if n % 4 == 0 else "900", "kickoff_date": KICKOFF}  # fmt: skip
        deals.append(box.create_deal(
            props, company={"name": f"Crowd {n}", "domain": f"crowd{n}.example"},
            contacts=[{"email": f"bill@crowd{n}.example", "contact_role": "billing"}],
            line_items=[{"name": "Seat", "quantity": "1", "price": "900"}],
            owner_email="sales-sam@example.com",
        ))  # fmt: skip
    logs = [open(tmp_path / f"worker{n}.log", "w") for n in range(3)]  # noqa: SIM115
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for log in logs
    ]
    try:
        _wait_for(
            lambda: all("worker ready" in (tmp_path / f"worker{n}.log").read_text()
                        for n in range(3)), 60,
        )  # fmt: skip
        changes = []
        for deal_id in deals:
            box.move_deal(deal_id, "closedwon")
            moved_at = int(time.time() * 1000)
            changes.append(intake.hubspot_change(int(deal_id), "closedwon", moved_at, 1))
        queue = HandoffQueue(connect(settings))
        assert intake.queue_changes(queue, changes) == 200

        def settled() -> bool:
            with sessions() as session:
                query = select(Attempt.id).where(Attempt.state.in_(ledger.IN_PROGRESS))
                started = session.scalars(select(Attempt.id)).all()
                return len(started) == 200 and not session.scalars(query).first()

        _wait_for(settled, 180)
        assert all(worker.poll() is None for worker in workers)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        for log in logs:
            log.close()

    with sessions() as session:
        attempts = session.scalars(select(Attempt).order_by(Attempt.id)).all()
        paths = {a.deal_id: [t.state for t in a.transitions] for a in attempts}
    engine.dispose()
    returned = {d for n, d in enumerate(deals) if n % 4 == 0}
    # No attempt was worked twice: each went through its states once, in order.
    assert paths == {d: RETURNED if d in returned else ACCEPTED for d in deals}
    tickets = box.tickets()
    assert len(tickets) == 150
    assert {t["properties"]["fullkit_handoff_id"] for t in tickets} == {
        f"hubspot:{d}:1" for d in deals if d not in returned
    }
    assert all(len(box.tasks_for_deal(d)) == 1 for d in returned)
    said = [(tmp_path / f"worker{n}.log").read_text() for n in range(3)]
    assert not any("Traceback" in text for text in said)
    # Two batches of 100: the first one's worker queued the second for another worker.
    assert sum("event='attempt'" in text for text in said) >= 2
    running.stop()
    if "REDIS_URL" not in env:
        EmbeddedValkey(home).stop()


def test_an_ops_tool_refusing_the_token_leaves_the_batchs_push_backs_alone(stack: Stack) -> None:
    complete, incomplete = mixed_deals(stack, 2)
    # The sales owner's name is remembered already: the 401 meets the ops owner's lookup.
    stack.runtime.crm("hubspot").fetch_packets(complete[:1])
    stack.sandbox.fail_next(1, status=401, path_prefix="/crm/v3/owners")
    move_together(stack, complete + incomplete)
    stack.work()

    # The ticket side stops for a human (auth); the push-backs of the same batch go out.
    assert [stack.history(d)["attempts"][0]["state"] for d in complete] == ["failed"] * 2
    assert states(stack, incomplete) == [RETURNED] * 2
    assert all(stack.deal(d)["dealstage"] == "contractsent" for d in incomplete)
    assert all(len(stack.sandbox.tasks_for_deal(d)) == 1 for d in incomplete)
    assert stack.sandbox.tickets() == []
