"""Webhook receivers: verify, parse, queue. They never call a CRM and know no kits.

Each CRM registers its receivers here; the app mounts them and hands each CRM the one
thing it needs from the rules: the set of hand-off stages (as that CRM names them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Blueprint
from werkzeug.utils import import_string

if TYPE_CHECKING:
    from bridge.rules import Rules
    from kernel.settings import Section


@dataclass(frozen=True)
class Receiver:
    crm: str
    # "module:attribute" of each blueprint, imported only when an app mounts it.
    blueprints: tuple[str, ...]
    settings: str  # "module:attribute" of the receiver's own settings class (a Section)


RECEIVERS: dict[str, Receiver] = {
    receiver.crm: receiver
    for receiver in (
        Receiver(
            "hubspot",
            ("bridge.receivers.hubspot:blueprint",),
            "bridge.receivers.hubspot_settings:HubSpotReceiverSettings",
        ),
        Receiver(
            "salesforce",
            ("bridge.receivers.salesforce:blueprint",),
            "bridge.receivers.salesforce_settings:SalesforceReceiverSettings",
        ),
    )
}


def blueprints() -> Iterator[Blueprint]:
    for receiver in RECEIVERS.values():
        for path in receiver.blueprints:
            blueprint: Blueprint = import_string(path)
            yield blueprint


def settings_classes() -> list[type[Section]]:
    return [import_string(receiver.settings) for receiver in RECEIVERS.values()]


def watched_stages(rules: Rules) -> dict[str, frozenset[str]]:
    """Per CRM with a receiver, the stages whose changes are hand-offs."""
    return {crm: frozenset(rules.handoff_stage_refs(crm)) for crm in RECEIVERS}
