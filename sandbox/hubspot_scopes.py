"""Which scopes each HubSpot endpoint requires, and HubSpot's 403 when a token lacks one.

One line per route family in `SCOPE_RULES`; the first line whose method and path match
decides. A route with `{otype}` in its path takes the scopes of that object type from
`OBJECT_SCOPES` (`read` or `write`); any other line names its scopes outright. A new
sandbox route needs a line here: `tests/test_sandbox_scopes.py` fails for a route no line
covers, because an unlisted route would let a missing scope go unnoticed until a real
portal refuses it.

HubSpot's 403 says "One or more of the following scopes are required" and lists them. The
sandbox reads that strictly: the token needs every scope on the line, so an app config
that passes here is not refused by HubSpot for want of one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sandbox.hubspot_model import correlation_id, resolve_object_type

SCOPES_URL = "https://developers.hubspot.com/scopes"
READ, WRITE = "read", "write"

# Object type -> (read scopes, write scopes), as HubSpot's API reference lists them.
# Engagements (tasks, notes) ride on the contact scopes; email bodies and their
# attachments also need sales-email-read.
OBJECT_SCOPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "deals": (("crm.objects.deals.read",), ("crm.objects.deals.write",)),
    "companies": (("crm.objects.companies.read",), ("crm.objects.companies.write",)),
    "contacts": (("crm.objects.contacts.read",), ("crm.objects.contacts.write",)),
    "line_items": (("crm.objects.line_items.read",), ("crm.objects.line_items.write",)),
    "tickets": (("tickets",), ("tickets",)),
    "tasks": (("crm.objects.contacts.read",), ("crm.objects.contacts.write",)),
    "notes": (("crm.objects.contacts.read",), ("crm.objects.contacts.write",)),
    "emails": (
        ("crm.objects.contacts.read", "sales-email-read"),
        ("crm.objects.contacts.write", "sales-email-read"),
    ),
}
# Property definitions are schema: deals have their own schema scopes, tickets do not.
SCHEMA_SCOPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "deals": (("crm.schemas.deals.read",), ("crm.schemas.deals.write",)),
    "companies": (("crm.schemas.companies.read",), ("crm.schemas.companies.write",)),
    "contacts": (("crm.schemas.contacts.read",), ("crm.schemas.contacts.write",)),
    "line_items": (("crm.objects.line_items.read",), ("crm.schemas.line_items.write",)),
    "tickets": (("tickets",), ("tickets",)),
    # Task properties ride on the contact scopes, as task records do.
    "tasks": (("crm.objects.contacts.read",), ("crm.objects.contacts.write",)),
}
# Types the sandbox may not model yet, by the ids and names HubSpot's paths accept.
_EXTRA_TYPES = {"0-46": "notes", "note": "notes", "0-49": "emails", "email": "emails"}


@dataclass(frozen=True)
class ScopeRule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    scopes: tuple[str, ...] = ()  # named outright (no {otype} in the path)
    access: str | None = None  # READ or WRITE: the object type's scopes
    schema: bool = False  # property definitions: SCHEMA_SCOPES instead of OBJECT_SCOPES

    def matches(self, method: str, path: str) -> re.Match[str] | None:
        return self.pattern.fullmatch(path) if method in self.methods else None


def _rule(
    methods: str, path: str, *scopes: str, access: str | None = None, schema: bool = False
) -> ScopeRule:
    """`path` with `{name}` for one segment and a trailing `/...` for anything below."""
    regex = re.escape(path).replace(r"/\.\.\.", r"(?:/.*)?")
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
    return ScopeRule(
        frozenset(methods.split("|")), re.compile(regex + "/?"), scopes, access, schema
    )


SCOPE_RULES: tuple[ScopeRule, ...] = (
    # Any valid token may ask what it was granted.
    _rule("POST", "/oauth/v2/private-apps/get/access-token-info"),
    _rule("GET", "/account-info/v3/details", "oauth"),
    _rule("GET", "/crm/v3/owners/...", "crm.objects.owners.read"),
    _rule("GET", "/crm/v3/properties/{otype}/...", access=READ, schema=True),
    _rule("POST|PATCH|DELETE", "/crm/v3/properties/{otype}/...", access=WRITE, schema=True),
    _rule("GET", "/crm/v3/pipelines/{otype}/...", access=READ),
    _rule("GET", "/crm/v3/objects/{otype}/...", access=READ),
    _rule("POST", "/crm/v3/objects/{otype}/search", access=READ),
    _rule("POST", "/crm/v3/objects/{otype}/batch/read", access=READ),
    _rule("POST|PATCH|PUT|DELETE", "/crm/v3/objects/{otype}/...", access=WRITE),
    _rule("GET", "/crm/v4/objects/{otype}/...", access=READ),
    _rule("PUT|DELETE", "/crm/v4/objects/{otype}/...", access=WRITE),
    _rule("POST", "/crm/v4/associations/{otype}/{to}/batch/read", access=READ),
    _rule("POST", "/crm/v4/associations/{otype}/...", access=WRITE),
    # Attachments of notes and emails are files hidden from the file manager.
    _rule("GET", "/files/v3/files/...", "files", "files.ui_hidden.read"),
)


def find_rule(method: str, path: str) -> tuple[ScopeRule, dict[str, str]] | None:
    for rule in SCOPE_RULES:
        match = rule.matches(method.upper(), path)
        if match is not None:
            return rule, match.groupdict()
    return None


def required_scopes(method: str, path: str) -> tuple[str, ...] | None:
    """The scopes a call needs; None for a path no rule covers."""
    found = find_rule(method, path)
    if found is None:
        return None
    rule, args = found
    if rule.access is None:
        return rule.scopes
    table = SCHEMA_SCOPES if rule.schema else OBJECT_SCOPES
    raw = args.get("otype", "")
    kind = resolve_object_type(raw) or _EXTRA_TYPES.get(raw.lower(), raw.lower())
    read, write = table.get(kind, ((f"crm.objects.{kind}.read",), (f"crm.objects.{kind}.write",)))
    return read if rule.access == READ else write


def missing_scopes_body(required: tuple[str, ...]) -> dict[str, Any]:
    """HubSpot's 403 for a token without the scopes a call requires."""
    return {
        "status": "error",
        "message": (
            "This app hasn't been granted all required scopes to make this call. "
            f"Read more about required scopes here: {SCOPES_URL}."
        ),
        "correlationId": correlation_id(),
        "errors": [
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": list(required)},
            }
        ],
        "links": {"scopes": SCOPES_URL},
        "category": "MISSING_SCOPES",
    }


def _every_scope() -> frozenset[str]:
    named = {scope for rule in SCOPE_RULES for scope in rule.scopes}
    for table in (OBJECT_SCOPES, SCHEMA_SCOPES):
        for read, write in table.values():
            named.update(read + write)
    return frozenset(named)


# Every scope a rule above names: for tests of the wire format itself, which act like a
# super admin building a portal rather than like Fullkit's app.
ALL_SCOPES: frozenset[str] = _every_scope()
