"""Ops target: a HubSpot ticket, exactly one per hand-off id."""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import Any, ClassVar

from hubspot.crm.association_type import AssociationType

from connectors.hubspot_client import (
    ConflictError,
    HubSpotApi,
    chunks,
    results_of,
)
from connectors.hubspot_settings import HubSpotSettings
from connectors.registry import register_target
from kernel.connector import OpsRequest, OpsResult, OpsTarget
from kernel.errors import ConnectorError, PartialFailure, PermanentError, RetryableError
from kernel.settings import SharedSettings
from kernel.text import inert

TICKET_OBJECT_TYPE_ID = "0-5"
HANDOFF_PROPERTY = "fullkit_handoff_id"  # unique-value ticket property (fullkit hubspot setup)
TICKET_TO_DEAL = AssociationType.TICKET_TO_DEAL  # 28
TICKET_TO_PRIMARY_COMPANY = AssociationType.PRIMARY_TICKET_TO_COMPANY  # 26

DEFAULT_OPTIONS: dict[str, str] = {"pipeline": "0", "stage": "1"}


def ticket_content(summary: str) -> str:
    """The ticket's `content`, which HubSpot renders as HTML: the summary's own lines,
    escaped. The CRM values in it are inert already (one line each, no link)."""
    return inert(summary, markup="html", lines=True, links=True)


@register_target
class HubSpotTicketTarget(OpsTarget):
    name = "hubspot_ticket"
    settings_class = HubSpotSettings
    # The ticket is associated with the deal and its company: HubSpot records only.
    crms: ClassVar[frozenset[str] | None] = frozenset({"hubspot"})
    option_keys: ClassVar[frozenset[str]] = frozenset({"pipeline", "stage"})
    unique_handoff_key: ClassVar[bool] = True

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        self._api: HubSpotApi | None = None

    @property
    def api(self) -> HubSpotApi:
        if self._api is None:
            self._api = HubSpotApi(
                self.settings, budgets=self.rate_budgets, cache=self.cache, system=self.name
            )
        return self._api

    @classmethod
    def validate_options(cls, options: MappingABC[str, Any]) -> list[str]:
        problems = super().validate_options(options)
        for key in sorted(cls.option_keys):
            if key not in options:
                continue
            value = options[key]
            # YAML reads `pipeline: 0` as an int; HubSpot ids are strings and "0" != 0 in CEL.
            if not isinstance(value, str) or not value.strip():
                problems.append(
                    f'{key}: must be a non-empty string (a HubSpot id, quoted: "{value}")'
                )
        return problems

    def prepare(self, owner_emails: Sequence[str]) -> None:
        # The first batch of tickets would otherwise look each owner up before creating.
        self.api.portal_id()
        for email in dict.fromkeys(owner_emails):
            self.owner_id(email)

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        """One batch create (with associations) per 100 tickets; a request HubSpot refuses
        fails alone (PartialFailure keyed by hand-off id).

        A batch create is all or nothing: one input HubSpot refuses (a hand-off id that
        already has its ticket after a crash, an unknown owner) refuses the batch, and
        then each ticket is created alone, where the unique `fullkit_handoff_id` turns a
        duplicate into the existing ticket.
        """
        todo = list({request.handoff_id: request for request in requests}.values())
        failed: dict[str, ConnectorError] = {}
        bodies: dict[str, dict[str, Any]] = {}
        for request in todo:
            try:
                bodies[request.handoff_id] = self._ticket_input(request)
            except (PermanentError, RetryableError) as exc:
                # The owner lookup failed for this ticket's owner: the others go on.
                failed[request.handoff_id] = exc
        ready = [request for request in todo if request.handoff_id in bodies]
        ticket_ids: dict[str, str] = {}
        for part in chunks(ready):
            if len(part) == 1:
                self._create_alone(part[0], bodies, ticket_ids, failed)
                continue
            try:
                ticket_ids.update(self._create_batch([bodies[r.handoff_id] for r in part]))
            except PermanentError:
                for request in part:
                    self._create_alone(request, bodies, ticket_ids, failed)
                continue
            for request in part:
                if request.handoff_id not in ticket_ids:
                    self._create_alone(request, bodies, ticket_ids, failed)
        results = {
            handoff_id: OpsResult(
                ref=ticket_id, link=self.api.record_url(TICKET_OBJECT_TYPE_ID, ticket_id)
            )
            for handoff_id, ticket_id in ticket_ids.items()
        }
        if failed:
            raise PartialFailure("HubSpot create tickets", failed, results)
        return results

    def _create_batch(self, bodies: list[dict[str, Any]]) -> dict[str, str]:
        api = self.api
        answer = api.call(
            "batch create tickets",
            api.client.crm.tickets.batch_api.create,
            {"inputs": bodies},
        )
        # Batch answers are not in input order: each ticket's hand-off id says whose it is.
        created: dict[str, str] = {}
        for result in results_of(answer):
            handoff_id = (result.get("properties") or {}).get(HANDOFF_PROPERTY)
            if handoff_id:
                created[str(handoff_id)] = str(result.get("id"))
        return created

    def _create_alone(
        self,
        request: OpsRequest,
        bodies: dict[str, dict[str, Any]],
        ticket_ids: dict[str, str],
        failed: dict[str, ConnectorError],
    ) -> None:
        try:
            ticket_ids[request.handoff_id] = self._create_once(request, bodies[request.handoff_id])
        except (PermanentError, RetryableError) as exc:
            failed[request.handoff_id] = exc

    def _create_once(self, request: OpsRequest, body: dict[str, Any] | None = None) -> str:
        """Create the ticket with its associations; if it exists already, return that one.

        HubSpot refuses a second ticket with the same unique `fullkit_handoff_id`, even
        under concurrent workers, so the create itself is the duplicate guard. The existing
        ticket is then read by that property: a consistent read, unlike search.
        """
        api = self.api
        body = body or self._ticket_input(request)
        try:
            created = api.call("create ticket", api.client.crm.tickets.basic_api.create, body)
        except PermanentError as refused:
            if request.owner_email and "hubspot_owner_id" in str(refused):
                # The remembered owner id is no longer a user: look the email up afresh
                # when the attempt is replayed.
                self.api.forget_owner(request.owner_email)
            # HubSpot refuses a taken custom unique value with a 400 VALIDATION_ERROR naming
            # the property ("<id> already has that value"), elsewhere with 409 CONFLICT;
            # either way only the consistent lookup tells a duplicate for sure.
            if not isinstance(refused, ConflictError) and HANDOFF_PROPERTY not in str(refused):
                raise
            try:
                existing = self._find(request.handoff_id)
            except PermanentError:
                existing = None
            if existing is None:
                raise refused from None
            return existing
        return str(created["id"])

    def _find(self, handoff_id: str) -> str | None:
        api = self.api
        tickets = api.client.crm.tickets.basic_api
        return api.id_by_unique(
            "read ticket by hand-off id", tickets.get_by_id, HANDOFF_PROPERTY, handoff_id
        )

    def _ticket_input(self, request: OpsRequest) -> dict[str, Any]:
        options = {**DEFAULT_OPTIONS, **{k: str(v) for k, v in request.options.items()}}
        properties = {
            "subject": inert(request.subject, links=True),  # plain text, one line
            "content": ticket_content(request.summary),
            "hs_pipeline": options["pipeline"],
            "hs_pipeline_stage": options["stage"],
            HANDOFF_PROPERTY: request.handoff_id,
        }
        if request.owner_email:
            properties["hubspot_owner_id"] = self.owner_id(request.owner_email)
        associations = [_association(request.deal_id, TICKET_TO_DEAL)]
        if request.packet.company_ref:
            associations.append(_association(request.packet.company_ref, TICKET_TO_PRIMARY_COMPANY))
        return {"properties": properties, "associations": associations}

    def owner_id(self, email: str) -> str:
        """The HubSpot owner id of an ops user, by email (shared by every process for minutes).

        An email that is no HubSpot owner is a PermanentError naming it: an ops ticket
        nobody owns would sit unseen, which is exactly what the hand-off must prevent.
        """
        owner_id = self.api.owner_id(email)
        if owner_id is not None:
            return owner_id
        raise PermanentError(
            f"ops owner {email} is not a HubSpot user (no active owner with that email); "
            "fix the kit's ops.owners or add the user in HubSpot"
        )


def _association(to_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": str(to_id)},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }
