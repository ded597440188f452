"""The kit evaluator: which kit judges a deal, and every requirement it fails.

It runs the expressions the rules loader compiled (`bridge.expressions`); it sits above
the loader, so the loader never needs it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cel_expr_python import cel

from bridge.expressions import LIMIT_NOTE, LimitExceeded, bound, field_present
from bridge.rules import Kit, Requirement, Rules
from kernel.packet import Finding, Packet


def select_kit(rules_or_kits: Rules | Iterable[Kit], packet: Packet, today: dt.date) -> Kit | None:
    """The first kit (files in name order) for the packet's CRM whose applies_when is true."""
    kits = rules_or_kits if isinstance(rules_or_kits, Iterable) else rules_or_kits.kits
    variables: cel.Activation | None = None
    for kit in kits:
        if kit.crm is not None and kit.crm != packet.crm:
            continue
        if kit.applies_when is None:
            return kit
        if variables is None:
            variables = bound(packet, today)
        try:
            if kit.applies_when.holds(variables):
                return kit
        except LimitExceeded as exc:
            # Neither "no kit" nor the next kit: which kit judges the deal is unknown.
            raise LimitExceeded(f"kit {kit.id}: applies_when {exc}") from None
    return None


def needs(
    variable: str, rules_or_kits: Rules | Iterable[Kit], packet: Packet, today: dt.date
) -> bool:
    """Whether judging the packet may read `variable`, which the packet lacks so far.

    A costly part of a deal (attachments) is read only for the deals whose verdict can
    depend on it: when choosing the kit may read it, or one of the chosen kit's
    requirements that read it applies (or cannot be told not to without it).
    """
    kits = rules_or_kits if isinstance(rules_or_kits, Iterable) else rules_or_kits.kits
    variables: cel.Activation | None = None
    for kit in kits:
        if kit.crm is not None and kit.crm != packet.crm:
            continue
        if kit.chooser_uses(variable):
            return True
        if kit.applies_when is not None:
            if variables is None:
                variables = bound(packet, today)
            try:
                if not kit.applies_when.holds(variables):
                    continue
            except LimitExceeded:
                return True
        if variables is None:
            variables = bound(packet, today)
        return _requirements_need(kit, variable, variables)
    return False


def _requirements_need(kit: Kit, variable: str, variables: cel.Activation) -> bool:
    readers = [req for req in kit.requirements if req.uses(variable)]
    return any(req.when_uses(variable) or _applies(req, variables) for req in readers)


def evaluate(kit: Kit, packet: Packet, today: dt.date) -> list[Finding]:
    """Every failing requirement of the kit, in kit order; empty means the kit is complete."""
    variables = bound(packet, today)
    findings = (_finding(req, packet, variables) for req in kit.requirements)
    return [finding for finding in findings if finding is not None]


def applicable(kit: Kit, packet: Packet, today: dt.date) -> list[Requirement]:
    """The requirements whose `when` holds for this deal (all of them when none has one)."""
    variables = bound(packet, today)
    return [req for req in kit.requirements if _applies(req, variables)]


def _applies(req: Requirement, variables: cel.Activation) -> bool:
    """A `when` that cannot be evaluated is false: the requirement is skipped. One the
    runtime gave up on applies: skipping it would let an unchecked deal through."""
    try:
        return req.when is None or req.when.holds(variables)
    except LimitExceeded:
        return True


def _finding(req: Requirement, packet: Packet, variables: cel.Activation) -> Finding | None:
    """The requirement's finding when it applies and is not met, else None."""
    path = req.field or "check"
    try:
        if req.when is not None and not req.when.holds(variables):
            return None
        if req.field is not None:
            return None if field_present(packet, req.field) else Finding(req.id, path, req.message)
        # A `check` that cannot be evaluated (e.g. an absent field) fails with its message.
        if req.check is not None and req.check.holds(variables):
            return None
    except LimitExceeded:
        return Finding(req.id, path, f"{req.message} {LIMIT_NOTE}")
    return Finding(req.id, path, req.message)
