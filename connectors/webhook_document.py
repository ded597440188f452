"""The hand-off document the webhook target POSTs: versioned JSON, one per attempt.

Shape (`schema_version` 1; README "The webhook target" documents each key). Values
are data, so the JSON encoder escapes what JSON needs; but receivers render text (a
chat message, a ticket), so every CRM string goes through `kernel.text.inert` as it
would for any ops tool: one line, no control or bidi characters, no clickable
`scheme://` but the deal link Fullkit builds itself. Numbers, booleans and dates stay
typed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
from typing import Any

from kernel.connector import OpsRequest
from kernel.text import inert

SCHEMA_VERSION = 1
DEFAULT_EVENT_TYPE = "handoff.accepted"


def webhook_id(handoff_id: str) -> str:
    """The `webhook-id` of a hand-off's document: the same on every retry, so receivers
    de-duplicate by it, as Standard Webhooks asks. A digest, because the spec forbids
    `.` in it and CRM ids are not ours to constrain; 160 bits cannot collide in practice."""
    digest = hashlib.sha256(f"fullkit handoff {handoff_id}".encode()).digest()[:20]
    return "msg_" + base64.b32encode(digest).decode("ascii").lower()


def document(request: OpsRequest, event_type: str, sent_at: dt.datetime) -> dict[str, Any]:
    """The document of one accepted hand-off."""
    packet = request.packet
    occurred = request.accepted_at or sent_at
    return {
        "type": event_type,
        "timestamp": _instant(occurred),
        "data": {
            "schema_version": SCHEMA_VERSION,
            "handoff_id": request.handoff_id,
            "webhook_id": webhook_id(request.handoff_id),
            "crm": request.crm,
            "deal": {
                "id": request.deal_id,
                "name": inert(packet.name) or None,
                "url": packet.url,  # built by the CRM connector, not typed by a user
                "fields": _fields(packet.deal),
            },
            "kit": {
                "id": request.kit_id,
                "title": inert(request.kit_title, links=True),
                "requirements": [
                    {
                        "id": item.id,
                        "message": inert(item.message, links=True),
                        "status": "satisfied" if item.applied else "not_applicable",
                    }
                    for item in request.requirements
                ],
            },
            "ops": {
                "owner": request.owner_email,
                "expected_kickoff": request.expected_kickoff.isoformat(),
            },
            "company": _fields(packet.company),
            "contacts": [_fields(contact) for contact in packet.contacts],
            "line_items": [_fields(item) for item in packet.line_items],
            "attachments": [_fields(attachment) for attachment in packet.attachments],
            "subject": inert(request.subject, links=True),
            "summary": inert(request.summary, lines=True, links=True),
        },
    }


def encode(body: dict[str, Any]) -> str:
    """The exact text signed and sent: compact, UTF-8, keys in a stable order."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _instant(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    return {inert(name): _value(value) for name, value in sorted(values.items())}


def _value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # JSON has no NaN; a receiver reads "unknown"
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        return _instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    if isinstance(value, dict):
        return _fields(value)
    return inert(value)
