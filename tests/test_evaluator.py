"""Kit semantics the SPEC promises: what a deal owner is told is missing, and which kit
applies. Kits here are built from small CEL snippets; the shipped kit is checked too."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.evaluator import evaluate, select_kit
from bridge.evaluator import needs as needs_variable
from bridge.expressions import LIMIT_NOTE, LimitExceeded, compile_expression, field_present
from bridge.rules import Kit, OpsSpec, Requirement, load_rules
from kernel.packet import Finding, Packet

REPO = Path(__file__).resolve().parent.parent
DEALS = Path(__file__).parent / "fixtures" / "deals"
TODAY = dt.date(2026, 11, 27)


def check(req_id: str, expr: str, when: str | None = None) -> Requirement:
    return Requirement(
        req_id,
        f"{req_id} is missing",
        check=compile_expression(expr),
        when=compile_expression(when) if when else None,
    )


def needs(req_id: str, path: str, when: str | None = None) -> Requirement:
    return Requirement(
        req_id, f"{req_id} is missing", field=path, when=compile_expression(when) if when else None
    )


def kit(
    *requirements: Requirement,
    kit_id: str = "k",
    crm: str | None = None,
    applies_when: str | None = None,
) -> Kit:
    return Kit(
        id=kit_id,
        title=kit_id,
        crm=crm,
        applies_when=compile_expression(applies_when) if applies_when else None,
        handoff_stage="closedwon",
        return_stage=None,
        ops=OpsSpec("hubspot_ticket"),
        requirements=requirements,
    )


def packet(crm: str = "hubspot", **maps: Any) -> Packet:
    return Packet(crm=crm, deal_id="1", **maps)


def failing(k: Kit, p: Packet, today: dt.date = TODAY) -> list[str]:
    return [finding.requirement_id for finding in evaluate(k, p, today)]


def passes(expr: str, p: Packet, today: dt.date = TODAY) -> bool:
    return failing(kit(check("x", expr)), p, today) == []


# --- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    ["deal.amount > 0", "deal.amount == 1500", "deal.amount != 1499", "deal.amount >= 1500.0"],
)
def test_number_fields_compare_with_integer_literals(expr: str) -> None:
    assert passes(expr, packet(deal={"amount": 1500.0}))


def test_zero_amount_fails_with_its_message() -> None:
    findings = evaluate(
        kit(check("amount", "deal.amount > 0")), packet(deal={"amount": 0.0}), TODAY
    )

    assert findings == [Finding("amount", "check", "amount is missing")]


# --- dates -----------------------------------------------------------------------------


def test_date_fields_compare_with_today() -> None:
    expr = "deal.kickoff_date >= today"

    assert passes(expr, packet(deal={"kickoff_date": TODAY}))
    assert passes(expr, packet(deal={"kickoff_date": dt.date(2026, 12, 7)}))
    assert not passes(expr, packet(deal={"kickoff_date": dt.date(2026, 11, 26)}))


def test_datetime_fields_are_timestamps_and_today_is_midnight_utc() -> None:
    close = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC)

    assert passes("deal.close_date >= today", packet(deal={"close_date": close}))
    assert passes(
        "deal.close_date - today == duration('9h30m')", packet(deal={"close_date": close})
    )
    assert passes('today == timestamp("2026-11-27T00:00:00Z")', packet())


# --- absent fields ---------------------------------------------------------------------


def test_absent_field_is_not_has_and_a_check_on_it_fails_with_its_message() -> None:
    p = packet(deal={"amount": 10.0})

    assert passes("!has(deal.plan)", p)
    assert evaluate(kit(check("plan", 'deal.plan == "pro"')), p, TODAY) == [
        Finding("plan", "check", "plan is missing")
    ]


def test_empty_values_count_as_absent() -> None:
    p = packet(deal={"plan": "", "tags": [], "sso_provider": "  "})

    assert passes("!has(deal.plan) && !has(deal.tags) && !has(deal.sso_provider)", p)
    assert failing(kit(needs("sso", "deal.sso_provider")), p) == ["sso"]


# --- when / applies_when ---------------------------------------------------------------


def test_requirement_is_skipped_when_its_when_is_false() -> None:
    k = kit(needs("sso", "deal.sso_provider", when='deal.plan == "enterprise"'))

    assert failing(k, packet(deal={"plan": "pro"})) == []
    assert failing(k, packet(deal={"plan": "enterprise"})) == ["sso"]


def test_a_when_that_cannot_be_evaluated_is_false() -> None:
    k = kit(needs("sso", "deal.sso_provider", when='deal.plan == "enterprise"'))

    assert failing(k, packet(deal={})) == []


def test_an_applies_when_that_cannot_be_evaluated_is_false() -> None:
    by_plan = kit(kit_id="by-plan", applies_when='deal.plan == "pro"')
    fallback = kit(kit_id="fallback")

    assert select_kit([by_plan], packet(deal={}), TODAY) is None
    assert select_kit([by_plan, fallback], packet(deal={}), TODAY) is fallback
    assert select_kit([by_plan, fallback], packet(deal={"plan": "pro"}), TODAY) is by_plan


# --- kit selection ---------------------------------------------------------------------


def test_first_matching_kit_in_file_name_order_wins(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    (rules_dir / "kits").mkdir(parents=True)
    (rules_dir / "mappings").mkdir()
    (rules_dir / "mappings" / "hubspot.yaml").write_text(
        (REPO / "kit_rules" / "mappings" / "hubspot.yaml").read_text()
    )
    for name, applies in [("20-any", "true"), ("10-enterprise", 'deal.plan == "enterprise"')]:
        (rules_dir / "kits" / f"{name}.yaml").write_text(
            f"kit: {name}\ntitle: T\napplies_when: '{applies}'\nhandoff_stage: closedwon\n"
            "ops: {target: hubspot_ticket}\nrequirements: []\n"
        )
    rules = load_rules(rules_dir)

    chosen = select_kit(rules, packet(deal={"plan": "enterprise"}), TODAY)
    other = select_kit(rules, packet(deal={"plan": "pro"}), TODAY)

    assert chosen is not None and chosen.id == "10-enterprise"
    assert other is not None and other.id == "20-any"


def test_kits_only_apply_to_their_crm() -> None:
    hubspot_kit = kit(kit_id="hs", crm="hubspot")
    any_crm = kit(kit_id="any")

    assert select_kit([hubspot_kit], packet(crm="salesforce"), TODAY) is None
    assert select_kit([hubspot_kit, any_crm], packet(crm="salesforce"), TODAY) is any_crm
    assert select_kit([hubspot_kit, any_crm], packet(crm="hubspot"), TODAY) is hubspot_kit


def test_crm_variable_is_visible_to_expressions() -> None:
    assert passes('crm == "salesforce"', packet(crm="salesforce"))


# --- CEL's commutative error rules -----------------------------------------------------


def test_exists_finds_a_billing_contact_after_one_without_role() -> None:
    contacts = [{"email": "ceo@acme.example"}, {"role": "billing", "email": "ap@acme.example"}]
    expr = 'contacts.exists(c, c.role == "billing" && has(c.email))'

    assert passes(expr, packet(contacts=contacts))
    assert passes(expr, packet(contacts=list(reversed(contacts))))


def test_exists_is_false_when_no_contact_qualifies_even_with_roleless_contacts() -> None:
    contacts = [{"email": "ceo@acme.example"}, {"role": "billing"}]

    assert not passes(
        'contacts.exists(c, c.role == "billing" && has(c.email))', packet(contacts=contacts)
    )


def test_all_fails_on_a_contact_without_role_unless_another_is_false() -> None:
    roleless = {"email": "ceo@acme.example"}
    # An error in `all` fails the check; a definite false in another element wins instead.
    assert not passes('contacts.all(c, c.role != "")', packet(contacts=[roleless, {"role": "x"}]))
    assert not passes('contacts.all(c, c.role == "x")', packet(contacts=[roleless, {"role": "y"}]))


def test_or_and_and_absorb_errors_in_either_order() -> None:
    p = packet(deal={"plan": "pro"})

    assert passes('deal.sso == "okta" || deal.plan == "pro"', p)
    assert passes('deal.plan == "pro" || deal.sso == "okta"', p)
    assert passes('!(deal.sso == "okta" && deal.plan == "enterprise")', p)


# --- every finding, in order -----------------------------------------------------------


def test_every_failing_requirement_is_reported_in_kit_order() -> None:
    k = kit(
        check("amount", "deal.amount > 0"),
        needs("kickoff", "deal.kickoff_date"),
        check("ok", "true"),
        needs("domain", "company.domain"),
        needs("contacts", "contacts"),
    )

    findings = evaluate(k, packet(deal={"amount": 0.0}), TODAY)

    assert findings == [
        Finding("amount", "check", "amount is missing"),
        Finding("kickoff", "deal.kickoff_date", "kickoff is missing"),
        Finding("domain", "company.domain", "domain is missing"),
        Finding("contacts", "contacts", "contacts is missing"),
    ]


def test_list_fields_are_lists_of_strings() -> None:
    contacts = [{"role": "champion", "buying_roles": ["decision_maker", "budget_holder"]}]
    p = packet(contacts=contacts)

    assert passes('contacts.exists(c, "budget_holder" in c.buying_roles)', p)
    assert passes("size(contacts[0].buying_roles) == 2", p)


def test_line_items_and_attachments() -> None:
    p = packet(
        line_items=[{"name": "Seat", "quantity": 25.0, "price": 800.0}],
        attachments=[{"name": "signed-order-form.pdf"}],
    )

    assert passes("line_items.all(li, li.quantity * li.price >= 20000)", p)
    assert passes('attachments.exists(a, a.name.endsWith(".pdf"))', p)
    assert not passes("size(line_items) > 1", p)


def test_field_shorthand_on_lists_means_at_least_one() -> None:
    assert field_present(packet(contacts=[{"email": "a@b.c"}]), "contacts")
    assert not field_present(packet(), "line_items")
    assert not field_present(packet(deal={"x": "y"}), "deal.x.y")


# --- the shipped kit on fixture deals --------------------------------------------------


def shipped(name: str) -> tuple[Kit, Packet]:
    rules = load_rules(REPO / "kit_rules")
    p = rules.packet_from_json(json.loads((DEALS / name).read_text()))
    chosen = select_kit(rules, p, TODAY)
    assert chosen is not None
    return chosen, p


def test_shipped_kit_accepts_a_complete_deal() -> None:
    chosen, p = shipped("complete.json")

    assert chosen.id == "new-customer"
    assert evaluate(chosen, p, TODAY) == []


def test_shipped_kit_lists_everything_an_incomplete_deal_lacks() -> None:
    chosen, p = shipped("incomplete.json")

    assert [(f.requirement_id, f.message) for f in evaluate(chosen, p, TODAY)] == [
        ("amount", "Deal amount must be above zero"),
        ("billing-contact", "Add a billing contact with an email address"),
        ("kickoff-date", "Set the requested kickoff date"),
        ("sso-provider", "Enterprise deals need the SSO provider"),
        ("line-items", "Add the purchased products as line items"),
        ("company-domain", "Set the company domain on the associated company"),
        ("signed-order-form", "Attach the signed order form to the deal (a note or email)"),
    ]


def test_shipped_kit_does_not_apply_to_other_pipelines() -> None:
    rules = load_rules(REPO / "kit_rules")

    assert select_kit(rules, packet(deal={"pipeline": "renewals"}), TODAY) is None
    assert select_kit(rules, packet(deal={}), TODAY) is None


# --- property: findings are exactly the missing fields ---------------------------------

FIELDS = ("amount", "plan", "kickoff_date", "sso_provider", "close_date")
VALUES: dict[str, Any] = {
    "amount": 1.0,
    "plan": "pro",
    "kickoff_date": dt.date(2026, 12, 1),
    "sso_provider": "okta",
    "close_date": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
}
PROPERTY_KIT = kit(
    *(needs(f"{name}-field", f"deal.{name}") for name in FIELDS),
    *(check(f"{name}-has", f"has(deal.{name})") for name in FIELDS),
)


@settings(max_examples=60, deadline=None)
@given(present=st.sets(st.sampled_from(FIELDS)), blank=st.sets(st.sampled_from(FIELDS)))
def test_findings_are_exactly_the_requirements_whose_fields_are_missing(
    present: set[str], blank: set[str]
) -> None:
    deal = {name: VALUES[name] for name in present}
    deal.update({name: "" for name in blank - present})
    missing = [name for name in FIELDS if name not in present]

    assert failing(PROPERTY_KIT, packet(deal=deal)) == [
        *(f"{name}-field" for name in missing),
        *(f"{name}-has" for name in missing),
    ]


# --- many contacts: linear time, and a budget that fails a check instead of a worker ----

BILLING = 'contacts.exists(c, c.role == "billing" && has(c.email))'


def roleless(count: int) -> list[dict[str, Any]]:
    return [{"email": f"person{i}@acme.example"} for i in range(count)]


def test_hundreds_of_contacts_without_role_and_one_billing_contact_at_the_end() -> None:
    check_billing = compile_expression(BILLING)
    billing = kit(Requirement("billing", "Add a billing contact", check=check_billing))
    last = {"role": "billing", "email": "ap@acme.example"}

    assert evaluate(billing, packet(contacts=[*roleless(500), last]), TODAY) == []
    assert evaluate(billing, packet(contacts=roleless(500)), TODAY) == [
        Finding("billing", "check", "Add a billing contact")
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["none", "billing", "billing-no-email", "champion"]), max_size=60))
def test_exists_agrees_with_python_whatever_the_mix_of_contacts(kinds: list[str]) -> None:
    shapes: dict[str, dict[str, Any]] = {
        "none": {"email": "a@x.example"},
        "billing": {"role": "billing", "email": "b@x.example"},
        "billing-no-email": {"role": "billing"},
        "champion": {"role": "champion", "email": "c@x.example"},
    }

    assert passes(BILLING, packet(contacts=[shapes[k] for k in kinds])) == ("billing" in kinds)


def test_the_shipped_kit_over_a_thousand_contacts_and_line_items() -> None:
    chosen, p = shipped("complete.json")
    billing = next(c for c in p.contacts if c.get("role") == "billing")
    line_item = p.line_items[0]
    p.contacts = [*roleless(1000), billing]
    p.line_items = [dict(line_item) for _ in range(1000)]

    assert evaluate(chosen, p, TODAY) == []

    p.contacts = roleless(1000)
    assert [f.requirement_id for f in evaluate(chosen, p, TODAY)] == ["billing-contact"]


def test_an_expression_over_its_iteration_budget_is_a_finding_that_says_so() -> None:
    # Every pair of contacts: far more iterations than CEL's runtime allows one expression.
    pairs = "contacts.all(a, contacts.all(b, true))"
    k = kit(check("pairs", pairs), needs("sso", "deal.sso_provider", when=pairs))
    many = packet(contacts=roleless(1000))

    # Sales is told the check could not run, not merely that the item is missing; and a
    # `when` the runtime gave up on applies, so an unchecked deal is never let through.
    assert evaluate(k, many, TODAY) == [
        Finding("pairs", "check", f"pairs is missing {LIMIT_NOTE}"),
        Finding("sso", "deal.sso_provider", f"sso is missing {LIMIT_NOTE}"),
    ]
    assert evaluate(k, packet(contacts=roleless(3)), TODAY) == [
        Finding("sso", "deal.sso_provider", "sso is missing")
    ]


def test_an_applies_when_over_its_budget_names_the_kit_instead_of_choosing_another() -> None:
    pairs = "contacts.all(a, contacts.all(b, true))"
    kits = [kit(kit_id="big", applies_when=pairs), kit(kit_id="fallback")]

    assert select_kit(kits, packet(contacts=roleless(3)), TODAY).id == "big"  # type: ignore[union-attr]
    with pytest.raises(LimitExceeded, match="kit big: applies_when"):
        select_kit(kits, packet(contacts=roleless(1000)), TODAY)


ORDER_FORM_CHECK = 'attachments.exists(a, a.name.contains("order form"))'


def test_attachments_are_needed_only_when_a_requirement_reading_them_applies() -> None:
    k = kit(needs("plan", "deal.plan"), check("form", ORDER_FORM_CHECK, 'deal.plan == "ent"'))
    enterprise = packet(deal={"plan": "ent"})

    assert needs_variable("attachments", [k], enterprise, TODAY)
    assert not needs_variable("attachments", [k], packet(deal={"plan": "pro"}), TODAY)
    assert not needs_variable("attachments", [kit(needs("plan", "deal.plan"))], enterprise, TODAY)


@pytest.mark.parametrize(
    "k",
    [
        kit(check("form", ORDER_FORM_CHECK)),
        kit(check("plan", "deal.amount > 0", when="size(attachments) > 0")),
        kit(check("form", ORDER_FORM_CHECK, when="size(attachments) > 2")),
        kit(check("plan", "deal.amount > 0"), applies_when="size(attachments) == 0"),
    ],
    ids=["no-when", "when-reads-them", "check-and-when", "applies-when-reads-them"],
)
def test_attachments_are_needed_when_choosing_or_applying_may_read_them(k: Kit) -> None:
    other_crm = kit(kit_id="other", crm="salesforce")

    assert needs_variable("attachments", [other_crm, k], packet(), TODAY)


def test_attachments_are_not_needed_when_no_kit_applies() -> None:
    k = kit(check("form", ORDER_FORM_CHECK), applies_when='deal.pipeline == "default"')

    assert not needs_variable("attachments", [k], packet(deal={"pipeline": "other"}), TODAY)
