"""`fullkit hubspot setup`: create the properties Fullkit writes, idempotently.

Each group and property is read first and created only when absent, so a second run
makes no writes. A property that exists with another type cannot be fixed by us without
losing data: it is reported as a problem and the CLI exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.hubspot_client import ConflictError, HubSpotApi, NotFoundError
from kernel.checks import CheckResult
from kernel.errors import PermanentError
from kernel.settings import SharedSettings

GROUP = "fullkit"
GROUP_LABEL = "Fullkit"
STATUS_OPTIONS = (("accepted", "Accepted"), ("returned", "Returned"))


@dataclass(frozen=True)
class PropertySpec:
    object_type: str
    name: str
    label: str
    type: str
    field_type: str
    description: str
    unique: bool = False
    options: tuple[tuple[str, str], ...] = ()

    def create_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": GROUP,
            "description": self.description,
        }
        if self.unique:
            body["hasUniqueValue"] = True
        if self.options:
            body["options"] = _options(self.options)
        return body


PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec(
        "deals",
        "fullkit_status",
        "Fullkit status",
        "enumeration",
        "select",
        "Set by Fullkit: accepted by ops, or returned to sales",
        options=STATUS_OPTIONS,
    ),
    PropertySpec(
        "deals",
        "fullkit_missing",
        "Fullkit missing items",
        "string",
        "textarea",
        "Set by Fullkit: what the kit still lacks, one item per line",
    ),
    PropertySpec(
        "deals",
        "fullkit_ops_owner",
        "Fullkit ops owner",
        "string",
        "text",
        "Set by Fullkit: email of the ops owner",
    ),
    PropertySpec(
        "deals",
        "fullkit_ops_link",
        "Fullkit ops link",
        "string",
        "text",
        "Set by Fullkit: the onboarding ticket or project",
    ),
    PropertySpec(
        "deals",
        "fullkit_expected_kickoff",
        "Fullkit expected kickoff",
        "date",
        "date",
        "Set by Fullkit: when kickoff can be expected",
    ),
    PropertySpec(
        "tickets",
        "fullkit_handoff_id",
        "Fullkit hand-off id",
        "string",
        "text",
        "Set by Fullkit: the hand-off attempt this ticket belongs to (one ticket each)",
        unique=True,
    ),
    PropertySpec(
        "tasks",
        "fullkit_handoff_id",
        "Fullkit hand-off id",
        "string",
        "text",
        "Set by Fullkit: the returned hand-off this task belongs to (one task each)",
        unique=True,
    ),
)


class SetupError(PermanentError):
    """The portal has a Fullkit property that cannot be used as it is."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__("; ".join(result.problems))
        self.result = result


def run_setup(
    settings: SharedSettings, api: HubSpotApi | None = None, result: CheckResult | None = None
) -> CheckResult:
    """Create what is missing; report what exists and every problem found (into `result`,
    so what was done before a failure is still reported)."""
    api = api or HubSpotApi(settings)
    result = result if result is not None else CheckResult()
    # One object type at a time: a scope missing for tickets leaves the deals done.
    for object_type in dict.fromkeys(spec.object_type for spec in PROPERTIES):
        _ensure_group(api, object_type, result)
        for spec in PROPERTIES:
            if spec.object_type == object_type:
                _ensure_property(api, spec, result)
    return result


def setup_properties(settings: SharedSettings, api: HubSpotApi | None = None) -> list[str]:
    """Lines describing what was created or already present; SetupError on a problem."""
    result = run_setup(settings, api)
    if not result.ok:
        raise SetupError(result)
    return result.lines


def _ensure_group(api: HubSpotApi, object_type: str, result: CheckResult) -> None:
    groups = api.client.crm.properties.groups_api
    try:
        api.call(f"read {object_type} property group", groups.get_by_name, object_type, GROUP)
        result.lines.append(f"{object_type}: property group {GROUP} already present")
        return
    except NotFoundError:
        pass
    try:
        api.call(
            f"create {object_type} property group",
            groups.create,
            object_type,
            {"name": GROUP, "label": GROUP_LABEL, "displayOrder": -1},
        )
        result.lines.append(f"{object_type}: property group {GROUP} created")
    except ConflictError:
        result.lines.append(f"{object_type}: property group {GROUP} already present")


def _ensure_property(api: HubSpotApi, spec: PropertySpec, result: CheckResult) -> None:
    core = api.client.crm.properties.core_api
    where = f"{spec.object_type}: property {spec.name}"
    try:
        existing = api.call(f"read {where}", core.get_by_name, spec.object_type, spec.name)
    except NotFoundError:
        existing = None
    if existing is None:
        try:
            api.call(f"create {where}", core.create, spec.object_type, spec.create_body())
            result.lines.append(f"{where} ({spec.type}) created")
            return
        except ConflictError:
            # Someone created it between our read and our write: check what they made.
            existing = api.call(f"read {where}", core.get_by_name, spec.object_type, spec.name)
    _check_existing(api, spec, existing if isinstance(existing, dict) else {}, result)


def _check_existing(
    api: HubSpotApi, spec: PropertySpec, existing: dict[str, Any], result: CheckResult
) -> None:
    where = f"{spec.object_type}: property {spec.name}"
    found_type = str(existing.get("type") or "")
    if found_type != spec.type:
        result.problems.append(
            f"{where} exists with type {found_type or 'unknown'}, Fullkit needs {spec.type}; "
            "delete or rename it in HubSpot, then run setup again"
        )
        return
    if spec.unique and not existing.get("hasUniqueValue"):
        # HubSpot cannot turn uniqueness on afterwards, and without it nothing stops a
        # second ticket for the same hand-off.
        result.problems.append(
            f"{where} exists without unique values; delete it in HubSpot, then run setup again"
        )
        return
    notes: list[str] = []
    found_field = str(existing.get("fieldType") or "")
    if found_field and found_field != spec.field_type:
        notes.append(f"shown as {found_field}, not {spec.field_type}")
    if spec.options:
        present = {
            str(option.get("value"))
            for option in existing.get("options") or []
            if isinstance(option, dict)
        }
        missing = [(value, label) for value, label in spec.options if value not in present]
        if missing:
            options = list(existing.get("options") or []) + _options(
                tuple(missing), start=len(present)
            )
            api.call(
                f"update {where}",
                api.client.crm.properties.core_api.update,
                spec.object_type,
                spec.name,
                {"options": options},
            )
            notes.append("added options " + ", ".join(value for value, _ in missing))
    suffix = f" ({'; '.join(notes)})" if notes else ""
    result.lines.append(f"{where} already present{suffix}")


def _options(values: tuple[tuple[str, str], ...], start: int = 0) -> list[dict[str, Any]]:
    return [
        {"value": value, "label": label, "displayOrder": start + index, "hidden": False}
        for index, (value, label) in enumerate(values)
    ]
