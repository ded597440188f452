"""HubSpot's vocabulary as the sandbox needs it: object types, association types,
property definitions, value validation, wire formatting and the error shapes.

Everything here is plain data and pure functions; the stateful portal lives in
`sandbox.hubspot`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Object type name -> HubSpot object type id. The v3 paths accept either.
OBJECT_TYPE_IDS: dict[str, str] = {
    "contacts": "0-1",
    "companies": "0-2",
    "deals": "0-3",
    "tickets": "0-5",
    "line_items": "0-8",
    "tasks": "0-27",
    "notes": "0-46",
    "emails": "0-49",
}
SINGULAR: dict[str, str] = {
    "contacts": "contact",
    "companies": "company",
    "deals": "deal",
    "tickets": "ticket",
    "line_items": "line_item",
    "tasks": "task",
    "notes": "note",
    "emails": "email",
}
_ALIASES: dict[str, str] = {
    **{name: name for name in OBJECT_TYPE_IDS},
    **{type_id: name for name, type_id in OBJECT_TYPE_IDS.items()},
    **{singular: name for name, singular in SINGULAR.items()},
    "line-items": "line_items",
    "lineitems": "line_items",
    "lineitem": "line_items",
}
# v3 reads answer associations under these keys (line items famously with a space).
ASSOCIATION_RESULT_KEYS: dict[str, str] = {
    name: ("line items" if name == "line_items" else name) for name in OBJECT_TYPE_IDS
}


def resolve_object_type(raw: str) -> str | None:
    """Canonical plural name for any spelling HubSpot accepts, or None."""
    return _ALIASES.get(raw.lower())


@dataclass(frozen=True)
class AssociationType:
    from_type: str
    to_type: str
    type_id: int
    inverse_id: int
    primary: bool = False
    # A primary association always comes with the unlabeled one, as in HubSpot.
    implies: int | None = None

    @property
    def name(self) -> str:
        base = f"{SINGULAR[self.from_type]}_to_{SINGULAR[self.to_type]}"
        if self.primary:
            return base
        # HubSpot names the unlabeled type "_unlabeled" only where a primary exists.
        has_primary = any(
            a.primary and a.from_type == self.from_type and a.to_type == self.to_type
            for a in ASSOCIATION_TYPES
        )
        return f"{base}_unlabeled" if has_primary else base

    @property
    def label(self) -> str | None:
        return "Primary" if self.primary else None


def _pair(
    a: str, b: str, a_to_b: int, b_to_a: int, primary: tuple[int, int] | None = None
) -> list[AssociationType]:
    out = [AssociationType(a, b, a_to_b, b_to_a), AssociationType(b, a, b_to_a, a_to_b)]
    if primary:
        p_ab, p_ba = primary
        out += [
            AssociationType(a, b, p_ab, p_ba, primary=True, implies=a_to_b),
            AssociationType(b, a, p_ba, p_ab, primary=True, implies=b_to_a),
        ]
    return out


# HubSpot-defined type ids as listed in hubspot-api-client's
# hubspot/crm/association_type.py (HubSpot's own SDK) and the v4 associations docs.
# Only one-directional "primary" exists for X->company; the reverse ids (2, 6, 25)
# are HubSpot's "primary" inverse names and are kept for completeness.
ASSOCIATION_TYPES: list[AssociationType] = [
    *_pair("contacts", "companies", 279, 280, primary=(1, 2)),
    *_pair("deals", "contacts", 3, 4),
    *_pair("deals", "companies", 341, 342, primary=(5, 6)),
    *_pair("contacts", "tickets", 15, 16),
    *_pair("deals", "line_items", 19, 20),
    *_pair("tickets", "companies", 339, 340, primary=(26, 25)),
    *_pair("deals", "tickets", 27, 28),
    *_pair("companies", "tasks", 191, 192),
    *_pair("contacts", "tasks", 203, 204),
    *_pair("deals", "tasks", 215, 216),
    *_pair("tickets", "tasks", 229, 230),
    *_pair("deals", "emails", 209, 210),
    *_pair("deals", "notes", 213, 214),
]
ASSOCIATION_BY_ID: dict[tuple[str, str, int], AssociationType] = {
    (a.from_type, a.to_type, a.type_id): a for a in ASSOCIATION_TYPES
}


def default_association(from_type: str, to_type: str) -> AssociationType | None:
    """The unlabeled type HubSpot uses for "associate with default"."""
    for a in ASSOCIATION_TYPES:
        if a.from_type == from_type and a.to_type == to_type and not a.primary:
            return a
    return None


# ---------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An answer HubSpot gives as an error: status code plus its JSON body."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id(),
            "category": self.category,
            **self.extra,
        }


def correlation_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class PropertyProblem:
    """One entry of HubSpot's "Property values were not valid: [...]" list."""

    name: str
    error: str
    message: str

    def as_wire(self, portal_id: int) -> dict[str, Any]:
        return {
            "isValid": False,
            "message": self.message,
            "error": self.error,
            "name": self.name,
            "localizedErrorMessage": self.message,
            "portalId": portal_id,
        }


def validation_error(problems: list[PropertyProblem], portal_id: int) -> ApiError:
    # HubSpot embeds the problem list as a JSON string inside the message.
    listing = json.dumps([p.as_wire(portal_id) for p in problems], separators=(",", ":"))
    return ApiError(400, "VALIDATION_ERROR", f"Property values were not valid: {listing}")


def not_found(object_id: str) -> ApiError:
    return ApiError(
        404,
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.",
        extra={"context": {"id": [object_id]}},
    )


# ---------------------------------------------------------------------------
# Time


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """HubSpot's timestamp format: UTC, milliseconds, trailing Z."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def epoch_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_instant(raw: str) -> dt.datetime | None:
    """Epoch milliseconds or an ISO 8601 date/datetime, as HubSpot accepts them."""
    text = raw.strip()
    if re.fullmatch(r"-?\d+", text):
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------
# Property definitions

FIELD_TYPES: dict[str, set[str]] = {
    "string": {"text", "textarea", "html", "phonenumber", "file"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox"},
}
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_PROPERTY_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class PropertyDef:
    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    options: list[dict[str, Any]] = field(default_factory=list)
    has_unique_value: bool = False
    hubspot_defined: bool = False
    description: str = ""
    read_only: bool = False
    # Options that live elsewhere (pipelines, owners) rather than in `options`.
    external_options: bool = False
    display_order: int = -1
    created_at: dt.datetime = field(default_factory=now)
    updated_at: dt.datetime = field(default_factory=now)

    @property
    def multi(self) -> bool:
        return self.type == "enumeration" and self.field_type == "checkbox"

    def option_values(self) -> list[str]:
        return [str(o["value"]) for o in self.options if not o.get("hidden", False)]

    def as_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": [
                {
                    "label": o.get("label", o["value"]),
                    "value": o["value"],
                    "displayOrder": o.get("displayOrder", i),
                    "hidden": o.get("hidden", False),
                    **({"description": o["description"]} if "description" in o else {}),
                }
                for i, o in enumerate(self.options)
            ],
            "displayOrder": self.display_order,
            "calculated": False,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.has_unique_value,
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "archived": False,
        }
        return body


def options_from(values: list[str] | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(values or []):
        if isinstance(item, dict):
            out.append({"displayOrder": i, "hidden": False, **item})
        else:
            out.append({"label": item, "value": item, "displayOrder": i, "hidden": False})
    return out


def check_definition(body: dict[str, Any]) -> list[str]:
    """Problems with a property definition as POSTed to the properties API."""
    problems = []
    for key in ("name", "label", "type", "fieldType", "groupName"):
        if not isinstance(body.get(key), str) or not body.get(key):
            problems.append(f"{key} is required")
    if problems:
        return problems
    if not _PROPERTY_NAME.fullmatch(body["name"]):
        problems.append(
            f"Property name {body['name']!r} must start with a lowercase letter and "
            "contain only lowercase letters, digits and underscores"
        )
    allowed = FIELD_TYPES.get(body["type"])
    if allowed is None:
        problems.append(f"Invalid type {body['type']!r}")
    elif body["fieldType"] not in allowed:
        problems.append(f"fieldType {body['fieldType']!r} is not valid for type {body['type']!r}")
    if body["type"] == "enumeration" and not body.get("options"):
        problems.append("Enumeration properties need at least one option")
    return problems


# HubSpot-defined properties every portal has. Pipeline, stage and owner values are
# checked against pipelines and owners rather than an option list.
def _std(
    name: str,
    type_: str,
    field_type: str,
    group: str,
    *,
    options: list[str] | None = None,
    external: bool = False,
    read_only: bool = False,
    unique: bool = False,
) -> PropertyDef:
    return PropertyDef(
        name=name,
        label=name.replace("hs_", "").replace("_", " ").capitalize(),
        type=type_,
        field_type=field_type,
        group_name=group,
        options=options_from(options),
        hubspot_defined=True,
        external_options=external,
        read_only=read_only,
        has_unique_value=unique,
    )


def _system(group: str, created: str = "createdate") -> list[PropertyDef]:
    return [
        _std("hs_object_id", "number", "number", group, read_only=True, unique=True),
        _std(created, "datetime", "date", group, read_only=True),
        _std("hs_lastmodifieddate", "datetime", "date", group, read_only=True),
    ]


BUYING_ROLES = [
    "BUDGET_HOLDER",
    "CHAMPION",
    "DECISION_MAKER",
    "END_USER",
    "INFLUENCER",
    "LEGAL_AND_COMPLIANCE",
    "BLOCKER",
    "OTHER",
]


def standard_properties() -> dict[str, list[PropertyDef]]:
    owner = ("hubspot_owner_id", "enumeration", "select")
    return {
        "deals": [
            _std("dealname", "string", "text", "dealinformation"),
            _std("amount", "number", "number", "dealinformation"),
            _std("dealstage", "enumeration", "radio", "dealinformation", external=True),
            _std("pipeline", "enumeration", "select", "dealinformation", external=True),
            _std("closedate", "datetime", "date", "dealinformation"),
            _std(*owner, "dealinformation", external=True),
            _std(
                "dealtype",
                "enumeration",
                "radio",
                "dealinformation",
                options=["newbusiness", "existingbusiness"],
            ),
            _std("description", "string", "textarea", "dealinformation"),
            *_system("dealinformation"),
        ],
        "companies": [
            _std("name", "string", "text", "companyinformation"),
            _std("domain", "string", "text", "companyinformation"),
            # Real portals make industry an enumeration of ~150 values; a free string
            # keeps demo data simple without accepting anything HubSpot would refuse
            # for the fields Fullkit maps.
            _std("industry", "string", "text", "companyinformation"),
            _std("city", "string", "text", "companyinformation"),
            _std("country", "string", "text", "companyinformation"),
            _std(*owner, "companyinformation", external=True),
            *_system("companyinformation"),
        ],
        "contacts": [
            _std("email", "string", "text", "contactinformation"),
            _std("firstname", "string", "text", "contactinformation"),
            _std("lastname", "string", "text", "contactinformation"),
            _std("phone", "string", "phonenumber", "contactinformation"),
            _std("jobtitle", "string", "text", "contactinformation"),
            _std(
                "hs_buying_role",
                "enumeration",
                "checkbox",
                "contactinformation",
                options=BUYING_ROLES,
            ),
            _std(*owner, "contactinformation", external=True),
            *_system("contactinformation"),
        ],
        "line_items": [
            _std("name", "string", "text", "lineiteminformation"),
            _std("quantity", "number", "number", "lineiteminformation"),
            _std("price", "number", "number", "lineiteminformation"),
            _std("amount", "number", "number", "lineiteminformation"),
            _std("description", "string", "textarea", "lineiteminformation"),
            *_system("lineiteminformation"),
        ],
        "tickets": [
            _std("subject", "string", "text", "ticketinformation"),
            _std("content", "string", "textarea", "ticketinformation"),
            _std("hs_pipeline", "enumeration", "select", "ticketinformation", external=True),
            _std("hs_pipeline_stage", "enumeration", "radio", "ticketinformation", external=True),
            _std(
                "hs_ticket_priority",
                "enumeration",
                "select",
                "ticketinformation",
                options=["LOW", "MEDIUM", "HIGH", "URGENT"],
            ),
            _std(
                "hs_ticket_category",
                "enumeration",
                "checkbox",
                "ticketinformation",
                options=["PRODUCT_ISSUE", "BILLING_ISSUE", "FEATURE_REQUEST", "GENERAL_INQUIRY"],
            ),
            _std(*owner, "ticketinformation", external=True),
            *_system("ticketinformation"),
        ],
        "tasks": [
            _std("hs_task_subject", "string", "text", "taskinformation"),
            _std("hs_task_body", "string", "html", "taskinformation"),
            _std("hs_timestamp", "datetime", "date", "taskinformation"),
            _std(
                "hs_task_status",
                "enumeration",
                "select",
                "taskinformation",
                options=["NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"],
            ),
            _std(
                "hs_task_priority",
                "enumeration",
                "select",
                "taskinformation",
                options=["NONE", "LOW", "MEDIUM", "HIGH"],
            ),
            _std(
                "hs_task_type",
                "enumeration",
                "select",
                "taskinformation",
                options=["TODO", "CALL", "EMAIL"],
            ),
            _std(*owner, "taskinformation", external=True),
            *_system("taskinformation", created="hs_createdate"),
        ],
        # Engagements carry their files as semicolon-separated ids in hs_attachment_ids.
        "notes": [
            _std("hs_note_body", "string", "html", "engagement"),
            _std("hs_timestamp", "datetime", "date", "engagement"),
            _std("hs_attachment_ids", "enumeration", "checkbox", "engagement", external=True),
            _std(*owner, "engagement", external=True),
            *_system("engagement", created="hs_createdate"),
        ],
        "emails": [
            _std("hs_email_subject", "string", "text", "engagement"),
            _std("hs_email_text", "string", "textarea", "engagement"),
            _std(
                "hs_email_direction",
                "enumeration",
                "select",
                "engagement",
                options=["EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"],
            ),
            _std("hs_timestamp", "datetime", "date", "engagement"),
            _std("hs_attachment_ids", "enumeration", "checkbox", "engagement", external=True),
            _std(*owner, "engagement", external=True),
            *_system("engagement", created="hs_createdate"),
        ],
    }


DEFAULT_GROUPS: dict[str, str] = {
    "deals": "dealinformation",
    "companies": "companyinformation",
    "contacts": "contactinformation",
    "line_items": "lineiteminformation",
    "tickets": "ticketinformation",
    "tasks": "taskinformation",
    "notes": "engagement",
    "emails": "engagement",
}

# Properties a read returns when the caller names none (HubSpot's documented defaults).
DEFAULT_READ_PROPERTIES: dict[str, list[str]] = {
    "deals": ["dealname", "amount", "closedate", "pipeline", "dealstage"],
    "companies": ["name", "domain"],
    "contacts": ["firstname", "lastname", "email"],
    "line_items": ["name", "quantity", "price", "amount"],
    "tickets": [
        "content",
        "hs_pipeline",
        "hs_pipeline_stage",
        "hs_ticket_category",
        "hs_ticket_priority",
        "subject",
    ],
    "tasks": ["hs_task_subject", "hs_timestamp", "hs_task_status"],
    "notes": ["hs_note_body", "hs_timestamp"],
    "emails": ["hs_email_subject", "hs_timestamp"],
}

# Properties a create must carry (checked after defaults are filled in).
REQUIRED_ON_CREATE: dict[str, list[str]] = {
    "tickets": ["subject", "hs_pipeline_stage"],
    "tasks": ["hs_timestamp"],
    "notes": ["hs_timestamp"],
    "emails": ["hs_timestamp"],
}


def date_entered_property(stage_id: str) -> str:
    """HubSpot's calculated "Date entered <stage>" deal property (the v2 family)."""
    return f"hs_v2_date_entered_{stage_id}"


def stage_properties(stage_ids: Iterable[str]) -> list[PropertyDef]:
    # HubSpot defines one per stage of every deal pipeline; only HubSpot writes it.
    return [
        _std(date_entered_property(stage), "datetime", "date", "dealinformation", read_only=True)
        for stage in stage_ids
    ]


def created_property(object_type: str) -> str:
    return "hs_createdate" if object_type in ("tasks", "notes", "emails") else "createdate"


def normalize_value(prop: PropertyDef, raw: Any) -> tuple[str | None, PropertyProblem | None]:
    """The stored string for a written value, or the problem HubSpot would report.

    Options for external enumerations (stages, owners) are checked by the caller.
    """
    if raw is None:
        return "", None
    value = raw if isinstance(raw, str) else _stringify(raw)
    if value == "":
        return "", None
    name = prop.name
    if prop.type == "number":
        if not _NUMBER.fullmatch(value):
            return None, PropertyProblem(name, "INVALID_FLOAT", f"{value} was not a valid number.")
        return value, None
    if prop.type == "bool":
        if value.lower() not in ("true", "false"):
            return None, PropertyProblem(
                name, "INVALID_BOOLEAN", f"{value} was not a valid boolean value."
            )
        return value.lower(), None
    if prop.type == "date":
        return _normalize_date(name, value)
    if prop.type == "datetime":
        moment = parse_instant(value)
        if moment is None:
            return None, PropertyProblem(
                name, "INVALID_DATETIME", f"{value} was not a valid datetime."
            )
        return iso(moment), None
    if prop.type == "enumeration" and not prop.external_options:
        allowed = prop.option_values()
        chosen = value.split(";") if prop.multi else [value]
        bad = [v for v in chosen if v not in allowed]
        if bad:
            return None, PropertyProblem(
                name,
                "INVALID_OPTION",
                f"{bad[0]} was not one of the allowed options: {_option_listing(prop)}",
            )
        return value, None
    return value, None


def _stringify(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _normalize_date(name: str, value: str) -> tuple[str | None, PropertyProblem | None]:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            return None, PropertyProblem(name, "INVALID_DATE", f"{value} was not a valid date.")
        return value, None
    if re.fullmatch(r"-?\d+", value):
        moment = dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
        if moment.time() != dt.time(0):
            t = moment.time()
            return None, PropertyProblem(
                name,
                "INVALID_DATE",
                f"{value} is at {t.hour}:{t.minute}:{t.second}.{t.microsecond // 1000} UTC, "
                "not midnight!",
            )
        return moment.date().isoformat(), None
    return None, PropertyProblem(name, "INVALID_DATE", f"{value} was not a valid date.")


def _option_listing(prop: PropertyDef) -> str:
    # Mirrors the protobuf-ish rendering HubSpot puts into INVALID_OPTION messages.
    parts = [
        f'label: "{o.get("label", o["value"])}"\nvalue: "{o["value"]}"\n'
        f"display_order: {o.get('displayOrder', i)}\n"
        f"hidden: {str(o.get('hidden', False)).lower()}\n"
        "read_only: false\n"
        for i, o in enumerate(prop.options)
    ]
    return "[" + ", ".join(parts) + "]"
