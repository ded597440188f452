"""Ops target: a Salesforce Case (or a custom onboarding object), one per hand-off id.

Cases are upserted by the external-id field `Fullkit_Handoff_Id__c` through one sObject
Collections upsert per 200, so a retry, a crash or a second worker finds the Case the
first try made instead of making another: Salesforce itself keeps the id unique.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.registry import register_target
from connectors.salesforce_client import (
    QUERY_ID_LIMIT,
    SalesforceApi,
    chunks,
    id_list,
    item_error,
    quote,
)
from connectors.salesforce_settings import SalesforceSettings
from kernel.connector import OpsRequest, OpsResult, OpsTarget
from kernel.errors import ConnectorError, PartialFailure, PermanentError
from kernel.settings import SharedSettings
from kernel.text import inert

HANDOFF_FIELD = "Fullkit_Handoff_Id__c"
OPPORTUNITY_FIELD = "Fullkit_Opportunity__c"
# A custom object's Name holds at most 80 characters.
NAME_LENGTH = 80


@register_target
class SalesforceCaseTarget(OpsTarget):
    name = "salesforce_case"
    settings_class = SalesforceSettings
    # The Case points at the opportunity and its account: only Salesforce deals have them.
    crms: ClassVar[frozenset[str] | None] = frozenset({"salesforce"})
    option_keys: ClassVar[frozenset[str]] = frozenset({"object", "record_type"})
    unique_handoff_key: ClassVar[bool] = True

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        self._api: SalesforceApi | None = None
        self._owners: dict[str, str] = {}
        self._record_types: dict[tuple[str, str], str] = {}

    @property
    def api(self) -> SalesforceApi:
        if self._api is None:
            self._api = SalesforceApi(self.settings, budgets=self.rate_budgets, system=self.name)
        return self._api

    @classmethod
    def validate_options(cls, options: MappingABC[str, Any]) -> list[str]:
        problems = super().validate_options(options)
        for key in sorted(cls.option_keys & set(options)):
            value = options[key]
            if not isinstance(value, str) or not value.replace("_", "").isalnum():
                problems.append(f"{key}: must be a Salesforce API name, e.g. Onboarding__c")
        return problems

    def prepare(self, owner_emails: Sequence[str]) -> None:
        self._owner_ids(list(owner_emails))

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        todo = list({request.handoff_id: request for request in requests}.values())
        owners = self._owner_ids([r.owner_email for r in todo if r.owner_email])
        failed: dict[str, ConnectorError] = {}
        by_object: dict[str, list[tuple[OpsRequest, dict[str, Any]]]] = {}
        for request in todo:
            try:
                record = self._record(request, owners)
            except PermanentError as exc:
                failed[request.handoff_id] = exc
                continue
            by_object.setdefault(record["attributes"]["type"], []).append((request, record))
        done: dict[str, OpsResult] = {}
        for object_name, pairs in by_object.items():
            for part in chunks(pairs):
                answer = self.api.restful(
                    "upsert cases",
                    f"composite/sobjects/{object_name}/{HANDOFF_FIELD}",
                    "PATCH",
                    {"allOrNone": False, "records": [record for _, record in part]},
                )
                for (request, _record), result in zip(part, answer or [], strict=True):
                    if result.get("success"):
                        record_id = str(result["id"])
                        done[request.handoff_id] = OpsResult(
                            ref=record_id, link=self.record_url(object_name, record_id)
                        )
                    else:
                        failed[request.handoff_id] = item_error(result, "upsert case")
        if failed:
            raise PartialFailure("Salesforce upsert cases", failed, done)
        return done

    def record_url(self, object_name: str, record_id: str) -> str:
        return f"{self.api.instance_url}/lightning/r/{object_name}/{record_id}/view"

    def _record(self, request: OpsRequest, owners: dict[str, str]) -> dict[str, Any]:
        config = self.settings.section(SalesforceSettings)
        object_name = str(request.options.get("object") or config.case_object)
        record: dict[str, Any] = {
            "attributes": {"type": object_name},
            HANDOFF_FIELD: request.handoff_id,
        }
        subject = inert(request.subject, links=True)
        if object_name.lower() == "case":
            record["Subject"] = subject
            record["Description"] = inert(request.summary, lines=True, links=True)
            if request.packet.company_ref:
                record["AccountId"] = request.packet.company_ref
        else:
            record["Name"] = subject[:NAME_LENGTH]
        if request.crm == "salesforce":
            record[OPPORTUNITY_FIELD] = request.deal_id
        if request.owner_email:
            owner = owners.get(request.owner_email.lower())
            if owner is None:
                raise PermanentError(
                    f"ops owner {request.owner_email} is no active Salesforce user; "
                    "fix the kit's ops.owners or add the user in Salesforce"
                )
            record["OwnerId"] = owner
        record_type = request.options.get("record_type") or config.case_record_type
        if record_type:
            record["RecordTypeId"] = self._record_type(object_name, str(record_type))
        return record

    def _owner_ids(self, emails: list[str]) -> dict[str, str]:
        """User ids by lower-cased email: one query for every email not known yet."""
        wanted = [e for e in dict.fromkeys(e.lower() for e in emails) if e not in self._owners]
        for part in chunks(wanted, QUERY_ID_LIMIT):
            query = (
                f"SELECT Id, Email FROM User WHERE Email IN ({id_list(part)}) AND IsActive = true"
            )
            for row in self.api.query_all("find ops owners", query):
                self._owners.setdefault(str(row["Email"]).lower(), str(row["Id"]))
        return dict(self._owners)

    def _record_type(self, object_name: str, developer_name: str) -> str:
        key = (object_name.lower(), developer_name.lower())
        if key not in self._record_types:
            query = (
                "SELECT Id FROM RecordType WHERE SobjectType = "
                f"{quote(object_name)} AND DeveloperName = {quote(developer_name)}"
            )
            rows = self.api.query_all("find record type", query)
            if not rows:
                raise PermanentError(
                    f"record type {developer_name} of {object_name} does not exist in the org"
                )
            self._record_types[key] = str(rows[0]["Id"])
        return self._record_types[key]
