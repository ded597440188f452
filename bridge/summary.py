"""The ops ticket's text: the whole kit, so ops never has to open the deal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from bridge.rules import Kit, Requirement
from kernel.packet import Packet
from kernel.text import inert


def ticket_subject(kit_title: str, packet: Packet) -> str:
    return f"{_own(kit_title)}: {inert(packet.name or packet.deal_id)}"


def ticket_summary(
    kit: Kit,
    packet: Packet,
    owner_email: str | None,
    kickoff: dt.date,
    checked: Iterable[str] | None = None,
) -> str:
    """The ticket body. `checked`: ids of the requirements that applied to this deal.

    Plain text, one line per item: every CRM value in it is made inert (one line, no
    link), so each line that reads like Fullkit's own is Fullkit's own.
    """
    applied = set(checked) if checked is not None else {req.id for req in kit.requirements}
    deal = f"{inert(packet.name or packet.deal_id)} ({inert(packet.crm)} {inert(packet.deal_id)})"
    lines = [
        f"Kit: {_own(kit.title)} ({_own(kit.id)}) — complete, accepted by ops.",
        f"Deal: {deal}",
    ]
    if packet.url:
        lines.append(f"Open the deal: {_own(packet.url)}")  # built by the connector
    lines += [
        f"Ops owner: {_own(owner_email or 'unassigned')}",
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
        return f"  [x] {_own(req.id)}: {_own(req.message)}"
    return f"  [-] {_own(req.id)}: not required for this deal"


def _fields(values: dict[str, Any]) -> list[str]:
    if not values:
        return ["  (none)"]
    return [f"  {inert(name)}: {_text(value)}" for name, value in sorted(values.items())]


def _record(values: dict[str, Any]) -> str:
    return "  - " + ", ".join(f"{inert(k)}: {_text(v)}" for k, v in sorted(values.items()))


def _own(text: str) -> str:
    """Text from the rules folder or Fullkit itself: one line, but its links stay links."""
    return inert(text, links=True)


def _text(value: Any) -> str:
    """A CRM value as one inert line."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "; ".join(inert(v) for v in value)
    return inert(value)
