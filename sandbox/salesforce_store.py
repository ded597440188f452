"""The org's records and every write to them, validated the way Salesforce validates.

A write either applies whole or raises `SalesforceError` having changed nothing, so
sObject Collections and composite requests can roll back by restoring a snapshot.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.salesforce_model import (
    FieldDef,
    IdMaker,
    ObjectDef,
    SalesforceError,
    id18,
    looks_like_id,
    not_found,
    parse_datetime,
    sf_datetime,
)

Row = dict[str, Any]  # canonical field name -> wire value (dates as strings)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Fields the org computes itself; a write to them names the field as not writable.
_DERIVED = {"id", "createddate", "lastmodifieddate", "systemmodstamp"}


@dataclass
class Notification:
    """An outbound message waiting for (or past) its Ack."""

    id: str
    action_id: str
    record_id: str
    acked: bool = False
    attempts: int = 0


@dataclass
class OrgData:
    """Everything a rollback must restore."""

    records: dict[str, dict[str, Row]] = field(default_factory=dict)  # lower type -> id -> row
    ids: IdMaker = field(default_factory=IdMaker)
    case_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))
    notifications: list[Notification] = field(default_factory=list)


# Called after an Opportunity write with (old row or None, new row, data).
ChangeHook = Callable[[Row | None, Row, OrgData], None]


class Store:
    def __init__(self, schema: dict[str, ObjectDef]) -> None:
        self.schema = schema
        self.data = OrgData()
        self.hooks: list[ChangeHook] = []
        self.now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    # ------------------------------------------------------------------ lookups

    def object(self, name: str) -> ObjectDef:
        obj = self.schema.get(name.lower())
        if obj is None:
            raise not_found()
        return obj

    def table(self, obj: ObjectDef) -> dict[str, Row]:
        return self.data.records.setdefault(obj.name.lower(), {})

    def find(self, obj: ObjectDef, record_id: str) -> Row:
        if not looks_like_id(record_id):
            raise SalesforceError(
                400, "MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {record_id}"
            )
        row = self.table(obj).get(id18(record_id))
        if row is None:
            raise not_found()
        return row

    def by_external_id(self, obj: ObjectDef, field_name: str, value: str) -> list[Row]:
        definition = obj.field(field_name)
        if definition is None or not (definition.external_id or definition.type == "id"):
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        lowered = value.lower()
        return [
            row
            for row in self.table(obj).values()
            if str(row.get(definition.name) or "").lower() == lowered
        ]

    def snapshot(self) -> OrgData:
        return copy.deepcopy(self.data)

    def restore(self, data: OrgData) -> None:
        self.data = data

    # ------------------------------------------------------------------ writes

    def create(self, obj: ObjectDef, values: Row, user_id: str) -> str:
        if not obj.createable:
            raise SalesforceError(
                400, "INVALID_TYPE", f"entity type {obj.name} does not support insert"
            )
        row = self._validated(obj, values, creating=True)
        missing = [
            f.name
            for f in obj.fields.values()
            if f.required and f.createable and row.get(f.name) is None
        ]
        if missing:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        for definition in obj.fields.values():
            if row.get(definition.name) is None and definition.default is not None:
                row[definition.name] = definition.default
        record_id = self.data.ids.new(obj.key_prefix)
        stamp = sf_datetime(self.now())
        row.update(
            Id=record_id,
            CreatedDate=stamp,
            LastModifiedDate=stamp,
            SystemModstamp=stamp,
            CreatedById=user_id,
            LastModifiedById=user_id,
        )
        if obj.field("OwnerId") is not None and row.get("OwnerId") is None:
            row["OwnerId"] = user_id
        self._derive(obj, row, user_id)
        self._check_unique(obj, row)
        self.table(obj)[record_id] = row
        self._after(obj, None, row, user_id)
        return record_id

    def update(self, obj: ObjectDef, record_id: str, values: Row, user_id: str) -> None:
        current = self.find(obj, record_id)
        changes = self._validated(obj, values, creating=False)
        row = {**current, **changes}
        self._derive(obj, row, user_id)
        self._check_unique(obj, row)
        stamp = sf_datetime(self.now())
        row.update(LastModifiedDate=stamp, SystemModstamp=stamp, LastModifiedById=user_id)
        self.table(obj)[current["Id"]] = row
        self._after(obj, current, row, user_id)

    def delete(self, obj: ObjectDef, record_id: str) -> None:
        row = self.find(obj, record_id)
        del self.table(obj)[row["Id"]]

    # ------------------------------------------------------------- validation

    def _validated(self, obj: ObjectDef, values: Row, *, creating: bool) -> Row:
        row: Row = {}
        readonly: list[str] = []
        for name, value in values.items():
            if name == "attributes":
                continue
            definition = obj.field(name)
            if definition is None:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}"
                )
            writable = definition.createable if creating else definition.updateable
            if not writable or definition.name.lower() in _DERIVED:
                if definition.name == "Id" and not creating:
                    continue  # collections carry the Id beside the fields
                readonly.append(definition.name)
                continue
            row[definition.name] = self._coerce(obj, definition, value)
        if readonly:
            raise SalesforceError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(readonly)}. Please check the "
                "security settings of this field and verify that it is read/write for your "
                "profile or permission set.",
                readonly,
            )
        return row

    def _coerce(self, obj: ObjectDef, definition: FieldDef, value: Any) -> Any:
        label = definition.label or definition.name
        if value is None or value == "":
            if not definition.nillable or (
                definition.restricted and definition.name == "StageName"
            ):
                raise SalesforceError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{definition.name}]",
                    [definition.name],
                )
            return None
        kind = definition.type
        if kind in ("double", "currency", "percent", "int"):
            return _number(definition, value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _parser_error("boolean", value)
            return value
        if kind == "date":
            if not isinstance(value, str) or not _DATE.match(value):
                raise _parser_error("date", value)
            try:
                dt.date.fromisoformat(value)
            except ValueError as exc:
                raise _parser_error("date", value) from exc
            return value
        if kind == "datetime":
            try:
                return sf_datetime(parse_datetime(str(value)))
            except ValueError as exc:
                raise _parser_error("datetime", value) from exc
        if kind == "reference":
            return self._reference(definition, str(value))
        text = value if isinstance(value, str) else str(value)
        if kind == "base64":
            return text
        if len(text) > definition.length:
            raise SalesforceError(
                400,
                "STRING_TOO_LONG",
                f"{label}: data value too large: {text[:80]} (max length={definition.length})",
                [definition.name],
            )
        if kind == "email" and not _EMAIL.match(text):
            raise SalesforceError(
                400,
                "INVALID_EMAIL_ADDRESS",
                f"{label}: invalid email address: {text}",
                [definition.name],
            )
        if kind == "picklist" and definition.restricted and text not in definition.picklist:
            shown = "Stage" if definition.name == "StageName" else label
            raise SalesforceError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{shown}: bad value for restricted picklist field: {text}",
                [definition.name],
            )
        return text

    def _reference(self, definition: FieldDef, value: str) -> str:
        label = definition.label or definition.name
        if not looks_like_id(value):
            raise SalesforceError(
                400,
                "MALFORMED_ID",
                f"{label}: id value of incorrect type: {value}",
                [definition.name],
            )
        full = id18(value)
        targets = definition.reference_to or tuple(o.name for o in self.schema.values())
        for target in targets:
            obj = self.schema.get(target.lower())
            if obj is not None and full in self.table(obj):
                return full
        raise SalesforceError(
            400,
            "INVALID_CROSS_REFERENCE_KEY",
            f"invalid cross reference id: {value}",
            [definition.name],
        )

    def _check_unique(self, obj: ObjectDef, row: Row) -> None:
        for definition in obj.fields.values():
            value = row.get(definition.name)
            if not definition.unique or value is None:
                continue
            for other in self.table(obj).values():
                same = str(other.get(definition.name) or "").lower() == str(value).lower()
                if same and other["Id"] != row.get("Id"):
                    raise SalesforceError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {definition.name} duplicates value on "
                        f"record with id: {other['Id']}",
                        [],
                    )

    # ---------------------------------------------------------- derived values

    def _derive(self, obj: ObjectDef, row: Row, user_id: str) -> None:
        derive = getattr(self, f"_derive_{obj.name.lower()}", None)
        if derive is not None:
            derive(row, user_id)

    def _derive_user(self, row: Row, user_id: str) -> None:
        row["Name"] = " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p)

    _derive_contact = _derive_user

    def _derive_case(self, row: Row, user_id: str) -> None:
        if row.get("CaseNumber") is None:
            row["CaseNumber"] = f"{next(self.data.case_numbers):08d}"

    def _derive_opportunitylineitem(self, row: Row, user_id: str) -> None:
        entry = self.table(self.object("PricebookEntry")).get(row.get("PricebookEntryId") or "")
        if entry is not None:
            product = self.table(self.object("Product2")).get(entry["Product2Id"], {})
            row["Product2Id"] = entry["Product2Id"]
            if row.get("UnitPrice") is None:
                row["UnitPrice"] = entry["UnitPrice"]
            opportunity = self.table(self.object("Opportunity")).get(row["OpportunityId"], {})
            row["Name"] = f"{opportunity.get('Name', '')} {product.get('Name', '')}".strip()
        row["TotalPrice"] = float(row.get("Quantity") or 0) * float(row.get("UnitPrice") or 0)

    def _derive_contentversion(self, row: Row, user_id: str) -> None:
        if row.get("ContentDocumentId") is not None:
            return
        path = str(row.get("PathOnClient") or "")
        row["FileExtension"] = path.rsplit(".", 1)[-1].lower() if "." in path else None
        data = str(row.get("VersionData") or "")
        row["ContentSize"] = len(base64.b64decode(data)) if data else 0
        document_id = self.data.ids.new("069")
        row["ContentDocumentId"] = document_id
        stamp = sf_datetime(self.now())
        self.table(self.object("ContentDocument"))[document_id] = {
            "Id": document_id,
            "Title": row.get("Title"),
            "FileExtension": row["FileExtension"],
            "ContentSize": row["ContentSize"],
            "LatestPublishedVersionId": None,  # set once the version has its id
            "OwnerId": user_id,
            "CreatedDate": stamp,
            "LastModifiedDate": stamp,
            "SystemModstamp": stamp,
            "CreatedById": user_id,
            "LastModifiedById": user_id,
        }

    # ------------------------------------------------------------ side effects

    def _after(self, obj: ObjectDef, old: Row | None, row: Row, user_id: str) -> None:
        name = obj.name
        if name == "ContentVersion" and old is None:
            document = self.table(self.object("ContentDocument"))[row["ContentDocumentId"]]
            document["LatestPublishedVersionId"] = row["Id"]
            location = row.get("FirstPublishLocationId")
            if location:
                link = {"ContentDocumentId": row["ContentDocumentId"], "LinkedEntityId": location}
                self.create(self.object("ContentDocumentLink"), link, user_id)
        elif name == "ContentDocumentLink" and old is None:
            self._mirror_attachment(row)
        elif name == "Opportunity":
            self._history(old, row, user_id)
            for hook in self.hooks:
                hook(old, row, self.data)

    def _mirror_attachment(self, link: Row) -> None:
        document = self.table(self.object("ContentDocument")).get(link["ContentDocumentId"], {})
        self.table(self.object("AttachedContentDocument"))[link["Id"]] = {
            "Id": link["Id"],
            "ContentDocumentId": link["ContentDocumentId"],
            "LinkedEntityId": link["LinkedEntityId"],
            "Title": document.get("Title"),
            "FileExtension": document.get("FileExtension"),
            "ContentSize": document.get("ContentSize"),
            "CreatedDate": link["CreatedDate"],
            "LastModifiedDate": link["LastModifiedDate"],
            "SystemModstamp": link["SystemModstamp"],
            "CreatedById": link["CreatedById"],
            "LastModifiedById": link["LastModifiedById"],
        }

    def _history(self, old: Row | None, row: Row, user_id: str) -> None:
        """Field history tracking on StageName, and the OpportunityHistory snapshot."""
        stamp = row["LastModifiedDate"]
        base = {"CreatedDate": stamp, "CreatedById": user_id, "OpportunityId": row["Id"]}
        tracked = ("StageName", "Amount", "CloseDate")
        if old is None or any(old.get(f) != row.get(f) for f in tracked):
            history_id = self.data.ids.new("008")
            self.table(self.object("OpportunityHistory"))[history_id] = {
                **base,
                "Id": history_id,
                **{f: row.get(f) for f in tracked},
            }
        if old is None:
            entries = [("created", None, None)]
        elif old.get("StageName") != row.get("StageName"):
            entries = [("StageName", old.get("StageName"), row.get("StageName"))]
        else:
            entries = []
        for field_name, before, after in entries:
            entry_id = self.data.ids.new("017")
            self.table(self.object("OpportunityFieldHistory"))[entry_id] = {
                **base,
                "Id": entry_id,
                "Field": field_name,
                "OldValue": before,
                "NewValue": after,
                "DataType": "Text" if field_name == "StageName" else None,
            }


def _number(definition: FieldDef, value: Any) -> float | int:
    if isinstance(value, bool):
        raise _parser_error(definition.type, value)
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise _parser_error(definition.type, value) from exc
    return int(number) if definition.type == "int" else number


def _parser_error(kind: str, value: Any) -> SalesforceError:
    return SalesforceError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from VALUE_STRING value {value} or request "
        "may be missing a required field at [line:1, column:1]",
    )
