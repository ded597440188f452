"""What `fullkit salesforce check` verifies with the API before a real opportunity trips on it.

* every field Fullkit reads (the mapping's) and writes (the write-back, the push-back Task,
  the Case or custom onboarding object) exists, has a type Fullkit can use and, for a
  write, may be written by this user (field-level security shows in `describe` as
  createable/updateable for the logged-in user);
* the Case object has the external id Fullkit upserts by;
* every ops owner of a `salesforce_case` kit is an active User.

Each problem is one line naming the object and field. The checks only read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.salesforce import KICKOFF, MISSING, OPS_LINK, OPS_OWNER, STATUS
from connectors.salesforce_case import HANDOFF_FIELD, OPPORTUNITY_FIELD, SalesforceCaseTarget
from connectors.salesforce_client import QUERY_ID_LIMIT, SalesforceApi, chunks, id_list, quote
from connectors.salesforce_settings import SalesforceSettings
from kernel.checks import CheckResult, KitLike
from kernel.errors import AuthError, ConnectorError
from kernel.mapping import Mapping
from kernel.settings import SharedSettings

TEXT = frozenset({"string", "textarea", "email", "url", "phone", "picklist", "id", "reference"})
NUMBER = frozenset({"double", "currency", "int", "long", "percent"})
DATE = frozenset({"date", "datetime"})
# What each mapping type can be read from.
MAPPING_TYPES: dict[str, frozenset[str]] = {
    "number": NUMBER,
    "date": DATE,
    "datetime": frozenset({"datetime"}),
    "bool": frozenset({"boolean"}),
}
# The mapping's sections and the object each one reads.
SECTION_OBJECTS = {
    "deal": "Opportunity",
    "company": "Account",
    "contact": "Contact",
    "line_item": "OpportunityLineItem",
}
STATUS_VALUES = ("accepted", "returned")


@dataclass(frozen=True)
class FieldNeed:
    """One field Fullkit uses: `access` is read, create or update; `types` empty: any."""

    object_name: str
    name: str
    access: str
    types: frozenset[str] = frozenset()
    why: str = ""


def needs(mapping: Mapping | None, case_objects: Iterable[str]) -> list[FieldNeed]:
    """Every field Fullkit reads and writes, in the order an admin would fix them."""
    found: list[FieldNeed] = []
    if mapping is not None:
        for section, object_name in SECTION_OBJECTS.items():
            for spec in mapping.fields(section):
                types = MAPPING_TYPES.get(spec.type, frozenset())
                why = f"mapping {section}.{spec.name}"
                found.append(FieldNeed(object_name, spec.property, "read", types, why))
    write_back = "the hand-off write-back"
    found += [
        FieldNeed("Opportunity", "StageName", "update", frozenset({"picklist"}), "push back"),
        FieldNeed("Opportunity", STATUS, "update", frozenset({"picklist"}), write_back),
        FieldNeed("Opportunity", MISSING, "update", frozenset({"textarea"}), write_back),
        FieldNeed("Opportunity", OPS_OWNER, "update", frozenset({"email", "string"}), write_back),
        FieldNeed("Opportunity", OPS_LINK, "update", frozenset({"url", "string"}), write_back),
        FieldNeed("Opportunity", KICKOFF, "update", frozenset({"date"}), write_back),
    ]
    task = "the push-back Task"
    for name, types in (
        ("Subject", TEXT),
        ("Description", frozenset({"textarea"})),
        ("ActivityDate", frozenset({"date"})),
        ("Status", frozenset({"picklist"})),
        ("WhatId", frozenset({"reference"})),
        ("OwnerId", frozenset({"reference"})),
    ):
        found.append(FieldNeed("Task", name, "create", types, task))
    found += [
        FieldNeed("User", "Email", "read", frozenset({"email"}), "finding ops owners"),
        FieldNeed("User", "IsActive", "read", frozenset({"boolean"}), "finding ops owners"),
    ]
    for object_name in dict.fromkeys(case_objects):
        case = f"the ops record ({object_name})"
        text = frozenset({"string"})
        found += [
            FieldNeed(object_name, HANDOFF_FIELD, "create", text, case),
            FieldNeed(object_name, HANDOFF_FIELD, "update", text, case),
            FieldNeed(object_name, OPPORTUNITY_FIELD, "create", frozenset({"reference"}), case),
            FieldNeed(object_name, "OwnerId", "create", frozenset({"reference"}), case),
        ]
        if object_name.lower() == "case":
            found += [
                FieldNeed(object_name, "Subject", "create", TEXT, case),
                FieldNeed(object_name, "Description", "create", frozenset({"textarea"}), case),
                FieldNeed(object_name, "AccountId", "create", frozenset({"reference"}), case),
            ]
        else:
            found.append(FieldNeed(object_name, "Name", "create", TEXT, case))
    return found


def check_org(
    settings: SharedSettings,
    kits: Sequence[KitLike],
    mapping: Mapping | None,
    api: SalesforceApi | None = None,
) -> CheckResult:
    """Describe each object once, then check every need against it, then the ops owners.

    An AuthError leaves (nothing after it would work); any other failure is a problem line.
    """
    api = api or SalesforceApi(settings)
    config = settings.section(SalesforceSettings)
    case_kits = [kit for kit in kits if kit.ops.target == SalesforceCaseTarget.name]
    case_objects = [config.case_object]
    case_objects += [
        str(kit.ops.options["object"]) for kit in case_kits if kit.ops.options.get("object")
    ]
    result = CheckResult()
    wanted = needs(mapping, case_objects)
    described: dict[str, dict[str, dict[str, Any]] | None] = {}
    for object_name in dict.fromkeys(need.object_name for need in wanted):
        described[object_name] = _describe(api, object_name, result)
    for object_name, fields in described.items():
        if fields is None:
            continue
        mine = [need for need in wanted if need.object_name == object_name]
        before = len(result.problems)
        for need in mine:
            problem = check_field(need, fields.get(need.name.lower()))
            if problem is not None:
                result.problems.append(problem)
        if len(result.problems) == before:
            count = len({need.name.lower() for need in mine})
            result.lines.append(f"{object_name}: all {count} field(s) Fullkit uses are fine")
    check_status_values(described.get("Opportunity") or {}, result)
    if config.case_record_type:
        _guarded("record type", result, lambda: _check_record_type(api, config, result))
    _guarded("ops owners", result, lambda: check_owners(api, case_kits, result))
    return result


def check_field(need: FieldNeed, described: dict[str, Any] | None) -> str | None:
    where = f"{need.object_name}.{need.name}"
    if described is None:
        # Salesforce leaves out of `describe` what the user may not even read.
        return (
            f"{where} is missing or hidden from this user (needed for {need.why}); "
            "deploy salesforce-app/ and assign its Fullkit_Integration permission set"
        )
    kind = str(described.get("type"))
    if need.types and kind not in need.types:
        expected = " or ".join(sorted(need.types))
        return f"{where} has type {kind}, Fullkit needs {expected} (for {need.why})"
    if need.access in ("create", "update") and not described.get(f"{need.access}able"):
        return (
            f"{where} is not {need.access}able by this user (needed for {need.why}); "
            "assign the Fullkit_Integration permission set or grant Edit in its "
            "field-level security"
        )
    if need.name == HANDOFF_FIELD and need.access == "create" and not described.get("externalId"):
        return f"{where} is not an External ID, so a retry could create a second record"
    return None


def check_status_values(opportunity: dict[str, dict[str, Any]], result: CheckResult) -> None:
    """A restricted picklist refuses a value it lacks, so every value written must be there."""
    status = opportunity.get(STATUS.lower())
    if status is None or status.get("type") != "picklist":
        return
    values = {str(v.get("value")) for v in status.get("picklistValues") or []}
    for value in STATUS_VALUES:
        if value not in values:
            result.problems.append(
                f"Opportunity.{STATUS}: its picklist lacks {value!r}, a value Fullkit writes"
            )


def check_owners(api: SalesforceApi, kits: Sequence[KitLike], result: CheckResult) -> None:
    emails = list(dict.fromkeys(e.strip().lower() for kit in kits for e in kit.ops.owners))
    active: set[str] = set()
    # The same query the Case target makes when it assigns a Case.
    for part in chunks(emails, QUERY_ID_LIMIT):
        query = f"SELECT Id, Email FROM User WHERE Email IN ({id_list(part)}) AND IsActive = true"
        active |= {str(row["Email"]).lower() for row in api.query_all("find ops owners", query)}
    for kit in kits:
        missing = [e for e in kit.ops.owners if e.strip().lower() not in active]
        for email in missing:
            result.problems.append(
                f"kit {kit.id}: ops owner {email} is no active Salesforce user; "
                "add or activate the user in Salesforce or fix the kit's ops.owners"
            )
        if kit.ops.owners and not missing:
            result.lines.append(f"kit {kit.id}: ops owners are active Salesforce users")


def _check_record_type(api: SalesforceApi, config: SalesforceSettings, result: CheckResult) -> None:
    query = (
        "SELECT Id FROM RecordType WHERE SobjectType = "
        f"{quote(config.case_object)} AND DeveloperName = {quote(config.case_record_type or '')}"
    )
    if api.query_all("find record type", query):
        result.lines.append(f"{config.case_object}: record type {config.case_record_type} found")
    else:
        result.problems.append(
            f"SALESFORCE_CASE_RECORD_TYPE {config.case_record_type} is no record type of "
            f"{config.case_object}"
        )


def _describe(
    api: SalesforceApi, object_name: str, result: CheckResult
) -> dict[str, dict[str, Any]] | None:
    try:
        answer = api.restful(f"describe {object_name}", f"sobjects/{object_name}/describe")
    except AuthError:
        raise
    except ConnectorError as exc:
        result.problems.append(f"{object_name} not checked: {exc}")
        return None
    fields = answer.get("fields") if isinstance(answer, dict) else None
    return {str(f.get("name")).lower(): f for f in fields or [] if isinstance(f, dict)}


def _guarded(what: str, result: CheckResult, step: Callable[[], object]) -> None:
    try:
        step()
    except AuthError:
        raise
    except ConnectorError as exc:
        result.problems.append(f"{what} not checked: {exc}")
