"""The canonical hand-off packet: what the kit evaluator sees, whatever the CRM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Packet:
    """One deal as CRM-agnostic maps of canonical fields.

    Values are typed by the mapping: `number` → float, `date` → datetime.date,
    `datetime` → timezone-aware datetime.datetime, `bool` → bool, `list` → list[str],
    `string` → str. A field that is absent or empty in the CRM is absent from its map.
    """

    crm: str
    deal_id: str
    deal: dict[str, Any] = field(default_factory=dict)
    company: dict[str, Any] = field(default_factory=dict)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    line_items: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    # CRM-side references, never seen by kit expressions.
    name: str = ""
    stage_ref: str | None = None  # current stage as the CRM names it
    previous_stage_ref: str | None = None  # the stage the deal was in before its current one
    owner_ref: str | None = None  # the CRM user who owns the deal
    # Who that user is, as the CRM names them when the deal was read: people read names,
    # not ids. Cosmetic: None when the CRM would not say.
    owner_email: str | None = None
    owner_name: str | None = None
    company_ref: str | None = None  # the CRM id of the deal's primary company
    url: str | None = None  # the deal in the CRM's UI


@dataclass(frozen=True)
class Finding:
    """One failing requirement of a kit."""

    requirement_id: str
    path: str  # e.g. "deal.kickoff_date", or the check expression's id when no single field
    message: str
