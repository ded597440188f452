"""Ops target: a HubSpot ticket (stub: being written)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from connectors import register_target
from connectors.base import OpsRequest, OpsResult, OpsTarget


@register_target
class HubSpotTicketTarget(OpsTarget):
    name = "hubspot_ticket"
    option_keys: ClassVar[frozenset[str]] = frozenset({"pipeline", "stage"})

    def create(self, requests: Sequence[OpsRequest]) -> dict[str, OpsResult]:
        raise NotImplementedError
