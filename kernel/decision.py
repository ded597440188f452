"""What evaluation decided about one attempt; every later step acts on it alone.

The decision keeps the packet it judged (a canonical snapshot, in the deal-file format of
`fullkit kit check --deal`) so that a ticket or push-back written after a retry, a crash
or a replay describes the deal as it was judged, not as it is by then, and so that a
backtest can judge the same packet again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from kernel.packet import Finding, Packet

ACCEPTED, RETURNED = "accepted", "returned"
OUTCOMES = (ACCEPTED, RETURNED)
# A deal no kit applied to keeps what was judged too, so that a backtest sees a new kit
# that would now apply. Its stored record has no kit (kit id "") and no findings; it is
# never acted on, so it is no Decision.
NO_KIT = "no_kit"


@dataclass(frozen=True)
class Decision:
    kit_id: str
    outcome: str  # ACCEPTED or RETURNED
    findings: tuple[Finding, ...]  # kit order; empty when accepted
    judged_on: dt.date  # the `today` the kit's expressions saw
    # The CRM-side references the later steps need; the snapshot holds only what kits see.
    owner_ref: str | None  # the deal owner, who gets the push-back task
    company_ref: str | None  # the primary company the ticket is associated with
    deal_url: str | None
    return_stage_ref: str | None  # where a returned deal goes; None when accepted
    # None only for decisions made before Fullkit kept them (backfilled by migration
    # `decision`): the requirements that applied and the judged packet were not recorded.
    applied: tuple[str, ...] | None  # ids of the kit's requirements that applied
    snapshot: dict[str, Any] | None  # the judged packet as canonical JSON
    digest: str | None  # sha256 of the snapshot's canonical text
    # The deal owner as people know them (None before Fullkit kept it, or when the CRM
    # would not say): what reports and the console show instead of the CRM id.
    owner_email: str | None = None
    owner_name: str | None = None

    @classmethod
    def judged(
        cls,
        kit_id: str,
        packet: Packet,
        findings: list[Finding],
        applied: list[str],
        judged_on: dt.date,
        return_stage_ref: str | None,
    ) -> Decision:
        snapshot = packet_snapshot(packet)
        return cls(
            kit_id=kit_id,
            outcome=RETURNED if findings else ACCEPTED,
            findings=tuple(findings),
            judged_on=judged_on,
            owner_ref=packet.owner_ref,
            company_ref=packet.company_ref,
            deal_url=packet.url,
            return_stage_ref=return_stage_ref if findings else None,
            applied=tuple(applied),
            snapshot=snapshot,
            digest=snapshot_digest(snapshot),
            owner_email=packet.owner_email,
            owner_name=packet.owner_name,
        )

    @property
    def missing(self) -> tuple[str, ...]:
        """The findings' messages, kit order: what sales is told to add."""
        return tuple(finding.message for finding in self.findings)


def packet_snapshot(packet: Packet) -> dict[str, Any]:
    """The packet's canonical part as JSON values, readable by `kit check --deal`."""
    return {
        "crm": packet.crm,
        "deal_id": packet.deal_id,
        "name": packet.name,
        "deal": _fields(packet.deal),
        "company": _fields(packet.company),
        "contacts": [_fields(contact) for contact in packet.contacts],
        "line_items": [_fields(item) for item in packet.line_items],
        "attachments": [_fields(attachment) for attachment in packet.attachments],
    }


def snapshot_digest(snapshot: dict[str, Any]) -> str:
    """sha256 over sorted keys and no whitespace: equal packets, equal digests, on any host."""
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _value(value) for name, value in values.items()}


def _value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # JSON has no NaN or infinity; the deal file reads "nan" back
        # 24000.0 and 24000 are one number to a kit; one spelling keeps the digest stable.
        return int(value) if value.is_integer() else value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    if isinstance(value, dict):
        return _fields(value)
    if isinstance(value, int | str):
        return value
    return str(value)
