"""The ops ticket tells ops everything the kit checked, so nobody has to open the deal."""

from __future__ import annotations

import datetime as dt
import json

from bridge.evaluator import applicable
from bridge.rules import load_rules, packet_from_json
from bridge.summary import ticket_subject, ticket_summary
from tests.conftest import FIXTURES, ROOT

TODAY = dt.date(2026, 11, 27)


def _ticket(**deal_overrides: object) -> str:
    rules = load_rules(ROOT / "kit_rules")
    data = json.loads((FIXTURES / "deals" / "complete.json").read_text())
    data["deal"].update(deal_overrides)
    packet = packet_from_json(data, rules)
    kit = rules.kits[0]
    checked = [req.id for req in applicable(kit, packet, TODAY)]
    return ticket_summary(kit, packet, "ops-anna@example.com", dt.date(2026, 12, 4), checked)


def test_ticket_lists_requirements_contacts_and_line_items() -> None:
    text = _ticket()
    assert "[x] billing-contact: Add a billing contact with an email address" in text
    assert "billing@acme.example" in text and "role: billing" in text
    assert "Platform seat" in text
    assert "Expected kickoff: 2026-12-04" in text
    assert "Ops owner: ops-anna@example.com" in text


def test_conditional_requirement_that_did_not_apply_is_marked_so() -> None:
    text = _ticket(plan="pro")
    assert "[-] sso-provider: not required for this deal" in text
    assert "[x] sso-provider" not in text


def test_subject_names_kit_and_deal() -> None:
    rules = load_rules(ROOT / "kit_rules")
    data = json.loads((FIXTURES / "deals" / "complete.json").read_text())
    packet = packet_from_json(data, rules)
    assert ticket_subject("New customer onboarding", packet) == (
        "New customer onboarding: Acme Corp - Enterprise"
    )
