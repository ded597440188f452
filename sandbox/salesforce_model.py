"""The Salesforce org's schema: sObjects, their fields and relationships, ids, errors.

Names, types and error codes follow Salesforce's REST API so that a client written
against a real org (simple-salesforce, or a connector on top of it) cannot tell the
difference for the parts Fullkit uses.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "59.0"  # simple-salesforce 1.12's DEFAULT_API_VERSION

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def id18(id15: str) -> str:
    """The case-safe 18-character form of a 15-character id (Salesforce's checksum)."""
    if len(id15) == 18:
        return id15
    suffix = ""
    for chunk in range(3):
        bits = 0
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += _SUFFIX[bits]
    return id15 + suffix


def looks_like_id(value: str) -> bool:
    return len(value) in (15, 18) and value.isalnum() and id18(value[:15]) == id18(value)


class IdMaker:
    """Ids with each object's real key prefix (006 Opportunity, 500 Case, ...)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        number = next(self._counter)
        digits = ""
        for _ in range(10):
            number, rest = divmod(number, 62)
            digits = _BASE62[rest] + digits
        return id18(f"{prefix}5g{digits}"[:15].ljust(15, "0"))


class SalesforceError(Exception):
    """An answer Salesforce gives as a JSON list of {message, errorCode, fields}."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def item(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            body["fields"] = self.fields
        return body

    def body(self) -> list[dict[str, Any]]:
        return [self.item()]

    def collection_item(self) -> dict[str, Any]:
        # sObject Collections name the code `statusCode`, unlike every other answer.
        return {"statusCode": self.code, "message": self.message, "fields": self.fields or []}


def not_found() -> SalesforceError:
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


@dataclass
class FieldDef:
    name: str
    type: str  # id string textarea email url phone date datetime double currency int
    #            percent boolean picklist reference base64
    label: str = ""
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    required: bool = False  # on create (nillable false, no default)
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    external_id: bool = False
    unique: bool = False
    length: int = 255
    default: Any = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name.removesuffix("__c").replace("_", " "),
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length if self.type in _TEXT_TYPES else 0,
            "createable": self.createable,
            "updateable": self.updateable,
            "nillable": self.nillable,
            "custom": self.name.endswith("__c"),
            "externalId": self.external_id,
            "unique": self.unique,
            "idLookup": self.type == "id" or self.external_id,
            "defaultedOnCreate": self.default is not None,
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "value": v, "validFor": None}
                for v in self.picklist
            ],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
        }


_TEXT_TYPES = {"string", "textarea", "email", "url", "phone", "picklist", "id", "reference"}
_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "boolean": "xsd:boolean",
    "base64": "xsd:base64Binary",
}


@dataclass
class ChildRelationship:
    name: str  # e.g. OpportunityContactRoles
    child: str  # e.g. OpportunityContactRole
    field: str  # the child's lookup to the parent, e.g. OpportunityId


@dataclass
class ObjectDef:
    name: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)  # by lower-case name
    children: dict[str, ChildRelationship] = field(default_factory=dict)  # lower-case
    createable: bool = True
    queryable: bool = True  # AttachedContentDocument is readable only as a subquery

    def add(self, *defs: FieldDef) -> None:
        for definition in defs:
            self.fields[definition.name.lower()] = definition

    def field(self, name: str) -> FieldDef | None:
        return self.fields.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        lowered = name.lower()
        return next(
            (
                f
                for f in self.fields.values()
                if f.relationship_name and f.relationship_name.lower() == lowered
            ),
            None,
        )

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.name.removesuffix("__c").replace("_", " "),
            "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"),
            "createable": self.createable,
            "updateable": self.createable,
            "queryable": self.queryable,
            "fields": [f.describe() for f in self.fields.values()],
            "childRelationships": [
                {"childSObject": c.child, "field": c.field, "relationshipName": c.name}
                for c in self.children.values()
            ],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _f(name: str, kind: str = "string", **options: Any) -> FieldDef:
    return FieldDef(name, kind, **options)


def _ref(name: str, *targets: str, relationship: str | None = None, **options: Any) -> FieldDef:
    rel = relationship if relationship is not None else name.removesuffix("Id")
    if name.endswith("__c") and relationship is None:
        rel = name.removesuffix("__c") + "__r"
    return FieldDef(name, "reference", reference_to=targets, relationship_name=rel, **options)


def _readonly(name: str, kind: str = "string", **options: Any) -> FieldDef:
    return FieldDef(name, kind, createable=False, updateable=False, **options)


OPPORTUNITY_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
CASE_STATUSES = ("New", "Working", "Escalated", "Closed")


def _system(obj: ObjectDef, owned: bool = True) -> None:
    obj.add(
        _readonly("Id", "id", nillable=False, length=18),
        _readonly("CreatedDate", "datetime", nillable=False),
        _readonly("LastModifiedDate", "datetime", nillable=False),
        _readonly("SystemModstamp", "datetime", nillable=False),
        _ref("CreatedById", "User", relationship="CreatedBy", createable=False, updateable=False),
        _ref(
            "LastModifiedById",
            "User",
            relationship="LastModifiedBy",
            createable=False,
            updateable=False,
        ),
    )
    if owned:
        obj.add(_ref("OwnerId", "User", relationship="Owner"))


def default_schema(custom_object: str = "Onboarding__c") -> dict[str, ObjectDef]:
    """The objects of a Sales Cloud org with Fullkit's custom fields deployed."""
    objects: dict[str, ObjectDef] = {}

    def define(name: str, prefix: str, owned: bool = True, **options: Any) -> ObjectDef:
        obj = ObjectDef(name, prefix, **options)
        _system(obj, owned)
        objects[name.lower()] = obj
        return obj

    define("User", "005", owned=False).add(
        _f("Username", nillable=False, required=True, unique=True),
        _f("Email", "email", nillable=False, required=True),
        _f("FirstName"),
        _f("LastName", nillable=False, required=True),
        _readonly("Name"),
        _f("IsActive", "boolean", nillable=False, default=True),
    )
    define("RecordType", "012", owned=False).add(
        _f("Name", required=True, nillable=False),
        _f("DeveloperName", required=True, nillable=False),
        _f("SobjectType", required=True, nillable=False),
        _f("IsActive", "boolean", nillable=False, default=True),
    )
    define("Account", "001").add(
        _f("Name", nillable=False, required=True),
        _f("Website", "url"),
        _f("Industry", "picklist", picklist=("Technology", "Finance", "Retail", "Other")),
        _f("BillingCountry"),
    )
    define("Contact", "003").add(
        _f("FirstName"),
        _f("LastName", nillable=False, required=True),
        _readonly("Name"),
        _f("Email", "email"),
        _f("Phone", "phone"),
        _f("Title"),
        _ref("AccountId", "Account"),
    )
    opportunity = define("Opportunity", "006")
    opportunity.add(
        _f("Name", nillable=False, required=True, length=120),
        _f(
            "StageName",
            "picklist",
            nillable=False,
            required=True,
            picklist=OPPORTUNITY_STAGES,
            restricted=True,
            label="Stage",
        ),
        _f("CloseDate", "date", nillable=False, required=True),
        _f("Amount", "currency"),
        _f("Type", "picklist", picklist=("New Customer", "Existing Customer - Upgrade")),
        _f("Description", "textarea", length=32000),
        _ref("AccountId", "Account"),
        _ref("Pricebook2Id", "Pricebook2"),
        _f(
            "Fullkit_Status__c",
            "picklist",
            picklist=("accepted", "returned"),
            restricted=True,
            label="Fullkit Status",
        ),
        _f("Fullkit_Missing__c", "textarea", length=32768, label="Fullkit Missing"),
        _f("Fullkit_Ops_Owner__c", "email", label="Ops Owner"),
        _f("Fullkit_Ops_Link__c", "url", label="Ops Link"),
        _f("Fullkit_Expected_Kickoff__c", "date", label="Expected Kickoff"),
    )
    define("Product2", "01t").add(
        _f("Name", nillable=False, required=True),
        _f("ProductCode"),
        _f("IsActive", "boolean", nillable=False, default=True),
    )
    define("Pricebook2", "01s", owned=False).add(
        _f("Name", nillable=False, required=True),
        _f("IsActive", "boolean", nillable=False, default=True),
        _readonly("IsStandard", "boolean", nillable=False, default=False),
    )
    define("PricebookEntry", "01u", owned=False).add(
        _ref("Pricebook2Id", "Pricebook2", nillable=False, required=True, updateable=False),
        _ref("Product2Id", "Product2", nillable=False, required=True, updateable=False),
        _f("UnitPrice", "currency", nillable=False, required=True),
        _f("IsActive", "boolean", nillable=False, default=True),
    )
    define("OpportunityLineItem", "00k", owned=False).add(
        _ref("OpportunityId", "Opportunity", nillable=False, required=True, updateable=False),
        _ref("PricebookEntryId", "PricebookEntry", required=True, updateable=False),
        _ref("Product2Id", "Product2", createable=False, updateable=False),
        _readonly("Name"),
        _f("Quantity", "double", nillable=False, required=True),
        _f("UnitPrice", "currency"),
        _readonly("TotalPrice", "currency"),
        _f("Description"),
    )
    define("OpportunityContactRole", "00K", owned=False).add(
        _ref("OpportunityId", "Opportunity", nillable=False, required=True, updateable=False),
        _ref("ContactId", "Contact", nillable=False, required=True),
        _f("Role", "picklist", picklist=("Business User", "Decision Maker", "Economic Buyer")),
        _f("IsPrimary", "boolean", nillable=False, default=False),
    )
    define("ContentVersion", "068").add(
        _f("Title", required=True, nillable=False),
        _f("PathOnClient", required=True, updateable=False),
        _f("VersionData", "base64", updateable=False),
        _readonly("FileExtension"),
        _readonly("ContentSize", "int"),
        _ref("ContentDocumentId", "ContentDocument", updateable=False),
        _f("FirstPublishLocationId", "reference", updateable=False),
    )
    define("ContentDocument", "069", createable=False).add(
        _f("Title", nillable=False),
        _readonly("FileExtension"),
        _readonly("ContentSize", "int"),
        _ref("LatestPublishedVersionId", "ContentVersion", createable=False),
    )
    define("ContentDocumentLink", "06A", owned=False).add(
        _ref("ContentDocumentId", "ContentDocument", nillable=False, required=True),
        _ref("LinkedEntityId", "Opportunity", "Account", "Case", nillable=False, required=True),
        _f("ShareType", "picklist", picklist=("V", "C", "I"), restricted=True, default="V"),
        _f("Visibility", "picklist", picklist=("AllUsers", "InternalUsers"), default="AllUsers"),
    )
    # Salesforce's read-only view of a record's files; only readable as a subquery.
    define("AttachedContentDocument", "069", owned=False, createable=False, queryable=False).add(
        _readonly("ContentDocumentId", "reference", reference_to=("ContentDocument",)),
        _readonly("LinkedEntityId", "reference"),
        _readonly("Title"),
        _readonly("FileExtension"),
        _readonly("ContentSize", "int"),
    )
    define("OpportunityFieldHistory", "017", owned=False, createable=False).add(
        _ref("OpportunityId", "Opportunity", createable=False, updateable=False),
        _readonly("Field"),
        _readonly("OldValue"),
        _readonly("NewValue"),
        _readonly("DataType"),
    )
    define("OpportunityHistory", "008", owned=False, createable=False).add(
        _ref("OpportunityId", "Opportunity", createable=False, updateable=False),
        _readonly("StageName"),
        _readonly("Amount", "currency"),
        _readonly("CloseDate", "date"),
    )
    define("Task", "00T").add(
        _f("Subject"),
        _f("Description", "textarea", length=32000),
        _f("ActivityDate", "date"),
        _f("Status", "picklist", picklist=TASK_STATUSES, nillable=False, default="Not Started"),
        _f("Priority", "picklist", picklist=("High", "Normal", "Low"), default="Normal"),
        _ref("WhatId", "Opportunity", "Account", "Case", relationship="What"),
        _ref("WhoId", "Contact", relationship="Who"),
    )
    handoff_fields = (
        _f("Fullkit_Handoff_Id__c", external_id=True, unique=True, label="Fullkit Hand-off Id"),
        _ref("Fullkit_Opportunity__c", "Opportunity"),
    )
    define("Case", "500").add(
        _f("Subject"),
        _f("Description", "textarea", length=32000),
        _f("Status", "picklist", picklist=CASE_STATUSES, default="New"),
        _f("Origin", "picklist", picklist=("Phone", "Email", "Web", "Fullkit")),
        _readonly("CaseNumber"),
        _ref("AccountId", "Account"),
        _ref("RecordTypeId", "RecordType"),
        *handoff_fields,
    )
    define(custom_object, "a05").add(
        _f("Name", nillable=False, length=80),
        _f("Status__c", "picklist", picklist=("New", "Scheduled", "Done")),
        _ref("Account__c", "Account"),
        _ref("RecordTypeId", "RecordType"),
        *handoff_fields,
    )
    _link_children(objects)
    return objects


# Child relationship names Salesforce gives the standard lookups Fullkit reads through.
_CHILD_NAMES = {
    ("OpportunityContactRole", "OpportunityId"): "OpportunityContactRoles",
    ("OpportunityLineItem", "OpportunityId"): "OpportunityLineItems",
    ("ContentDocumentLink", "LinkedEntityId"): "ContentDocumentLinks",
    ("AttachedContentDocument", "LinkedEntityId"): "AttachedContentDocuments",
    ("OpportunityFieldHistory", "OpportunityId"): "Histories",
    ("OpportunityHistory", "OpportunityId"): "OpportunityHistories",
    ("Task", "WhatId"): "Tasks",
    ("Contact", "AccountId"): "Contacts",
    ("Opportunity", "AccountId"): "Opportunities",
    ("Case", "AccountId"): "Cases",
}


def _link_children(objects: dict[str, ObjectDef]) -> None:
    for (child, lookup), name in _CHILD_NAMES.items():
        definition = objects[child.lower()].field(lookup)
        assert definition is not None
        parents = definition.reference_to or ("Opportunity",)
        for parent in parents:
            if parent.lower() in objects:
                relation = ChildRelationship(name, child, lookup)
                objects[parent.lower()].children[name.lower()] = relation


def sf_datetime(moment: dt.datetime) -> str:
    """Salesforce's REST datetime: 2026-12-02T11:30:00.000+0000."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}+0000"
    )


def parse_datetime(value: str) -> dt.datetime:
    text = value.strip().replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
