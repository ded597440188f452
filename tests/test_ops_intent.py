"""The core records the intent to open an ops ticket before asking the target, so a
target with no unique key is told, on the retry, that its first try may have landed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connectors.registry import registry
from kernel.connector import OpsRequest, OpsResult, OpsTarget
from kernel.errors import RetryableError
from tests.conftest import ROOT
from tests.e2e import Stack, move_together, start_stack


class LossyTarget(OpsTarget):
    """An ops tool without a unique key whose first answer is lost after the create."""

    name = "lossy"
    made: ClassVar[list[str]] = []  # hand-off ids, one per document the tool holds
    calls: ClassVar[list[bool]] = []  # may_exist of each create
    lose_next: ClassVar[int] = 0

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        type(self).calls.append(may_exist)
        done = {}
        for request in requests:
            if not (may_exist and request.handoff_id in self.made):
                self.made.append(request.handoff_id)  # no lookup: a second document
            ref = str(self.made.index(request.handoff_id) + 1)
            done[request.handoff_id] = OpsResult(ref, f"https://ops.example/doc/{ref}")
        if type(self).lose_next > 0:
            type(self).lose_next -= 1
            raise RetryableError("lossy: the connection ended before the answer")
        return done


@pytest.fixture
def stack(make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setitem(registry.targets, "lossy", LossyTarget)
    monkeypatch.setattr(LossyTarget, "made", [])
    monkeypatch.setattr(LossyTarget, "calls", [])
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    kit = rules / "kits" / "10-new-customer.yaml"
    old = '  target: hubspot_ticket\n  pipeline: "0"\n  stage: "1"\n'
    kit.write_text(kit.read_text().replace(old, "  target: lossy\n"))
    yield from start_stack(lambda **kw: make_settings(FULLKIT_RULES_DIR=str(rules), **kw))


def test_a_create_whose_answer_was_lost_is_retried_with_may_exist_and_makes_one(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LossyTarget, "lose_next", 1)
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    while stack.run_scheduled_now():
        stack.work()

    assert LossyTarget.calls == [False, True]
    assert LossyTarget.made == [f"hubspot:{deal_id}:1"]
    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "ops_created"
    assert attempt["ops_link"] == "https://ops.example/doc/1"
    assert stack.deal(deal_id)["fullkit_ops_link"] == "https://ops.example/doc/1"


def test_a_first_create_is_not_told_that_anything_may_exist(stack: Stack) -> None:
    deal_id = stack.complete_deal()
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    assert LossyTarget.calls == [False]
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"


class DownTarget(OpsTarget):
    """An ops tool that is down for the whole call (a 503, a refused token)."""

    name = "down"
    calls: ClassVar[int] = 0

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        type(self).calls += 1
        raise RetryableError("down: 503 Service Unavailable")


@pytest.fixture
def two_targets(
    make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """Enterprise deals go to a tool that is down, the others to the lossy one."""
    monkeypatch.setitem(registry.targets, "lossy", LossyTarget)
    monkeypatch.setitem(registry.targets, "down", DownTarget)
    monkeypatch.setattr(LossyTarget, "made", [])
    monkeypatch.setattr(LossyTarget, "calls", [])
    monkeypatch.setattr(DownTarget, "calls", 0)
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    kit = rules / "kits" / "10-new-customer.yaml"
    old = '  target: hubspot_ticket\n  pipeline: "0"\n  stage: "1"\n'
    kit.write_text(kit.read_text().replace(old, "  target: lossy\n"))
    (rules / "kits" / "05-enterprise.yaml").write_text(
        "kit: enterprise\ntitle: Enterprise onboarding\ncrm: hubspot\n"
        "applies_when: 'deal.plan == \"enterprise\"'\nhandoff_stage: closedwon\n"
        "ops:\n  target: down\nrequirements: []\n"
    )
    yield from start_stack(lambda **kw: make_settings(FULLKIT_RULES_DIR=str(rules), **kw))


@pytest.mark.parametrize("down_first", [True, False])
def test_one_target_down_leaves_another_targets_tickets_of_the_batch_made_once(
    two_targets: Stack, down_first: bool
) -> None:
    stack = two_targets
    fine = stack.complete_deal("Fine Co")
    big = stack.complete_deal("Big Co", plan_tier="enterprise")
    move_together(stack, [big, fine] if down_first else [fine, big])
    stack.work()

    assert DownTarget.calls == 1
    assert LossyTarget.calls == [False]  # made once, never looked up again
    assert LossyTarget.made == [f"hubspot:{fine}:1"]
    assert stack.history(fine)["attempts"][0]["state"] == "ops_created"
    waiting = stack.history(big)["attempts"][0]
    assert waiting["state"] == "accepted"
    assert "503" in waiting["error"]
