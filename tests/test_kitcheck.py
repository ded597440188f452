"""`kit check` judges a deal by the kit the worker would pick, and says so."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from bridge.kitcheck import check_deal, no_kit_reason
from bridge.rules import Rules, load_rules
from kernel.packet import Packet

REPO = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 12, 2)


def two_stage_rules(tmp_path: Path) -> Rules:
    """A kit for deals entering contractsent (files first) and one for closedwon."""
    (tmp_path / "kits").mkdir()
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "hubspot.yaml").write_text(
        (REPO / "kit_rules" / "mappings" / "hubspot.yaml").read_text()
    )
    for name, stage in (("10-legal", "contractsent"), ("20-onboarding", "closedwon")):
        (tmp_path / "kits" / f"{name}.yaml").write_text(
            f"kit: {name}\ntitle: T\napplies_when: 'deal.pipeline == \"default\"'\n"
            f"handoff_stage: {stage}\nops: {{target: hubspot_ticket}}\nrequirements:\n"
            "  - {id: amount, check: 'deal.amount > 0', message: Amount}\n"
        )
    return load_rules(tmp_path)


def deal(stage: str | None, pipeline: str = "default") -> Packet:
    return Packet("hubspot", "7", deal={"pipeline": pipeline, "amount": 5.0}, stage_ref=stage)


def test_a_deal_in_a_handoff_stage_meets_that_stages_kit(tmp_path: Path) -> None:
    rules = two_stage_rules(tmp_path)

    at_closedwon = check_deal(rules, deal("closedwon"), TODAY)
    elsewhere = check_deal(rules, deal("qualifiedtobuy"), TODAY)
    from_a_file = check_deal(rules, deal(None), TODAY)

    assert at_closedwon is not None and at_closedwon.kit.id == "20-onboarding"
    assert at_closedwon.stage == "closedwon" and at_closedwon.complete
    assert elsewhere is not None and elsewhere.kit.id == "10-legal"
    assert from_a_file is not None and from_a_file.kit.id == "10-legal"


def test_no_kit_reason_names_each_candidate_and_its_condition(tmp_path: Path) -> None:
    rules = two_stage_rules(tmp_path)
    packet = deal("closedwon", pipeline="renewals")

    assert check_deal(rules, packet, TODAY) is None
    assert no_kit_reason(rules, packet) == (
        "no kit applies to deal 7 (hubspot, stage closedwon): 20-onboarding only when "
        'deal.pipeline == "default"'
    )
    salesforce = Packet("salesforce", "006")
    hubspot_only = tmp_path / "hubspot-only"
    shutil.copytree(REPO / "kit_rules", hubspot_only)
    (hubspot_only / "kits" / "20-salesforce-new-customer.yaml").unlink()
    assert no_kit_reason(load_rules(hubspot_only), salesforce) == ("no kit is for crm salesforce")
