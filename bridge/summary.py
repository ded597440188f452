"""The ops ticket's text: the whole kit, so ops never has to open the deal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from bridge.rules import Kit, Requirement
from kernel.packet import Packet


def ticket_subject(kit_title: str, packet: Packet) -> str:
    return f"{kit_title}: {packet.name or packet.deal_id}"


def ticket_summary(
    kit: Kit,
    packet: Packet,
    owner_email: str | None,
    kickoff: dt.date,
    checked: Iterable[str] | None = None,
) -> str:
    """The ticket body. `checked`: ids of the requirements that applied to this deal."""
    applied = set(checked) if checked is not None else {req.id for req in kit.requirements}
    lines = [
        f"Kit: {kit.title} ({kit.id}) — complete, accepted by ops.",
        f"Deal: {packet.name or packet.deal_id} ({packet.crm} {packet.deal_id})",
    ]
    if packet.url:
        lines.append(f"Open the deal: {packet.url}")
    lines += [
        f"Ops owner: {owner_email or 'unassigned'}",
        f"Expected kickoff: {kickoff.isoformat()}",
        "",
        "Checked requirements:",
        *(_requirement_line(req, req.id in applied) for req in kit.requirements),
        "",
        "Deal:",
        *_fields(packet.deal),
        "Company:",
        *_fields(packet.company),
        "Contacts:",
        *(_record(contact) for contact in packet.contacts),
        "Line items:",
        *(_record(item) for item in packet.line_items),
    ]
    if packet.attachments:
        lines += ["Attachments:", *(_record(a) for a in packet.attachments)]
    return "\n".join(lines)


def _requirement_line(req: Requirement, applied: bool) -> str:
    if applied:
        return f"  [x] {req.id}: {req.message}"
    return f"  [-] {req.id}: not required for this deal"


def _fields(values: dict[str, Any]) -> list[str]:
    if not values:
        return ["  (none)"]
    return [f"  {name}: {_text(value)}" for name, value in sorted(values.items())]


def _record(values: dict[str, Any]) -> str:
    return "  - " + ", ".join(f"{k}: {_text(v)}" for k, v in sorted(values.items()))


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)
