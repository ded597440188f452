"""The rules folder: the shipped one is valid, and every kind of mistake is reported
with `file:line: path:` — all of them at once."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

import connectors
from bridge.rules import Problem, Rules, RulesError, load_rules, packet_from_json

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
HUBSPOT_MAPPING = (REPO / "kit_rules" / "mappings" / "hubspot.yaml").read_text()
SALESFORCE_MAPPING = """\
crm: salesforce
stages:
  contractsent: Negotiation/Review
  closedwon: Closed Won
deal:
  amount: {property: Amount, type: number}
contact:
  email: Email
"""

# A valid kit; tests break one thing at a time. Line numbers matter to the assertions.
GOOD_KIT = """\
kit: starter
title: Starter onboarding
crm: hubspot
handoff_stage: closedwon
ops:
  target: hubspot_ticket
requirements:
  - id: amount
    check: 'deal.amount > 0'
    message: Amount above zero
"""


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems name files relative to the current directory; tests work where they write."""
    monkeypatch.chdir(tmp_path)


def write_rules(root: Path, kits: dict[str, str], mappings: dict[str, str] | None = None) -> Path:
    folder = root / "rules"
    for sub, files in (("kits", kits), ("mappings", mappings or {"hubspot": HUBSPOT_MAPPING})):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / sub / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(folder, connectors.load_all())
    return [str(problem) for problem in info.value.problems]


def kit_problems(tmp_path: Path, kit_yaml: str, **mappings: str) -> list[str]:
    return problems_of(write_rules(tmp_path, {"10-kit": kit_yaml}, mappings or None))


def with_requirement(requirement: str) -> str:
    return GOOD_KIT + textwrap.indent(textwrap.dedent(requirement), "  ")


# --- the shipped folder ----------------------------------------------------------------


def test_shipped_rules_folder_is_valid() -> None:
    rules = load_rules(REPO / "kit_rules")

    kit = rules.kit_by_id("new-customer")
    assert kit is not None and kit.crm == "hubspot"
    assert [r.id for r in kit.requirements] == [
        "amount",
        "billing-contact",
        "kickoff-date",
        "sso-provider",
        "line-items",
        "company-domain",
        "signed-order-form",
    ]
    assert kit.ops.target == "hubspot_ticket"
    assert kit.ops.owners == ("ops-anna@example.com", "ops-ben@example.com")
    assert kit.ops.kickoff_within_days == 5
    assert kit.ops.options == {"pipeline": "0", "stage": "1"}


def test_handoff_stage_refs_are_the_crm_stage_ids_of_kits_for_that_crm(tmp_path: Path) -> None:
    mapping = HUBSPOT_MAPPING.replace("closedwon: closedwon", "closedwon: '93712'")
    rules = load_rules(write_rules(tmp_path, {"10-kit": GOOD_KIT}, {"hubspot": mapping}))

    assert rules.handoff_stage_refs("hubspot") == {"93712"}
    assert rules.handoff_stage_refs("salesforce") == set()


def test_kits_keep_file_name_order(tmp_path: Path) -> None:
    kits = {
        "20-second": GOOD_KIT.replace("kit: starter", "kit: second"),
        "10-first": GOOD_KIT.replace("kit: starter", "kit: first"),
    }
    rules = load_rules(write_rules(tmp_path, kits))

    assert [kit.id for kit in rules.kits] == ["first", "second"]
    assert rules.kit_by_id("nope") is None


def test_kit_defaults(tmp_path: Path) -> None:
    kit = load_rules(write_rules(tmp_path, {"10-kit": GOOD_KIT})).kits[0]

    assert kit.return_stage is None and kit.applies_when is None
    assert kit.ops.owners == () and kit.ops.kickoff_within_days == 5 and kit.ops.options == {}


# --- every problem at once -------------------------------------------------------------


def test_every_problem_in_the_folder_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES / "rules")
    problems = problems_of(FIXTURES / "rules" / "many_problems")

    assert problems == [
        "many_problems/kits/10-broken.yaml:1: title: required key is missing",
        "many_problems/kits/10-broken.yaml:2: titel: unknown key (did you mean 'title'?)",
        "many_problems/kits/10-broken.yaml:4: handoff_stage: unknown stage 'closedwonn' in "
        "mappings/hubspot.yaml (known: contractsent, closedwon)",
        "many_problems/kits/10-broken.yaml:6: ops.target: unknown ops target 'jira_cloud' "
        "(known: hubspot_ticket, jira, salesforce_case)",
        "many_problems/kits/10-broken.yaml:9: requirements[0].check: CEL syntax error at "
        "column 20: unexpected end of expression",
        "many_problems/kits/10-broken.yaml:12: requirements[1].field: unknown deal field "
        "'kickof_date' (known: amount, kickoff_date)",
        "many_problems/kits/20-duplicate.yaml:1: kit: duplicate kit id 'broken' "
        "(also at many_problems/kits/10-broken.yaml:1)",
        "many_problems/kits/20-duplicate.yaml:8: requirements[0].when: CEL type error: "
        "no operator > for (timestamp, string)",
        "many_problems/mappings/hubspot.yaml:5: deal.amount.type: unknown type 'money' "
        "(known: string, number, date, datetime, bool, list)",
    ]


def test_rules_error_lists_one_problem_per_line(tmp_path: Path) -> None:
    folder = write_rules(tmp_path, {"10-kit": "kit: x\n"})
    with pytest.raises(RulesError) as info:
        load_rules(folder)

    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    assert all(line.startswith("rules/kits/10-kit.yaml:1: ") for line in lines)


def test_problem_str_is_file_line_path_message() -> None:
    problem = Problem("kit_rules/kits/a.yaml", 7, "ops.target", "unknown ops target 'x'")

    assert str(problem) == "kit_rules/kits/a.yaml:7: ops.target: unknown ops target 'x'"


# --- YAML and structure ----------------------------------------------------------------


# Each mistake is in the kit's line 5 (`ops:` is line 5 of GOOD_KIT): the line a person
# has to fix, wherever PyYAML noticed it.
YAML_MISTAKES = {
    "unclosed quote": ("ops: 'hubspot_ticket", "runs on to line 9: is its closing quote missing?"),
    "unclosed quote at the end": ("ops: 'hubspot_ticket", "this quoted value is never closed"),
    "unclosed list": ("ops: [hubspot_ticket", "this '[' list is never closed with ']'"),
    "missing colon": ("ops", "a ':' is missing after the key"),
    "tab": ("\tops:", "a tab character; indent with spaces"),
    "indented too deep": ("   pipeline: '0'", "indented deeper than the key above it"),
}


@pytest.mark.parametrize("mistake", YAML_MISTAKES, ids=list(YAML_MISTAKES))
def test_yaml_syntax_error_points_at_the_line_to_fix(tmp_path: Path, mistake: str) -> None:
    broken_line, message = YAML_MISTAKES[mistake]
    lines = GOOD_KIT.splitlines()
    if mistake == "unclosed quote at the end":  # no later quote to close it by accident
        lines = [line.replace("'", "") for line in lines]
    if mistake == "indented too deep":  # a key of `ops` indented past its siblings
        lines.insert(6, broken_line)
        expected_line = 7
    else:
        lines[4] = broken_line
        expected_line = 5
    problems = kit_problems(tmp_path, "\n".join(lines) + "\n")

    assert len(problems) == 1
    assert problems[0].startswith(f"rules/kits/10-kit.yaml:{expected_line}: yaml: YAML syntax")
    assert message in problems[0]


def test_missing_colon_in_a_nested_mapping_points_at_that_line(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("  target: hubspot_ticket", "  target hubspot_ticket\n  stage: '1'")

    problems = kit_problems(tmp_path, kit)

    assert problems == [
        "rules/kits/10-kit.yaml:6: yaml: YAML syntax error: a ':' is missing after the key "
        "(write 'key: value')"
    ]


def test_misaligned_requirement_key_points_at_that_line(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("    message: Amount", "   message: Amount")

    problems = kit_problems(tmp_path, kit)

    assert problems == [
        "rules/kits/10-kit.yaml:10: yaml: YAML syntax error: this line's indentation does not "
        "match the lines above it"
    ]


def test_colon_inside_an_unquoted_message_says_to_quote_it(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("message: Amount above zero", "message: Note: amount above zero")

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:10: yaml: YAML syntax error: a ':' inside an unquoted value; "
        "put the value in quotes"
    ]


def test_empty_file_and_non_mapping_file(tmp_path: Path) -> None:
    folder = write_rules(tmp_path, {"10-empty": "", "20-list": "- a\n- b\n"})

    assert problems_of(folder) == [
        "rules/kits/10-empty.yaml:1: (top level): the file is empty",
        "rules/kits/20-list.yaml:1: (top level): a kit must be a mapping, got a list",
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    problems = kit_problems(tmp_path, GOOD_KIT + "title: Again\n")

    assert problems == ["rules/kits/10-kit.yaml:11: title: duplicate key (first at line 2)"]


def test_unknown_kit_key_with_suggestion(tmp_path: Path) -> None:
    problems = kit_problems(tmp_path, GOOD_KIT + "handoff: closedwon\ncolour: red\n")

    assert problems == [
        "rules/kits/10-kit.yaml:11: handoff: unknown key (did you mean 'handoff_stage'?)",
        "rules/kits/10-kit.yaml:12: colour: unknown key (known keys: kit, title, crm, "
        "applies_when, handoff_stage, return_stage, ops, requirements)",
    ]


def test_unknown_requirement_key(tmp_path: Path) -> None:
    kit = with_requirement("""\
        - id: sso
          field: deal.sso_provider
          mesage: Add SSO
          message: Add SSO
    """)

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:13: requirements[1].mesage: unknown key (did you mean 'message'?)"
    ]


def test_missing_required_kit_keys_are_all_reported(tmp_path: Path) -> None:
    problems = kit_problems(tmp_path, "crm: hubspot\n")

    assert problems == [
        f"rules/kits/10-kit.yaml:1: {key}: required key is missing"
        for key in ("kit", "title", "handoff_stage", "ops", "requirements")
    ]


def test_requirement_needs_message_and_exactly_one_of_check_or_field(tmp_path: Path) -> None:
    kit = with_requirement("""\
        - id: both
          check: 'true'
          field: deal.amount
          message: Both
        - id: neither
        - id: ok
          field: deal.amount
          message: Fine
    """)

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:11: requirements[1]: needs exactly one of 'check' or 'field'",
        "rules/kits/10-kit.yaml:15: requirements[2].message: required key is missing",
        "rules/kits/10-kit.yaml:15: requirements[2]: needs exactly one of 'check' or 'field'",
    ]


def test_wrong_types(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("title: Starter onboarding", "title: [a, b]").replace(
        "  target: hubspot_ticket", "  target: hubspot_ticket\n  kickoff_within_days: soon"
    )
    kit += "return_stage: 42\n"

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:2: title: must be a non-empty string, got a list",
        "rules/kits/10-kit.yaml:7: ops.kickoff_within_days: must be a whole number of "
        "business days (0-365), got str 'soon'",
        "rules/kits/10-kit.yaml:12: return_stage: must be a non-empty string, got int '42'",
    ]


def test_requirements_must_be_a_list(tmp_path: Path) -> None:
    kit = GOOD_KIT.split("requirements:")[0] + "requirements: {id: amount}\n"

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:7: requirements: must be a list of requirements, got a mapping"
    ]


def test_duplicate_kit_ids_across_files(tmp_path: Path) -> None:
    folder = write_rules(tmp_path, {"10-a": GOOD_KIT, "20-b": GOOD_KIT})

    assert problems_of(folder) == [
        "rules/kits/20-b.yaml:1: kit: duplicate kit id 'starter' (also at rules/kits/10-a.yaml:1)"
    ]


def test_duplicate_requirement_ids_within_a_kit(tmp_path: Path) -> None:
    kit = with_requirement("""\
        - id: amount
          field: deal.amount
          message: Again
    """)

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:11: requirements[1].id: duplicate requirement id 'amount' "
        "(first at line 8)"
    ]


# --- CRM, stages, ops ------------------------------------------------------------------


def test_unknown_crm(tmp_path: Path) -> None:
    problems = kit_problems(tmp_path, GOOD_KIT.replace("crm: hubspot", "crm: pipedrive"))

    assert problems == [
        "rules/kits/10-kit.yaml:3: crm: unknown crm 'pipedrive' (known: hubspot, salesforce)"
    ]


def test_known_crm_without_a_mapping(tmp_path: Path) -> None:
    problems = kit_problems(tmp_path, GOOD_KIT.replace("crm: hubspot", "crm: salesforce"))

    assert problems == [
        "rules/kits/10-kit.yaml:3: crm: no field mapping for crm 'salesforce' "
        "(mappings/salesforce.yaml)"
    ]


def test_unknown_ops_target(tmp_path: Path) -> None:
    problems = kit_problems(tmp_path, GOOD_KIT.replace("hubspot_ticket", "hubspot_tickets"))

    assert problems == [
        "rules/kits/10-kit.yaml:6: ops.target: unknown ops target 'hubspot_tickets' "
        "(known: hubspot_ticket, jira, salesforce_case)"
    ]


def test_target_specific_keys_are_validated_by_the_target(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("  target: hubspot_ticket", "  target: hubspot_ticket\n  board: X")

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:7: ops.board: unknown key for target hubspot_ticket"
    ]


def test_ops_needs_a_target_and_owners_are_emails(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("  target: hubspot_ticket", "  owners: [anna@example.com, ben]")

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:6: ops.target: required key is missing",
        "rules/kits/10-kit.yaml:6: ops.owners[1]: 'ben' is not an email address",
    ]


def test_stages_must_exist_in_the_kits_crm_mapping(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("handoff_stage: closedwon", "handoff_stage: won") + (
        "return_stage: contract\n"
    )

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:4: handoff_stage: unknown stage 'won' in mappings/hubspot.yaml "
        "(known: appointmentscheduled, qualifiedtobuy, presentationscheduled, "
        "decisionmakerboughtin, contractsent, closedwon, closedlost)",
        "rules/kits/10-kit.yaml:11: return_stage: unknown stage 'contract' in "
        "mappings/hubspot.yaml (known: appointmentscheduled, qualifiedtobuy, "
        "presentationscheduled, decisionmakerboughtin, contractsent, closedwon, closedlost)",
    ]


def test_kit_without_crm_needs_its_stages_in_every_mapping(tmp_path: Path) -> None:
    kit = GOOD_KIT.replace("crm: hubspot\n", "").replace("closedwon", "presentationscheduled")
    mappings = {"hubspot": HUBSPOT_MAPPING, "salesforce": SALESFORCE_MAPPING}

    assert problems_of(write_rules(tmp_path, {"10-kit": kit}, mappings)) == [
        "rules/kits/10-kit.yaml:3: handoff_stage: unknown stage 'presentationscheduled' in "
        "mappings/salesforce.yaml (known: contractsent, closedwon)",
        "rules/kits/10-kit.yaml:5: ops.target: ops target 'hubspot_ticket' serves only hubspot "
        "deals, but this kit has no `crm` and would also judge salesforce deals; add "
        "`crm: hubspot`",
    ]


def test_kit_without_crm_needs_its_fields_in_every_mapping(tmp_path: Path) -> None:
    kit = with_requirement("""\
        - id: plan
          field: deal.plan
          message: Plan
    """).replace("crm: hubspot\n", "")
    mappings = {"hubspot": HUBSPOT_MAPPING, "salesforce": SALESFORCE_MAPPING}

    assert problems_of(write_rules(tmp_path, {"10-kit": kit}, mappings)) == [
        "rules/kits/10-kit.yaml:5: ops.target: ops target 'hubspot_ticket' serves only hubspot "
        "deals, but this kit has no `crm` and would also judge salesforce deals; add "
        "`crm: hubspot`",
        "rules/kits/10-kit.yaml:11: requirements[1].field: unknown deal field 'plan' "
        "(known: amount) [crm salesforce]",
    ]


# --- CEL -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("deal.amount >", "CEL syntax error at column 14: unexpected end of expression"),
        ("deal.amount >> 3", "CEL syntax error at column 14: unexpected '>'"),
        ("contacts.exists(c c)", "CEL syntax error at column 19: unexpected 'c'"),
        ("deal.amount @ 3", "CEL syntax error at column 13: unexpected character '@'"),
    ],
)
def test_cel_syntax_errors(tmp_path: Path, check: str, message: str) -> None:
    kit = with_requirement(f"- {{id: x, check: '{check}', message: X}}\n")

    assert kit_problems(tmp_path, kit) == [
        f"rules/kits/10-kit.yaml:11: requirements[1].check: {message}"
    ]


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ('deal.amount > "0"', "no operator > for (double, string)"),
        ("deal.kickoff_date >= 3", "no operator >= for (timestamp, int)"),
        ('deal.name + 1 == "x"', "no operator + for (string, int)"),
        # A short circuit must not hide a type error from the loader.
        ("false && deal.plan > 3", "no operator > for (string, int)"),
        ("true || contacts.exists(c, c.email > 1)", "no operator > for (string, int)"),
        ("deal.amount", "must be a bool, got double"),
        ("size(deal.amount) > 0", "no overload of size() for (double)"),
        ("deal.amount.cents > 0", "a double has no fields"),
        # Comparing a number with an int literal is fine; what surrounds it is still checked.
        ("deal.amount == 1 ? 1 : 2", "must be a bool, got int"),
        ("deal.amount > 0 && deal.plan", "no operator && for (bool, string)"),
    ],
)
def test_cel_type_errors(tmp_path: Path, check: str, message: str) -> None:
    kit = with_requirement(f"- id: x\n  check: '{check}'\n  message: X\n")

    assert kit_problems(tmp_path, kit) == [
        f"rules/kits/10-kit.yaml:12: requirements[1].check: CEL type error: {message}"
    ]


def test_well_typed_expressions_pass(tmp_path: Path) -> None:
    checks = [
        "deal.amount == 1500",
        "deal.kickoff_date >= today",
        "deal.close_date < today + duration('720h')",
        'contacts.exists(c, "decision_maker" in c.buying_roles)',
        'size(attachments.filter(a, a.name.endsWith(".pdf"))) > 0',
        "line_items.all(li, li.quantity * li.price > 0.0)",
        'crm == "hubspot" && has(company.domain)',
        "type(deal.amount) == double",
        "[1, 2].map(x, x * 2).size() == 2",
        "contacts[0].email != ''",
    ]
    kit = GOOD_KIT + "".join(
        f"  - {{id: c{i}, check: {json.dumps(check)}, message: M}}\n"
        for i, check in enumerate(checks)
    )

    assert len(load_rules(write_rules(tmp_path, {"10-kit": kit})).kits[0].requirements) == 11


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "deal.amout > 0",
            "unknown deal field 'amout' (known: amount, close_date, "
            "kickoff_date, name, pipeline, plan, sso_provider)",
        ),
        (
            'company.website != ""',
            "unknown company field 'website' (known: domain, industry, name)",
        ),
        (
            'contacts.exists(c, c.phone != "")',
            "unknown contact field 'phone' (known: buying_roles, email, firstname, lastname, role)",
        ),
        (
            "line_items.all(li, li.qty > 0)",
            "unknown line_item field 'qty' (known: name, price, quantity)",
        ),
        (
            "attachments.exists(a, a.pages > 0)",
            "unknown attachment field 'pages' (known: extension, name, size, source, type, url)",
        ),
        (
            "contacts[0].phone != ''",
            "unknown contact field 'phone' (known: buying_roles, email, firstname, lastname, role)",
        ),
        (
            "has(deal.sso)",
            "unknown deal field 'sso' (known: amount, close_date, "
            "kickoff_date, name, pipeline, plan, sso_provider)",
        ),
        (
            "opportunity.amount > 0",
            "unknown variable 'opportunity' (known: crm, deal, "
            "company, contacts, line_items, attachments, today)",
        ),
        ("isEmpty(deal.name)", "unknown function 'isEmpty'"),
    ],
)
def test_unknown_fields_variables_and_functions(
    tmp_path: Path, expression: str, message: str
) -> None:
    kit = GOOD_KIT + f"applies_when: {json.dumps(expression)}\n"

    assert kit_problems(tmp_path, kit) == [f"rules/kits/10-kit.yaml:11: applies_when: {message}"]


def test_when_is_checked_like_check(tmp_path: Path) -> None:
    kit = with_requirement("""\
        - id: sso
          when: 'deal.plan == 1'
          field: deal.sso_provider
          message: SSO
    """)

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:12: requirements[1].when: CEL type error: "
        "no operator == for (string, int)"
    ]


def test_field_shorthand_paths(tmp_path: Path) -> None:
    kit = with_requirement("""\
        - {id: a, field: deal.nope, message: A}
        - {id: b, field: contacts.email, message: B}
        - {id: c, field: contacts, message: C}
        - {id: d, field: company.domain, message: D}
    """)

    assert kit_problems(tmp_path, kit) == [
        "rules/kits/10-kit.yaml:11: requirements[1].field: unknown deal field 'nope' "
        "(known: amount, close_date, kickoff_date, name, pipeline, plan, sso_provider)",
        "rules/kits/10-kit.yaml:12: requirements[2].field: must be deal.<field>, "
        "company.<field>, contacts, line_items or attachments",
    ]


# --- mappings --------------------------------------------------------------------------


def test_mapping_problems(tmp_path: Path) -> None:
    mapping = """\
        crm: hubspot
        stages: {closedwon: closedwon}
        deal:
          amount: {property: amount, type: money}
          plan: {type: string}
          tier: {property: tier, kind: string}
          2fa: twofa
        contacts:
          email: email
    """

    assert problems_of(write_rules(tmp_path, {"10-kit": GOOD_KIT}, {"hubspot": mapping})) == [
        "rules/mappings/hubspot.yaml:4: deal.amount.type: unknown type 'money' (known: string, "
        "number, date, datetime, bool, list)",
        "rules/mappings/hubspot.yaml:5: deal.plan.property: required key is missing",
        "rules/mappings/hubspot.yaml:6: deal.tier.kind: unknown key (known keys: property, type)",
        "rules/mappings/hubspot.yaml:7: deal.2fa: a field name must be a letter or _ then "
        "letters, digits or _",
        "rules/mappings/hubspot.yaml:8: contacts: unknown key (did you mean 'contact'?)",
    ]


def test_mapping_crm_must_match_its_file_name(tmp_path: Path) -> None:
    folder = write_rules(
        tmp_path, {"10-kit": GOOD_KIT}, {"hubspot": HUBSPOT_MAPPING, "sf": SALESFORCE_MAPPING}
    )

    assert problems_of(folder) == [
        "rules/mappings/sf.yaml:1: crm: 'salesforce' does not match the file name sf.yaml"
    ]


def test_missing_folder_and_empty_folders(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nowhere") == [
        "nowhere: rules folder not found (set FULLKIT_RULES_DIR)"
    ]
    (tmp_path / "rules").mkdir()
    assert problems_of(tmp_path / "rules") == [
        "rules/kits: no kits found (kits/*.yaml or *.yml)",
        "rules/mappings: no mappings found (mappings/*.yaml or *.yml)",
    ]


# --- which files are read, and how problems name them ---------------------------------


def test_yml_kits_and_mappings_are_read_in_name_order_with_yaml_ones(tmp_path: Path) -> None:
    folder = write_rules(tmp_path, {"20-second": GOOD_KIT.replace("starter", "second")})
    (folder / "kits" / "10-first.yml").write_text(GOOD_KIT.replace("starter", "first"))
    (folder / "mappings" / "hubspot.yaml").rename(folder / "mappings" / "hubspot.yml")

    rules = load_rules(folder)

    assert [kit.id for kit in rules.kits] == ["first", "second"]
    assert set(rules.mappings) == {"hubspot"}


@pytest.mark.parametrize("name", ["30-extra.json", "30-extra.txt", "10-kit.yaml.bak", "old"])
def test_other_files_in_kits_are_refused_by_name(tmp_path: Path, name: str) -> None:
    folder = write_rules(tmp_path, {"10-kit": GOOD_KIT})
    stray = folder / "kits" / name
    stray.mkdir() if name == "old" else stray.write_text(GOOD_KIT)

    problems = problems_of(folder)

    assert len(problems) == 1
    assert problems[0].startswith(f"rules/kits/{name}:1: (top level): ")
    assert "not read: rename it to .yaml or move it out of kits/" in problems[0]


def test_hidden_files_in_kits_are_not_rules(tmp_path: Path) -> None:
    folder = write_rules(tmp_path, {"10-kit": GOOD_KIT})
    (folder / "kits" / ".gitkeep").write_text("")
    (folder / "kits" / ".10-kit.yaml.swp").write_bytes(b"\x00vim swap")

    assert [kit.id for kit in load_rules(folder).kits] == ["starter"]


def test_two_mappings_for_one_crm_are_refused(tmp_path: Path) -> None:
    folder = write_rules(tmp_path, {"10-kit": GOOD_KIT})
    (folder / "mappings" / "hubspot.yml").write_text(HUBSPOT_MAPPING)

    assert problems_of(folder) == [
        "rules/mappings/hubspot.yml:2: crm: a second mapping for crm 'hubspot' "
        "(the first is rules/mappings/hubspot.yaml)"
    ]


def test_problem_paths_open_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_rules(tmp_path / "project", {"10-kit": "kit: x\n"})
    monkeypatch.chdir(tmp_path / "project")

    inside = problems_of(Path("rules"))
    monkeypatch.chdir(tmp_path / "project" / "rules" / "mappings")
    outside = problems_of(folder)

    assert inside[0].startswith("rules/kits/10-kit.yaml:1: ")
    assert outside[0].startswith(f"{folder.resolve()}/kits/10-kit.yaml:1: ")
    for problem, cwd in ((inside[0], tmp_path / "project"), (outside[0], Path.cwd())):
        assert (cwd / problem.split(":")[0]).is_file()


# --- deal files ------------------------------------------------------------------------


def shipped_rules() -> Rules:
    return load_rules(REPO / "kit_rules")


def test_packet_from_json_types_values_by_the_mapping() -> None:
    data = json.loads((FIXTURES / "deals" / "complete.json").read_text())

    packet = shipped_rules().packet_from_json(data)

    assert packet.crm == "hubspot" and packet.deal_id == "1001"
    assert packet.deal["amount"] == 24000.0
    assert packet.deal["kickoff_date"] == dt.date(2026, 12, 7)
    assert packet.deal["close_date"] == dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC)
    assert packet.contacts[0]["buying_roles"] == ["decision_maker", "budget_holder"]
    assert packet.line_items[0]["quantity"] == 25.0


def test_packet_from_json_leaves_empty_values_out() -> None:
    packet = packet_from_json({"deal": {"plan": "", "amount": None}}, shipped_rules().mappings)

    assert packet.deal == {} and packet.crm == "hubspot"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a deal file must hold a JSON object"),
        (
            {"deals": {}},
            "unknown key 'deals' (expected: crm, deal_id, name, deal, company, "
            "contacts, line_items, attachments)",
        ),
        ({"crm": "pipedrive"}, "no field mapping for crm 'pipedrive' (have: hubspot, salesforce)"),
        ({"deal": []}, "deal must be an object"),
        ({"contacts": {}}, "contacts must be a list of objects"),
        (
            {"contacts": [{"phone": "1"}]},
            "contacts[0].phone: not a contact field (known: "
            "buying_roles, email, firstname, lastname, role)",
        ),
        ({"deal": {"amount": "lots"}}, "deal.amount: 'lots' is not a valid number"),
        (
            {"deal": {"kickoff_date": "next week"}},
            "deal.kickoff_date: 'next week' is not a valid date",
        ),
    ],
)
def test_packet_from_json_bad_shapes(data: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        packet_from_json(data, shipped_rules().mappings)

    assert str(info.value) == message


def test_packet_from_json_without_a_mapping_infers_types() -> None:
    packet = packet_from_json(
        {"deal": {"amount": 1500, "kickoff_date": "2026-12-07", "plan": "pro"}}
    )

    assert packet.deal == {"amount": 1500.0, "kickoff_date": dt.date(2026, 12, 7), "plan": "pro"}
