"""Salesforce CRM connector: opportunities into packets, push-backs and acceptances back.

A batch costs few calls whatever its size (up to 200 opportunities each):
* one SOQL query reads every opportunity with its account and owner (parent fields), its
  contact roles with their contacts, its line items with their products and, when asked,
  its files (child subqueries);
* one query reads the stage history of all of them (OpportunityFieldHistory);
* one sObject Collections update writes every push-back and acceptance at once, and one
  collection create makes every push-back Task. Collections answer per record, so a
  record Salesforce refuses fails alone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any

from connectors.registry import register_crm
from connectors.salesforce_client import (
    QUERY_ID_LIMIT,
    SalesforceApi,
    chunks,
    id_list,
    item_error,
)
from connectors.salesforce_settings import SalesforceSettings
from kernel.connector import Acceptance, CrmConnector, PushBack, StageEntry
from kernel.errors import ConnectorError, PartialFailure
from kernel.mapping import FieldSpec, Mapping
from kernel.packet import Packet
from kernel.settings import SharedSettings
from kernel.text import inert

# Read on every opportunity whatever the mapping says: they fill the packet's references.
BASE_FIELDS = ("Id", "Name", "StageName", "OwnerId", "Owner.Email", "Owner.Name", "AccountId")
STATUS, MISSING = "Fullkit_Status__c", "Fullkit_Missing__c"
OPS_OWNER, OPS_LINK, KICKOFF = (
    "Fullkit_Ops_Owner__c",
    "Fullkit_Ops_Link__c",
    "Fullkit_Expected_Kickoff__c",
)
# Ties a Task to its hand-off attempt, in its Description: a retry after a crash finds the
# task the first try made instead of making a second one.
MARKER_PREFIX = "Fullkit hand-off "
_MARKER = re.compile(re.escape(MARKER_PREFIX) + r"(\S+)")
TASK_SUBJECT_PREFIX = "Hand-off returned:"


def task_subject(missing_count: int) -> str:
    noun = "item" if missing_count == 1 else "items"
    return f"{TASK_SUBJECT_PREFIX} {missing_count} {noun} missing"


def task_description(item: PushBack) -> str:
    """Plain text (Salesforce shows Task descriptions as text): one missing item a line."""
    lines = "\n".join(f"- {inert(message, links=True)}" for message in item.missing)
    return (
        "The hand-off to ops was returned because the kit is incomplete. Missing:\n"
        f"{lines}\n\n{MARKER_PREFIX}{item.handoff_id}"
    )


def marker_of(description: str | None) -> str | None:
    found = _MARKER.search(description or "")
    return found.group(1) if found else None


def previous_stage(history: Iterable[dict[str, Any]], current: str | None) -> str | None:
    """The newest stage value in the history (newest first) that differs from the current."""
    for entry in history:
        for value in (entry.get("NewValue"), entry.get("OldValue")):
            if value and value != current:
                return str(value)
    return None


def _names(specs: Iterable[FieldSpec], prefix: str = "") -> list[str]:
    return [f"{prefix}{spec.property}" for spec in specs]


def _unique(names: Iterable[str]) -> list[str]:
    # Salesforce names are case-insensitive and a field named twice is MALFORMED_QUERY.
    return list({name.lower(): name for name in reversed(list(names))}.values())[::-1]


@register_crm
class SalesforceConnector(CrmConnector):
    name = "salesforce"
    settings_class = SalesforceSettings

    def __init__(self, settings: SharedSettings, mapping: Mapping) -> None:
        super().__init__(settings, mapping)
        self._api: SalesforceApi | None = None

    @property
    def api(self) -> SalesforceApi:
        # Built on first use so a disabled connector can still be constructed and listed.
        if self._api is None:
            self._api = SalesforceApi(self.settings, budgets=self.rate_budgets)
        return self._api

    # --- reading -------------------------------------------------------------------

    def packet_query(self, ids: Sequence[str], *, with_attachments: bool) -> str:
        mapping = self.mapping
        fields = _unique(
            [
                *BASE_FIELDS,
                *_names(mapping.fields("deal")),
                *_names(mapping.fields("company"), "Account."),
            ]
        )
        # A contact's `role` is its OpportunityContactRole's Role unless the mapping names
        # a Contact field for it.
        roles = _unique(["ContactId", "Role", *_names(mapping.fields("contact"), "Contact.")])
        items = _unique(["Id", "Product2.Name", *_names(mapping.fields("line_item"))])
        children = [
            f"(SELECT {', '.join(roles)} FROM OpportunityContactRoles)",
            f"(SELECT {', '.join(items)} FROM OpportunityLineItems)",
        ]
        if with_attachments:
            children.append(
                "(SELECT ContentDocument.Title, ContentDocument.FileExtension, "
                "ContentDocument.ContentSize FROM ContentDocumentLinks)"
            )
        return (
            f"SELECT {', '.join(fields + children)} FROM Opportunity WHERE Id IN ({id_list(ids)})"
        )

    def fetch_packets(
        self, deal_ids: Sequence[str], *, with_attachments: bool = False
    ) -> dict[str, Packet]:
        ids = list(dict.fromkeys(str(deal_id) for deal_id in deal_ids))
        records: dict[str, dict[str, Any]] = {}
        for part in chunks(ids, QUERY_ID_LIMIT):
            query = self.packet_query(part, with_attachments=with_attachments)
            for record in self.api.query_all("read opportunities", query):
                records[str(record["Id"])] = record
        histories = self._stage_histories(list(records)) if records else {}
        packets: dict[str, Packet] = {}
        for asked in ids:
            # Keyed by the id asked for: a 15-character id answers under its 18-character one.
            found = records.get(asked) or _by_prefix(records, asked)
            if found is not None:
                history = histories.get(str(found["Id"]), [])
                packets[asked] = self._packet(asked, found, history, with_attachments)
        return packets

    def deals_in_stages(
        self, stage_refs: Sequence[str], entered_after: dt.datetime, entered_before: dt.datetime
    ) -> list[StageEntry]:
        """Opportunities in a hand-off stage, untouched since before `entered_before`.

        One query (paged by query_all), whatever the number of stages. An opportunity
        records no time it entered its stage that SOQL can filter on, so its
        LastModifiedDate stands in: the stage cannot have changed after it. An opportunity
        edited since it entered the stage is found once it has been quiet that long, and
        its change is dated by that edit, which still comes after any earlier outcome, as
        the ledger needs to tell a new hand-off from an old one.
        """
        stages = list(dict.fromkeys(stage_refs))
        if not stages:
            return []
        query = (
            "SELECT Id, StageName, LastModifiedDate FROM Opportunity "
            f"WHERE StageName IN ({id_list(stages)}) "
            f"AND LastModifiedDate >= {soql_datetime(entered_after)} "
            f"AND LastModifiedDate < {soql_datetime(entered_before, round_up=True)} "
            "ORDER BY LastModifiedDate, Id"
        )
        return [
            StageEntry(str(row["Id"]), str(row["StageName"]), _instant(row["LastModifiedDate"]))
            for row in self.api.query_all("find opportunities in hand-off stages", query)
        ]

    def fill_attachments(self, packets: Sequence[Packet]) -> None:
        if not packets:
            return
        ids = list(dict.fromkeys(p.deal_id for p in packets))
        files: dict[str, list[dict[str, Any]]] = {}
        for part in chunks(ids, QUERY_ID_LIMIT):
            query = (
                "SELECT Id, (SELECT ContentDocument.Title, ContentDocument.FileExtension, "
                "ContentDocument.ContentSize FROM ContentDocumentLinks) "
                f"FROM Opportunity WHERE Id IN ({id_list(part)})"
            )
            for record in self.api.query_all("read opportunity files", query):
                files[str(record["Id"])] = self._files(record)
        for packet in packets:
            found = files.get(packet.deal_id)
            if found is None:
                found = next((v for k, v in files.items() if k[:15] == packet.deal_id[:15]), [])
            packet.attachments = found

    def _stage_histories(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each opportunity's stage changes, newest first: one query for the whole batch."""
        found: dict[str, list[dict[str, Any]]] = {}
        for part in chunks(ids, QUERY_ID_LIMIT):
            query = (
                "SELECT OpportunityId, OldValue, NewValue, CreatedDate "
                f"FROM OpportunityFieldHistory WHERE OpportunityId IN ({id_list(part)}) "
                "AND Field = 'StageName' ORDER BY CreatedDate DESC"
            )
            for row in self.api.query_all("read stage history", query):
                found.setdefault(str(row["OpportunityId"]), []).append(row)
        return found

    def _packet(
        self,
        deal_id: str,
        record: dict[str, Any],
        history: list[dict[str, Any]],
        with_attachments: bool,
    ) -> Packet:
        mapping = self.mapping
        stage = record.get("StageName")
        account = record.get("Account") or {}
        # A parent field comes nested; the whole parent is null when the lookup is empty.
        owner = record.get("Owner") or {}
        packet = Packet(
            crm=self.name,
            deal_id=deal_id,
            deal=mapping.to_canonical("deal", record),
            company=mapping.to_canonical("company", account) if account else {},
            contacts=[
                self._contact(role) for role in self._children(record, "OpportunityContactRoles")
            ],
            line_items=[self._line_item(i) for i in self._children(record, "OpportunityLineItems")],
            name=str(record.get("Name") or ""),
            stage_ref=str(stage) if stage else None,
            previous_stage_ref=previous_stage(history, stage),
            owner_ref=_text(record.get("OwnerId")),
            owner_email=_text(owner.get("Email")),
            owner_name=_text(owner.get("Name")),
            company_ref=_text(record.get("AccountId")),
            url=self.record_url("Opportunity", str(record["Id"])),
        )
        if with_attachments:
            packet.attachments = self._files(record)
        return packet

    def _children(self, record: dict[str, Any], name: str) -> list[dict[str, Any]]:
        """A child subquery's rows, every page of them (Salesforce pages large ones)."""
        block = record.get(name)
        if not isinstance(block, dict):
            return []
        rows: list[dict[str, Any]] = list(block.get("records") or [])
        while not block.get("done", True) and block.get("nextRecordsUrl"):
            block = self._more(str(block["nextRecordsUrl"]))
            rows.extend(block.get("records") or [])
        return rows

    def _more(self, url: str) -> dict[str, Any]:
        answer = self.api.call(
            "read more child records", lambda sf: sf.query_more(url, identifier_is_url=True)
        )
        return dict(answer)

    def _contact(self, role: dict[str, Any]) -> dict[str, Any]:
        contact = self.mapping.to_canonical("contact", role.get("Contact") or {})
        # The SPEC: a Salesforce contact's map always has `role`, a string.
        if "role" not in contact:
            contact["role"] = str(role.get("Role") or "")
        return contact

    def _line_item(self, item: dict[str, Any]) -> dict[str, Any]:
        values = self.mapping.to_canonical("line_item", item)
        product = (item.get("Product2") or {}).get("Name")
        if "name" not in values and product:
            values["name"] = str(product)
        return values

    def _files(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = []
        for link in self._children(record, "ContentDocumentLinks"):
            document = link.get("ContentDocument") or {}
            title, extension = document.get("Title"), document.get("FileExtension")
            values: dict[str, Any] = {
                "name": f"{title}.{extension}" if title and extension else title,
                "extension": extension,
            }
            size = document.get("ContentSize")
            if isinstance(size, int | float) and not isinstance(size, bool):
                values["size"] = float(size)
            files.append({k: v for k, v in values.items() if v not in (None, "")})
        return files

    def record_url(self, object_name: str, record_id: str) -> str:
        return f"{self.api.instance_url}/lightning/r/{object_name}/{record_id}/view"

    # --- writing -------------------------------------------------------------------

    def create_return_tasks(
        self, items: Sequence[PushBack], *, may_exist: bool = False
    ) -> dict[str, str]:
        todo = list({item.handoff_id: item for item in items}.values())
        made = self._existing_tasks(todo) if may_exist else {}
        todo = [item for item in todo if item.handoff_id not in made]
        failed: dict[str, ConnectorError] = {}
        for part in chunks(todo):
            records = [self._task(item) for item in part]
            answer = self._collection("create tasks", "POST", records)
            for item, result in zip(part, answer, strict=True):
                if result.get("success"):
                    made[item.handoff_id] = str(result["id"])
                else:
                    failed[item.handoff_id] = item_error(result, "create task")
        if failed:
            raise PartialFailure("Salesforce create tasks", failed, made)
        return made

    def _existing_tasks(self, items: list[PushBack]) -> dict[str, str]:
        """Tasks a first try made already, by the marker in their Description.

        Salesforce's queries are consistent (unlike HubSpot's search), so a create that
        was answered, even with a timeout after it landed, is seen here.
        """
        wanted = {item.handoff_id for item in items}
        found: dict[str, str] = {}
        deal_ids = list(dict.fromkeys(item.deal_id for item in items))
        for part in chunks(deal_ids, QUERY_ID_LIMIT):
            query = (
                f"SELECT Id, WhatId, Description FROM Task WHERE WhatId IN ({id_list(part)}) "
                f"AND Subject LIKE '{TASK_SUBJECT_PREFIX}%'"
            )
            for row in self.api.query_all("find earlier tasks", query):
                marker = marker_of(row.get("Description"))
                if marker in wanted and marker not in found:
                    found[marker] = str(row["Id"])
        return found

    def _task(self, item: PushBack) -> dict[str, Any]:
        task: dict[str, Any] = {
            "attributes": {"type": "Task"},
            "Subject": task_subject(len(item.missing)),
            "Description": task_description(item),
            # Due the day the kit was found incomplete (UTC), so it reads "due today".
            "ActivityDate": item.returned_at.astimezone(dt.UTC).date().isoformat(),
            "Status": "Not Started",
            "WhatId": item.deal_id,
        }
        if item.owner_ref:
            task["OwnerId"] = item.owner_ref
        return task

    def write_returns(self, items: Sequence[PushBack]) -> None:
        self.write_outcomes(items, [])

    def write_acceptances(self, items: Sequence[Acceptance]) -> None:
        self.write_outcomes([], items)

    def write_outcomes(
        self, returns: Sequence[PushBack], acceptances: Sequence[Acceptance]
    ) -> None:
        """Every write-back of the batch in one collection update per 200 opportunities."""
        records: dict[str, dict[str, Any]] = {}
        for item in returns:
            records[item.deal_id] = {
                "StageName": item.return_stage_ref,
                STATUS: "returned",
                MISSING: "\n".join(item.missing),
            }
        for accepted in acceptances:
            records[accepted.deal_id] = {
                STATUS: "accepted",
                MISSING: None,
                OPS_OWNER: accepted.ops_owner_email,
                OPS_LINK: accepted.ops_link,
                KICKOFF: accepted.expected_kickoff.isoformat(),
            }
        failed: dict[str, ConnectorError] = {}
        ordered = list(records.items())
        for part in chunks(ordered):
            body = [
                {"attributes": {"type": "Opportunity"}, "Id": deal_id, **values}
                for deal_id, values in part
            ]
            answer = self._collection("update opportunities", "PATCH", body)
            for (deal_id, _values), result in zip(part, answer, strict=True):
                if not result.get("success"):
                    failed[deal_id] = item_error(result, "update opportunity")
        if failed:
            raise PartialFailure("Salesforce write-back", failed)

    def _collection(
        self, operation: str, method: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        body = {"allOrNone": False, "records": records}
        answer = self.api.restful(operation, "composite/sobjects", method, body)
        return list(answer or [])


def soql_datetime(moment: dt.datetime, *, round_up: bool = False) -> str:
    """A SOQL dateTime literal: whole seconds in UTC, the only precision SOQL documents.

    An upper bound is rounded up, so `--older-than 0` still finds a change made in the
    very second the sweep runs.
    """
    utc = moment.astimezone(dt.UTC)
    whole = utc.replace(microsecond=0)
    if round_up and whole < utc:
        whole += dt.timedelta(seconds=1)
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(raw: Any) -> dt.datetime:
    """Salesforce's `2026-12-02T10:15:00.000+0000`, as an aware datetime."""
    moment = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _by_prefix(records: dict[str, dict[str, Any]], asked: str) -> dict[str, Any] | None:
    return next((r for key, r in records.items() if key[:15] == asked[:15]), None)
