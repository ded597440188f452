"""`fullkit kit check`: one deal against the kits, read-only, told requirement by requirement.

The deal comes from a file (the canonical packet as JSON) or live from the CRM through the
same connector the worker uses; nothing is written to the CRM or the ledger either way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from bridge.evaluator import applicable, evaluate, needs, select_kit
from bridge.rules import Kit, Requirement, Rules, schema_for
from bridge.settings import Settings
from kernel.packet import Finding, Packet

PACKET_LISTS = {"contacts": "contact", "line_items": "line_item", "attachments": "attachment"}


class DealUnavailable(Exception):
    """A live deal could not be read; the message is one line and carries no secret."""


@dataclass(frozen=True)
class KitCheck:
    packet: Packet
    kit: Kit
    missing: list[Finding]
    passed: list[Requirement]
    not_applicable: list[Requirement]  # their `when` was false for this deal
    stage: str | None = None  # the deal's canonical stage, when read live

    @property
    def complete(self) -> bool:
        return not self.missing


def check_deal(rules: Rules, packet: Packet, today: dt.date) -> KitCheck | None:
    """The kit the deal would be judged by and each requirement's outcome; None: no kit."""
    stage = _canonical_stage(rules, packet)
    kit = select_kit(_candidate_kits(rules, stage), packet, today)
    if kit is None:
        return None
    missing = evaluate(kit, packet, today)
    applying = applicable(kit, packet, today)
    failed = {finding.requirement_id for finding in missing}
    applying_ids = {req.id for req in applying}
    return KitCheck(
        packet=packet,
        kit=kit,
        missing=missing,
        passed=[req for req in applying if req.id not in failed],
        not_applicable=[req for req in kit.requirements if req.id not in applying_ids],
        stage=stage,
    )


def no_kit_reason(rules: Rules, packet: Packet) -> str:
    """Why no kit applies, in one line: each candidate kit and the condition it has."""
    stage = _canonical_stage(rules, packet)
    kits = [kit for kit in _candidate_kits(rules, stage) if kit.crm in (None, packet.crm)]
    if not kits:
        return f"no kit is for crm {packet.crm}"
    conditions = "; ".join(f"{kit.id} only when {_source(kit.applies_when)}" for kit in kits)
    return f"no kit applies to {describe_deal(packet, stage)}: {conditions}"


def _canonical_stage(rules: Rules, packet: Packet) -> str | None:
    mapping = rules.mappings.get(packet.crm)
    if mapping is None or packet.stage_ref is None:
        return None
    return mapping.canonical_stage(packet.stage_ref)


def _candidate_kits(rules: Rules, stage: str | None) -> list[Kit]:
    """A deal already in a hand-off stage meets that stage's kits, as the worker judges it;
    any other deal is checked as it would be at its hand-off: the first kit that applies."""
    at_stage = [kit for kit in rules.kits if kit.handoff_stage == stage]
    return at_stage or list(rules.kits)


def describe_deal(packet: Packet, stage: str | None = None) -> str:
    name = packet.name or str(packet.deal.get("name") or "")
    quoted = f' "{name}"' if name else ""
    where = f"{packet.crm}, stage {stage}" if stage else packet.crm
    return f"deal {packet.deal_id}{quoted} ({where})"


def report(check: KitCheck) -> list[str]:
    """The lines `kit check` prints: the deal, the kit, and every requirement's outcome."""
    kit = check.kit
    lines = [f'{describe_deal(check.packet, check.stage)}: kit {kit.id} "{kit.title}"']
    lines.append(f"missing ({len(check.missing)}):")
    lines += [f"  - {finding.requirement_id}: {finding.message}" for finding in check.missing]
    lines.append(f"passed ({len(check.passed)}):")
    lines += [f"  - {req.id}: {_what(req)}" for req in check.passed]
    lines.append(f"not applicable ({len(check.not_applicable)}):")
    lines += [f"  - {req.id}: only when {_source(req.when)}" for req in check.not_applicable]
    if check.complete:
        lines.append(f"kit {kit.id}: complete — ops must accept")
    else:
        lines.append(f"kit {kit.id}: {len(check.missing)} missing — ops cannot accept")
    return lines


def _what(req: Requirement) -> str:
    """What was verified, in the kit's own words (its check or field)."""
    if req.field is not None:
        return f"{req.field} is set"
    return _source(req.check)


def _source(expression: object) -> str:
    # Expressions belong to the evaluator (whose CEL engine may change); all we print of
    # one is the text the kit wrote, which every engine keeps as `source`.
    return str(getattr(expression, "source", expression))


# --- live deals ----------------------------------------------------------------------


def fetch_live(settings: Settings, rules: Rules, crm: str, deal_id: str) -> Packet:
    """The deal as the worker would read it, through the CRM's connector; raises
    DealUnavailable with one line when it cannot."""
    import connectors
    from kernel.errors import ConnectorError

    mapping = rules.mappings.get(crm)
    if mapping is None:
        raise DealUnavailable(f"no field mapping for crm {crm} (mappings/{crm}.yaml)")
    connector_class = connectors.load_all().crms.get(crm)
    if connector_class is None:
        raise DealUnavailable(f"no {crm} connector in this version of Fullkit")
    try:
        connector = connector_class(settings, mapping)
        packet = connector.fetch_packets([deal_id]).get(deal_id)
        if packet is None:
            raise DealUnavailable(f"{crm}:{deal_id}: the CRM has no such deal")
        # Attachments cost calls of their own: read only when the verdict may depend on them.
        kits = _candidate_kits(rules, _canonical_stage(rules, packet))
        if needs("attachments", kits, packet, dt.datetime.now(dt.UTC).date()):
            connector.fill_attachments([packet])
    except ConnectorError as exc:
        raise DealUnavailable(f"cannot read {crm}:{deal_id}: {exc}") from None
    return packet


# --- the deal file format ------------------------------------------------------------

# A complete deal for the shipped kit; fields the mapping lacks are dropped, fields it
# adds get a placeholder of their type, so the example always reads with the user's rules.
_EXAMPLE: dict[str, Any] = {
    "crm": "hubspot",
    "deal_id": "1001",
    "name": "Acme Corp - Enterprise",
    "deal": {
        "name": "Acme Corp - Enterprise",
        "pipeline": "default",
        "amount": 24000,
        "close_date": "2026-11-27T09:30:00Z",
        "plan": "enterprise",
        "kickoff_date": "2026-12-07",
        "sso_provider": "okta",
    },
    "company": {"name": "Acme Corp", "domain": "acme.example", "industry": "COMPUTER_SOFTWARE"},
    "contacts": [
        {
            "email": "ada@acme.example",
            "firstname": "Ada",
            "lastname": "Lane",
            "role": "champion",
            "buying_roles": ["DECISION_MAKER", "BUDGET_HOLDER"],
        },
        {"email": "billing@acme.example", "firstname": "Bo", "role": "billing"},
    ],
    "line_items": [
        {"name": "Platform seat", "quantity": 25, "price": 800},
        {"name": "Onboarding package", "quantity": 1, "price": 4000},
    ],
    "attachments": [
        {
            "name": "Signed order form",
            "extension": "pdf",
            "type": "DOCUMENT",
            "size": 48213,
            "source": "note",
        }
    ],
}

_PLACEHOLDERS: dict[str, Any] = {
    "string": "text",
    "number": 1,
    "date": "2026-12-07",
    "datetime": "2026-11-27T09:30:00Z",
    "bool": True,
    "list": ["a", "b"],
}

TYPE_FORMATS = {
    "string": "text",
    "number": 'a number (1500 or "1500")',
    "date": '"YYYY-MM-DD"',
    "datetime": 'ISO 8601, e.g. "2026-11-27T09:30:00Z"',
    "bool": "true or false",
    "list": '["a", "b"] or "a;b"',
}


def example_deal(rules: Rules) -> dict[str, Any]:
    """A deal file that `kit check --deal` reads with these rules, every mapped field filled."""
    crm = "hubspot" if "hubspot" in rules.mappings else sorted(rules.mappings)[0]
    schema = schema_for(rules.mappings[crm])
    example: dict[str, Any] = {"crm": crm, "deal_id": "1001", "name": _EXAMPLE["name"]}
    for key in ("deal", "company"):
        example[key] = _fill(schema.known(key), _EXAMPLE[key])
    for key, kind in PACKET_LISTS.items():
        first, *rest = _EXAMPLE[key]
        fields = schema.known(kind)
        example[key] = [_fill(fields, first)] + [_fill(fields, item, every=False) for item in rest]
    return example


def _fill(fields: dict[str, str], sample: dict[str, Any], every: bool = True) -> dict[str, Any]:
    """The sample's mapped fields; with `every`, a placeholder for each one it lacks."""
    return {
        name: sample.get(name, _PLACEHOLDERS.get(kind, "text"))
        for name, kind in fields.items()
        if every or name in sample
    }


def example_notes(rules: Rules) -> list[str]:
    """What each part of the deal file means, with the fields these rules' mapping defines."""
    crm = "hubspot" if "hubspot" in rules.mappings else sorted(rules.mappings)[0]
    schema = schema_for(rules.mappings[crm])
    notes = [
        "A deal file for `fullkit kit check --deal FILE.json` (the JSON above):",
        "  crm           which mapping names the fields: mappings/<crm>.yaml (default hubspot)",
        "  deal_id, name shown in the output; optional",
        "  deal, company objects of canonical fields: the names on the left of mappings/"
        f"{crm}.yaml",
        "  contacts, line_items, attachments  lists of such objects (attachments: name)",
        '  an empty value ("" or null) counts as absent, like an empty CRM property',
        f"Fields in mappings/{crm}.yaml, with how to write their values:",
    ]
    for kind in ("deal", "company", "contact", "line_item", "attachment"):
        fields = ", ".join(f"{name} ({kind_})" for name, kind_ in schema.known(kind).items())
        notes.append(f"  {kind}: {fields or '(none)'}")
    types = "; ".join(f"{kind} {fmt}" for kind, fmt in TYPE_FORMATS.items())
    notes.append(f"Types: {types}")
    return notes
