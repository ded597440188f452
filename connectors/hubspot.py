"""HubSpot CRM connector (stub: being written)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.packet import Packet
from connectors import register_crm
from connectors.base import Acceptance, CrmConnector, PushBack


@register_crm
class HubSpotConnector(CrmConnector):
    name = "hubspot"

    def fetch_packets(self, deal_ids: Sequence[str]) -> dict[str, Packet]:
        raise NotImplementedError

    def create_return_tasks(
        self, items: Sequence[PushBack], *, may_exist: bool = False
    ) -> dict[str, str]:
        raise NotImplementedError

    def write_returns(self, items: Sequence[PushBack]) -> None:
        raise NotImplementedError

    def write_acceptances(self, items: Sequence[Acceptance]) -> None:
        raise NotImplementedError
