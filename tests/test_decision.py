"""The stored decision: a ticket or push-back written after a retry describes the deal as it
was judged, never the deal as it is by then; the judged packet stays readable."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from bridge import db, intake, ledger
from bridge.handoff import Handoffs
from bridge.models import Attempt
from bridge.rules import load_rules
from kernel.decision import Decision, packet_snapshot, snapshot_digest
from kernel.packet import Packet
from sandbox import WriteSource
from tests.conftest import ROOT
from tests.e2e import KICKOFF, Stack, start_stack


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def stored(stack: Stack, deal_id: str) -> Decision:
    with stack.runtime.sessions() as session:
        attempt = ledger.latest_attempt(session, "hubspot", deal_id)
        assert attempt is not None
        decision = ledger.decision_of(attempt)
    assert decision is not None
    return decision


def sales_edits(stack: Stack, deal_id: str, **properties: str) -> None:
    stack.sandbox.update("deals", deal_id, properties, source=WriteSource.user(None))


def retry_until_settled(stack: Stack) -> None:
    while stack.run_scheduled_now():
        stack.work()


def test_ticket_after_a_retry_describes_the_deal_that_was_judged(stack: Stack) -> None:
    deal_id = stack.complete_deal("Acme Corp")
    stack.sandbox.fail_next(1, status=503, path_prefix="/crm/v3/objects/tickets")
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    judged = stored(stack, deal_id)
    assert judged.outcome == "accepted" and judged.findings == ()

    # Between the judgement and the ticket, sales edits the deal.
    sales_edits(stack, deal_id, dealname="Acme Renamed", amount="99", kickoff_date="2027-06-01")
    retry_until_settled(stack)

    ticket = stack.sandbox.tickets()[0]["properties"]
    assert ticket["subject"] == "New customer onboarding: Acme Corp"
    assert "amount: 12000" in ticket["content"]
    assert "Acme Renamed" not in ticket["content"] and "amount: 99" not in ticket["content"]
    assert f"Expected kickoff: {KICKOFF}" in ticket["content"]
    assert stack.deal(deal_id)["fullkit_expected_kickoff"] == KICKOFF
    assert stored(stack, deal_id) == judged
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"


def test_push_back_after_a_retry_returns_what_was_judged(stack: Stack) -> None:
    deal_id = stack.complete_deal("Globex", amount="0", kickoff_date="")
    stack.sandbox.fail_next(1, status=503, path_prefix="/crm/v3/objects/tasks")
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    judged = stored(stack, deal_id)
    assert [f.requirement_id for f in judged.findings] == ["amount", "kickoff-date"]

    # Sales fixes the amount and passes through another stage before the retry runs.
    sales_edits(stack, deal_id, amount="5000")
    stack.sandbox.move_deal(deal_id, "decisionmakerboughtin")
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    retry_until_settled(stack)

    deal = stack.deal(deal_id)
    assert deal["dealstage"] == "contractsent"  # where it came from when it was judged
    assert deal["fullkit_missing"].splitlines() == [
        "Deal amount must be above zero",
        "Set the requested kickoff date",
    ]
    task = stack.sandbox.tasks_for_deal(deal_id)[0]["properties"]
    assert task["hs_task_subject"] == "Hand-off returned: 2 items missing"
    assert "Deal amount must be above zero" in task["hs_task_body"]
    assert len(stack.sandbox.tasks_for_deal(deal_id)) == 1
    attempts = stack.history(deal_id)["attempts"]
    assert [a["state"] for a in attempts] == ["returned"]
    assert [f["id"] for f in attempts[0]["findings"]] == ["amount", "kickoff-date"]
    assert stored(stack, deal_id) == judged


def test_the_decision_keeps_the_judged_packet_for_kit_check(stack: Stack) -> None:
    deal_id = stack.complete_deal("Initech")
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    judged = stored(stack, deal_id)
    assert judged.kit_id == "new-customer"
    assert judged.judged_on == ledger.utcnow().date()
    assert judged.applied == (
        "amount", "billing-contact", "kickoff-date", "line-items", "company-domain",
    )  # fmt: skip
    assert judged.snapshot is not None and judged.digest == snapshot_digest(judged.snapshot)
    packet = load_rules(ROOT / "kit_rules").packet_from_json(judged.snapshot)
    assert packet.name == "Initech"
    assert packet.deal["amount"] == 12000.0
    assert packet.deal["kickoff_date"] == dt.date.fromisoformat(KICKOFF)
    assert {c["email"] for c in packet.contacts} == {"pat@initech.example", "bill@initech.example"}


def test_equal_packets_have_equal_digests() -> None:
    def packet(amount: float, contacts: list[dict[str, Any]]) -> Packet:
        return Packet(
            crm="hubspot",
            deal_id="7",
            name="Acme",
            deal={"amount": amount, "kickoff_date": dt.date(2027, 1, 15), "plan": "pro"},
            contacts=contacts,
        )

    billing = [{"email": "b@acme.example", "role": "billing"}]
    first = snapshot_digest(packet_snapshot(packet(24000.0, billing)))
    assert first == snapshot_digest(packet_snapshot(packet(24000, billing)))
    assert first != snapshot_digest(packet_snapshot(packet(24001.0, billing)))
    assert first != snapshot_digest(packet_snapshot(packet(24000.0, [])))
    assert packet_snapshot(packet(24000.0, billing))["deal"] == {
        "amount": 24000, "kickoff_date": "2027-01-15", "plan": "pro",
    }  # fmt: skip


def test_upgrade_keeps_what_earlier_attempts_decided(make_settings: Any, tmp_path: Path) -> None:
    # A ledger of its own, whatever the test backend: it starts at the first revision.
    settings = make_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'old.sqlite3'}")
    engine = db.make_engine(settings)
    command.upgrade(db.alembic_config(engine), "0001")
    now = ledger.utcnow()
    row = {"crm": "hubspot", "deal_id": "5", "owner": "sales", "owner_since": now,
           "trigger_stage": "closedwon", "trigger_at": now, "task_started": False,
           "retries": 0, "created_at": now, "updated_at": now, "version": 1}  # fmt: skip
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO attempts (crm, deal_id, number, kit_id, state, owner, owner_since,"
                " findings, trigger_stage, trigger_at, return_stage_ref, owner_ref,"
                " task_started, retries, created_at, updated_at, version) VALUES (:crm,"
                " :deal_id, 1, 'new-customer', 'evaluating', :owner, :owner_since, :findings,"
                " :trigger_stage, :trigger_at, 'contractsent', '77', :task_started, :retries,"
                " :created_at, :updated_at, :version)"
            ),
            {**row, "findings": '[{"id": "amount", "path": "deal.amount", "message": "m"}]'},
        )
    db.upgrade(engine)
    with db.session_factory(engine)() as session:
        attempt = session.scalars(sa.select(Attempt)).one()
        decision = ledger.decision_of(attempt)
    assert decision is not None
    assert decision.outcome == "returned" and decision.missing == ("m",)
    assert decision.return_stage_ref == "contractsent" and decision.owner_ref == "77"
    assert decision.snapshot is None

    command.downgrade(db.alembic_config(engine), "0001")
    with engine.connect() as connection:
        old = connection.execute(sa.text("SELECT owner_ref, return_stage_ref FROM attempts"))
        assert old.one() == ("77", "contractsent")
    engine.dispose()


def test_attempts_advanced_together_share_each_crm_call(stack: Stack) -> None:
    """The batched-steps groundwork: one step, one connector call, however many attempts."""
    complete = stack.complete_deal("Umbrella")
    incomplete = stack.complete_deal("Hooli", amount="0")
    ids = []
    for deal_id in (complete, incomplete):
        stack.sandbox.move_deal(deal_id, "closedwon")
        now_ms = int(ledger.utcnow().timestamp() * 1000)
        change = intake.hubspot_change(int(deal_id), "closedwon", now_ms, event_id=1)
        ids.append(ledger.record_stage_change(stack.runtime.sessions, change).attempt_id)
    stack.sandbox.reset_calls()
    with stack.runtime.sessions() as session:
        attempts = [session.get(Attempt, attempt_id) for attempt_id in ids]
        Handoffs(stack.runtime, session, attempts).run()

    assert [a["state"] for a in stack.history(complete)["attempts"]] == ["ops_created"]
    assert [a["state"] for a in stack.history(incomplete)["attempts"]] == ["returned"]
    assert len(stack.sandbox.tickets()) == 1
    assert len(stack.sandbox.tasks_for_deal(incomplete)) == 1
    assert len(stack.sandbox.calls("POST", "/crm/v3/objects/deals/batch/read")) == 1
