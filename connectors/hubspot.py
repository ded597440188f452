"""HubSpot CRM connector: reads deals into packets, writes push-backs and acceptances."""

from __future__ import annotations

import datetime as dt
import html
import random
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from hubspot.crm.association_type import AssociationType
from hubspot.crm.deals import Filter, FilterGroup, PublicObjectSearchRequest

from connectors.hubspot_associations import associations_of, batch_associations
from connectors.hubspot_attachments import Attachments
from connectors.hubspot_client import (
    BATCH_LIMIT,
    HISTORY_BATCH_LIMIT,
    ConflictError,
    HubSpotApi,
    NotFoundError,
    chunks,
    next_after,
    results_of,
)
from connectors.hubspot_settings import HubSpotSettings
from connectors.registry import register_crm
from kernel.connector import Acceptance, CrmConnector, PushBack, StageEntry
from kernel.errors import ConnectorError, PartialFailure, PermanentError, QuotaError, RetryableError
from kernel.mapping import Mapping
from kernel.packet import Packet
from kernel.settings import SharedSettings
from kernel.text import inert

DEAL_OBJECT_TYPE_ID = "0-3"
DEAL_TO_PRIMARY_COMPANY = AssociationType.PRIMARY_DEAL_TO_COMPANY  # 5
TASK_TO_DEAL = AssociationType.TASK_TO_DEAL  # 216

# Read on every deal whatever the mapping says: they fill the packet's CRM references.
DEAL_BASE_PROPERTIES = ("dealname", "dealstage", "pipeline", "hubspot_owner_id")

_ASSOCIATED = (("companies", "company"), ("contacts", "contact"), ("line_items", "line_item"))

# HubSpot's calculated "Date entered <stage id>" deal property: when the deal last
# entered that stage. Only HubSpot writes it; search can filter on it.
DATE_ENTERED_PREFIX = "hs_v2_date_entered_"
# Search answers 200 results a page and 10,000 a query, and has its own limit of
# 5 requests a second per token (a 429 with policyName SECONDLY): keep well under it.
SEARCH_PAGE = 200
SEARCH_RESULT_CAP = 10_000
SEARCH_INTERVAL_SECONDS = 0.25
SEARCH_TRIES = 4
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The unique-value task property holding the hand-off id (`fullkit hubspot setup`): HubSpot
# refuses a second task with the same value, however late the first create lands.
HANDOFF_PROPERTY = "fullkit_handoff_id"

# The marker that ties a task to its hand-off attempt in its body (tasks made before the
# property existed are found by it).
MARKER_PREFIX = "Fullkit hand-off "
_MARKER = re.compile(re.escape(MARKER_PREFIX) + r"([^\s<]+)")


def task_subject(missing_count: int) -> str:
    noun = "item" if missing_count == 1 else "items"
    return f"Hand-off returned: {missing_count} {noun} missing"


def task_body(item: PushBack) -> str:
    """HubSpot shows task bodies as HTML; one item per line keeps the raw text readable too."""
    # One line each, escaped: no message can add a line, a tag or a link of its own.
    lines = "\n".join(
        f"<li>{inert(message, markup='html', links=True)}</li>" for message in item.missing
    )
    return (
        "<p>The hand-off to ops was returned because the kit is incomplete. Missing:</p>\n"
        f"<ul>\n{lines}\n</ul>\n"
        f"<p>{MARKER_PREFIX}{html.escape(item.handoff_id)}</p>"
    )


def marker_of(body: str | None) -> str | None:
    if not body:
        return None
    found = _MARKER.search(body)
    return html.unescape(found.group(1)) if found else None


def end_of_day_ms(moment: dt.datetime, zone: dt.tzinfo) -> str:
    """23:59 of moment's day in the portal's time zone: due today, not yet overdue."""
    local = moment.astimezone(zone)
    end = local.replace(hour=23, minute=59, second=0, microsecond=0)
    return str(int(end.timestamp() * 1000))


def previous_stage(history: Iterable[dict[str, Any]], current: str | None) -> str | None:
    """The newest stage value in the history that differs from the current stage."""
    entries = [entry for entry in history if isinstance(entry, dict)]
    # HubSpot answers newest first; sorting by timestamp keeps us right if it ever does not.
    entries.sort(key=lambda entry: str(entry.get("timestamp") or ""), reverse=True)
    for entry in entries:
        value = entry.get("value")
        if value and value != current:
            return str(value)
    return None


@register_crm
class HubSpotConnector(CrmConnector):
    name = "hubspot"
    settings_class = HubSpotSettings

    def __init__(self, settings: SharedSettings, mapping: Mapping) -> None:
        super().__init__(settings, mapping)
        self._api: HubSpotApi | None = None
        self._next_search_at = 0.0

    @property
    def api(self) -> HubSpotApi:
        # Built on first use so a disabled connector can still be constructed and listed.
        if self._api is None:
            self._api = HubSpotApi(self.settings, budgets=self.rate_budgets, cache=self.cache)
        return self._api

    def prepare(self) -> None:
        # Every batch writes record links (portal id) and task due times (time zone), and
        # records its deal owners' names.
        self.api.time_zone()
        self.api.remember_owner_names()

    # --- reading -------------------------------------------------------------------

    def fetch_packets(
        self, deal_ids: Sequence[str], *, with_attachments: bool = False
    ) -> dict[str, Packet]:
        ids = list(dict.fromkeys(str(deal_id) for deal_id in deal_ids))
        if not ids:
            return {}
        if len(ids) == 1:
            deals, links = self._read_one_deal(ids[0])
        else:
            deals, links = self._read_many_deals(ids)
        if not deals:
            return {}
        wanted: dict[str, list[str]] = {}
        for kind, _ in _ASSOCIATED:
            seen: dict[str, None] = {}
            for deal_id in deals:
                for target, _primary in links.get(deal_id, {}).get(kind, []):
                    seen.setdefault(target)
            wanted[kind] = list(seen)
        records = {kind: self._read_objects(kind, obj, wanted[kind]) for kind, obj in _ASSOCIATED}
        files = Attachments(self.api).of_deals(list(deals)) if with_attachments else {}
        packets = {
            deal_id: self._packet(deal_id, deal, links.get(deal_id, {}), records)
            for deal_id, deal in deals.items()
        }
        for deal_id, packet in packets.items():
            packet.attachments = files.get(deal_id, [])
        self._name_owners(packets.values())
        return packets

    def _name_owners(self, packets: Iterable[Packet]) -> None:
        """Each deal owner's email and name: one read per distinct owner, shared through
        the cache, so a batch of a team's deals costs a call per salesperson at most."""
        by_owner: dict[str, list[Packet]] = {}
        for packet in packets:
            if packet.owner_ref:
                by_owner.setdefault(packet.owner_ref, []).append(packet)
        for owner_id, owned in by_owner.items():
            found = self.api.owner_name(owner_id)
            if found is None:
                continue  # the id alone is shown
            for packet in owned:
                packet.owner_email, packet.owner_name = found.email, found.name

    def fill_attachments(self, packets: Sequence[Packet]) -> None:
        if not packets:
            return
        files = Attachments(self.api).of_deals(list(dict.fromkeys(p.deal_id for p in packets)))
        for packet in packets:
            packet.attachments = files.get(packet.deal_id, [])

    def _deal_properties(self) -> list[str]:
        return sorted(set(self.mapping.properties("deal")) | set(DEAL_BASE_PROPERTIES))

    def _read_one_deal(
        self, deal_id: str
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[tuple[str, bool]]]]]:
        api = self.api
        try:
            deal = api.call(
                "read deal",
                api.client.crm.deals.basic_api.get_by_id,
                deal_id,
                properties=self._deal_properties(),
                properties_with_history=["dealstage"],
                associations=[kind for kind, _ in _ASSOCIATED],
            )
        except NotFoundError:
            return {}, {}
        if not isinstance(deal, dict):
            return {}, {}
        links, paged = _v3_associations(deal.get("associations"))
        for kind in paged:
            # The read embeds only a first page; the list endpoint has them all.
            links[kind] = [
                (target, DEAL_TO_PRIMARY_COMPANY in types)
                for target, types in associations_of(api, "deals", str(deal.get("id")), kind)
            ]
        # Keyed by the id asked for: a merged deal answers under its new id, and the
        # caller looks the packet up by the id it has.
        return {deal_id: deal}, {deal_id: links}

    def _read_many_deals(
        self, ids: list[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[tuple[str, bool]]]]]:
        api = self.api
        deals: dict[str, dict[str, Any]] = {}
        # With propertiesWithHistory HubSpot refuses a batch of more than 50.
        for part in chunks(ids, HISTORY_BATCH_LIMIT):
            answer = api.call(
                "batch read deals",
                api.client.crm.deals.batch_api.read,
                {
                    "inputs": [{"id": deal_id} for deal_id in part],
                    "properties": self._deal_properties(),
                    "propertiesWithHistory": ["dealstage"],
                },
            )
            for result in results_of(answer):
                deals[str(result.get("id"))] = result
        links: dict[str, dict[str, list[tuple[str, bool]]]] = {deal_id: {} for deal_id in deals}
        if deals:
            for kind, _ in _ASSOCIATED:
                for deal_id, targets in batch_associations(api, "deals", kind, list(deals)).items():
                    if deal_id in links:
                        links[deal_id][kind] = [
                            (target, DEAL_TO_PRIMARY_COMPANY in types) for target, types in targets
                        ]
        return deals, links

    def _read_objects(self, kind: str, obj: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """{id: properties} of associated records; records HubSpot lacks are left out."""
        if not ids:
            return {}
        properties = self.mapping.properties(obj)
        if not properties:
            # Nothing mapped: the records still count (e.g. `size(line_items) > 0`),
            # but there is nothing worth a call to read.
            return {object_id: {} for object_id in ids}
        api = self.api
        batch_api = getattr(api.client.crm, kind).batch_api
        records: dict[str, dict[str, Any]] = {}
        for part in chunks(ids, BATCH_LIMIT):
            answer = api.call(
                f"batch read {kind}",
                batch_api.read,
                {
                    "inputs": [{"id": object_id} for object_id in part],
                    "properties": properties,
                    "propertiesWithHistory": [],
                },
            )
            for result in results_of(answer):
                records[str(result.get("id"))] = result.get("properties") or {}
        return records

    def _packet(
        self,
        deal_id: str,
        deal: dict[str, Any],
        links: dict[str, list[tuple[str, bool]]],
        records: dict[str, dict[str, dict[str, Any]]],
    ) -> Packet:
        props: dict[str, Any] = deal.get("properties") or {}
        history = (deal.get("propertiesWithHistory") or {}).get("dealstage") or []
        stage = props.get("dealstage") or None
        company_ref = _primary(links.get("companies", []), records["companies"])
        company_props = records["companies"].get(company_ref, {}) if company_ref else {}
        contacts = [
            self.mapping.to_canonical("contact", records["contacts"][target])
            for target in _unique(target for target, _ in links.get("contacts", []))
            if target in records["contacts"]
        ]
        line_items = [
            self.mapping.to_canonical("line_item", records["line_items"][target])
            for target in _unique(target for target, _ in links.get("line_items", []))
            if target in records["line_items"]
        ]
        return Packet(
            crm=self.name,
            deal_id=deal_id,
            deal=self.mapping.to_canonical("deal", props),
            company=self.mapping.to_canonical("company", company_props) if company_ref else {},
            contacts=contacts,
            line_items=line_items,
            name=str(props.get("dealname") or ""),
            stage_ref=stage,
            previous_stage_ref=previous_stage(history, stage),
            owner_ref=props.get("hubspot_owner_id") or None,
            company_ref=company_ref,
            url=self.api.record_url(DEAL_OBJECT_TYPE_ID, deal_id),
        )

    # --- searching -----------------------------------------------------------------

    def deals_in_stages(
        self, stage_refs: Sequence[str], entered_after: dt.datetime, entered_before: dt.datetime
    ) -> list[StageEntry]:
        window = (_epoch_ms(entered_after), _epoch_ms(entered_before))
        found: list[StageEntry] = []
        for stage in dict.fromkeys(stage_refs):
            found.extend(self._deals_in_stage(stage, window))
        return found

    def _deals_in_stage(self, stage: str, window: tuple[str, str]) -> list[StageEntry]:
        entered = DATE_ENTERED_PREFIX + stage
        found: list[StageEntry] = []
        after: str | None = None
        floor: str | None = None
        taken = 0
        while True:
            answer = self._search(_stage_query(stage, entered, window, floor, after))
            results = results_of(answer)
            for result in results:
                props = result.get("properties") or {}
                at = _instant(props.get(entered))
                if at is None:
                    raise PermanentError(f"HubSpot search deals: {entered} unreadable")
                found.append(StageEntry(str(result.get("id")), stage, at))
            after = _next_after(answer)
            if after is None or not results:
                return found
            taken += len(results)
            if taken + SEARCH_PAGE > SEARCH_RESULT_CAP:
                # Search pages no further than 10,000 results: a new query takes up
                # after the last id seen (results are sorted by id).
                after, floor, taken = None, str(results[-1].get("id")), 0

    def _search(self, request: PublicObjectSearchRequest) -> Any:
        """One search call, paced under the search limit; 429s and 5xx tried again."""
        api = self.api
        failures = 0
        while True:
            time.sleep(max(0.0, self._next_search_at - time.monotonic()))
            self._next_search_at = time.monotonic() + SEARCH_INTERVAL_SECONDS
            try:
                return api.call("search deals", api.client.crm.deals.search_api.do_search, request)
            except QuotaError:
                raise  # a spent daily limit: asking again before its reset only wastes calls
            except RetryableError as exc:
                failures += 1
                if failures == SEARCH_TRIES:
                    raise
                # Exponential with jitter: search's 429 names its policy but carries no Retry-After.
                ceiling = float(2 ** (failures - 1))
                wait = max(random.uniform(ceiling / 2, ceiling), exc.retry_after or 0.0)
                self._next_search_at = time.monotonic() + wait

    # --- writing -------------------------------------------------------------------

    def create_return_tasks(
        self, items: Sequence[PushBack], *, may_exist: bool = False
    ) -> dict[str, str]:
        """One task per hand-off, guarded by the unique task property `fullkit_handoff_id`.

        HubSpot refuses a second task with the same hand-off id, so a retry after a
        timeout whose create landed late (or lands later still) cannot make a second
        task: the refused create turns into a consistent read of the existing one. With
        may_exist (a retry), tasks made before the property existed are looked for too.
        """
        todo = list({item.handoff_id: item for item in items}.values())
        done: dict[str, str] = {}
        if may_exist and todo:
            done = self._existing_tasks(todo)
            todo = [item for item in todo if item.handoff_id not in done]
        if not todo:
            return done
        failed: dict[str, ConnectorError] = {}
        if len(todo) == 1:
            self._create_task_alone(todo[0], done, failed)
        for part in chunks(todo) if len(todo) > 1 else []:
            self._create_task_batch(part, done, failed)
        if failed:
            raise PartialFailure("HubSpot create tasks", failed, done)
        return done

    def _create_task_batch(
        self, part: list[PushBack], done: dict[str, str], failed: dict[str, ConnectorError]
    ) -> None:
        """A multi-status batch create: each input carries its hand-off id as its
        `objectWriteTraceId`, so HubSpot names the input each error belongs to."""
        api = self.api
        try:
            answer = api.call(
                "batch create tasks",
                api.client.crm.objects.tasks.batch_api.create,
                {
                    "inputs": [
                        {**self._task_input(i), "objectWriteTraceId": i.handoff_id} for i in part
                    ]
                },
            )
        except PermanentError:
            # Refused as a whole (nothing is created then): each alone tells which one.
            for item in part:
                self._create_task_alone(item, done, failed)
            return
        for result in results_of(answer):
            handoff_id = _task_handoff_id(result)
            if handoff_id is not None:
                done[handoff_id] = str(result.get("id"))
        errors = _batch_errors("batch create tasks", answer, key="objectWriteTraceId")
        for item in part:
            if item.handoff_id in done:
                continue
            error = errors.get(item.handoff_id) or errors.get("")
            existing = (
                self._task_by_handoff_id(item.handoff_id) if error and _taken(error) else None
            )
            if existing is not None:
                done[item.handoff_id] = existing  # made by an earlier try: ours
            else:
                # Without an id the task may exist; the unique hand-off id guards a retry.
                failed[item.handoff_id] = error or RetryableError(
                    f"HubSpot batch create tasks: no task id for {item.handoff_id}"
                )

    def _create_task_alone(
        self, item: PushBack, done: dict[str, str], failed: dict[str, ConnectorError]
    ) -> None:
        """Create one task; if its hand-off id is taken, the task that holds it is ours."""
        api = self.api
        try:
            try:
                created = api.call(
                    "create task",
                    api.client.crm.objects.tasks.basic_api.create,
                    self._task_input(item),
                )
            except PermanentError as refused:
                if not _taken(refused):
                    raise
                existing = self._task_by_handoff_id(item.handoff_id)
                if existing is None:
                    raise
                done[item.handoff_id] = existing
                return
        except (PermanentError, RetryableError) as exc:
            # This item waits for its retry (or fails) alone; the batch goes on.
            failed[item.handoff_id] = exc
            return
        done[item.handoff_id] = str(created["id"])

    def _task_by_handoff_id(self, handoff_id: str) -> str | None:
        api = self.api
        tasks = api.client.crm.objects.tasks.basic_api
        return api.id_by_unique(
            "read task by hand-off id", tasks.get_by_id, HANDOFF_PROPERTY, handoff_id
        )

    def _task_input(self, item: PushBack) -> dict[str, Any]:
        properties = {
            "hs_task_subject": task_subject(len(item.missing)),
            "hs_task_body": task_body(item),
            "hs_timestamp": end_of_day_ms(item.returned_at, self.api.time_zone()),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "HIGH",
            "hs_task_type": "TODO",
            HANDOFF_PROPERTY: item.handoff_id,
        }
        if item.owner_ref:
            properties["hubspot_owner_id"] = str(item.owner_ref)
        return {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": item.deal_id},
                    "types": [
                        {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": TASK_TO_DEAL,
                        }
                    ],
                }
            ],
        }

    def _existing_tasks(self, items: list[PushBack]) -> dict[str, str]:
        """Tasks already made for these hand-offs, found through the deals' associations.

        Associations are read back consistently right after a write, unlike search,
        which may miss a task created a moment ago.
        """
        deal_ids = list(dict.fromkeys(item.deal_id for item in items))
        # Every page: a task missed on a later page would be created a second time.
        links = batch_associations(self.api, "deals", "tasks", deal_ids)
        task_ids = list(_unique(target for targets in links.values() for target, _ in targets))
        wanted = {item.handoff_id for item in items}
        found: dict[str, str] = {}
        api = self.api
        for part in chunks(task_ids):
            answer = api.call(
                "batch read tasks",
                api.client.crm.objects.tasks.batch_api.read,
                {
                    "inputs": [{"id": task_id} for task_id in part],
                    "properties": ["hs_task_body"],
                    "propertiesWithHistory": [],
                },
            )
            for result in results_of(answer):
                handoff_id = marker_of((result.get("properties") or {}).get("hs_task_body"))
                if handoff_id in wanted and handoff_id not in found:
                    found[handoff_id] = str(result.get("id"))
        return found

    def write_returns(self, items: Sequence[PushBack]) -> None:
        self._update_deals("write push-back", {item.deal_id: _returned(item) for item in items})

    def write_acceptances(self, items: Sequence[Acceptance]) -> None:
        self._update_deals("write acceptance", {item.deal_id: _accepted(item) for item in items})

    def write_outcomes(
        self, returns: Sequence[PushBack], acceptances: Sequence[Acceptance]
    ) -> None:
        """Push-backs and acceptances of a batch in one batch update (distinct deals)."""
        updates = {item.deal_id: _returned(item) for item in returns}
        updates.update({item.deal_id: _accepted(item) for item in acceptances})
        self._update_deals("write back", updates)

    def _update_deals(self, operation: str, updates: dict[str, dict[str, str]]) -> None:
        """One PATCH for one deal, batch updates of up to 100 otherwise (a deal's last wins).

        A deal HubSpot refuses fails alone (PartialFailure keyed by deal id); a failure of
        the whole call (429, 5xx) is raised as it is, for the whole batch to retry.
        """
        if not updates:
            return
        failed: dict[str, ConnectorError] = {}
        if len(updates) == 1:
            ((deal_id, properties),) = updates.items()
            self._update_alone(operation, deal_id, properties, failed)
        api = self.api
        for part in chunks(list(updates.items())) if len(updates) > 1 else []:
            try:
                answer = api.call(
                    operation,
                    api.client.crm.deals.batch_api.update,
                    {"inputs": [{"id": deal_id, "properties": props} for deal_id, props in part]},
                )
            except PermanentError:
                # A value refused for one input refuses the whole batch: each alone says whose.
                for deal_id, properties in part:
                    self._update_alone(operation, deal_id, properties, failed)
                continue
            errors = _batch_errors(operation, answer)
            unnamed = errors.pop("", None)
            failed.update(errors)
            if unnamed is not None:
                # An error naming no deal: whose it was only each deal alone can tell
                # (writing the same values again changes nothing for those it reached).
                for deal_id, properties in part:
                    if deal_id not in errors:
                        self._update_alone(operation, deal_id, properties, failed)
        if failed:
            raise PartialFailure(f"HubSpot {operation}", failed)

    def _update_alone(
        self,
        operation: str,
        deal_id: str,
        properties: dict[str, str],
        failed: dict[str, ConnectorError],
    ) -> None:
        api = self.api
        try:
            api.call(
                operation,
                api.client.crm.deals.basic_api.update,
                deal_id,
                {"properties": properties},
            )
        except (PermanentError, RetryableError) as exc:
            failed[deal_id] = exc  # this deal alone retries or fails; the others go on


def _returned(item: PushBack) -> dict[str, str]:
    return {
        "dealstage": item.return_stage_ref,
        "fullkit_status": "returned",
        "fullkit_missing": "\n".join(item.missing),
    }


def _accepted(item: Acceptance) -> dict[str, str]:
    return {
        "fullkit_status": "accepted",
        "fullkit_ops_owner": item.ops_owner_email or "",
        "fullkit_ops_link": item.ops_link,
        # Date properties take an ISO date; HubSpot stores it as midnight UTC.
        "fullkit_expected_kickoff": item.expected_kickoff.isoformat(),
        "fullkit_missing": "",
    }


def _stage_query(
    stage: str, entered: str, window: tuple[str, str], floor: str | None, after: str | None
) -> PublicObjectSearchRequest:
    filters = [
        Filter(property_name="dealstage", operator="EQ", value=stage),
        Filter(property_name=entered, operator="GTE", value=window[0]),
        Filter(property_name=entered, operator="LTE", value=window[1]),
    ]
    if floor is not None:
        filters.append(Filter(property_name="hs_object_id", operator="GT", value=floor))
    return PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=filters)],
        sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        properties=["dealstage", entered],
        limit=SEARCH_PAGE,
        after=after,
    )


def _epoch_ms(moment: dt.datetime) -> str:
    return str((moment - _EPOCH) // dt.timedelta(milliseconds=1))


def _next_after(answer: Any) -> str | None:
    paging = answer.get("paging") if isinstance(answer, dict) else None
    after = ((paging or {}).get("next") or {}).get("after")
    return str(after) if after else None


def _instant(raw: Any) -> dt.datetime | None:
    """A HubSpot datetime value: ISO 8601 on the wire, epoch milliseconds in older answers."""
    text = str(raw or "").strip()
    if text.isdigit():
        return _EPOCH + dt.timedelta(milliseconds=int(text))
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


_RETRYABLE_CATEGORIES = {"RATE_LIMITS", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE"}


def _batch_errors(operation: str, answer: Any, key: str = "ids") -> dict[str, ConnectorError]:
    """A 207 answer's per-item errors: {item: error}, "" for errors naming no item.

    HubSpot names the inputs an error concerns in its context: object ids under `ids`
    (e.g. OBJECT_NOT_FOUND of an update), a create's own `objectWriteTraceId`. The
    error is permanent unless HubSpot itself failed.
    """
    found: dict[str, ConnectorError] = {}
    errors = answer.get("errors") if isinstance(answer, dict) else None
    for error in errors or []:
        if not isinstance(error, dict):
            continue
        category = str(error.get("category") or "")
        message = str(error.get("message") or "")
        text = f"HubSpot {operation}: {category}: {message}".rstrip(": ")
        kind = RetryableError(text) if category in _RETRYABLE_CATEGORIES else PermanentError(text)
        context = error.get("context")
        ids = context.get(key) if isinstance(context, dict) else None
        for object_id in ids if isinstance(ids, list) and ids else [""]:
            found.setdefault(str(object_id), kind)
    return found


def _task_handoff_id(result: dict[str, Any]) -> str | None:
    """Whose task a batch result is (answers are not in input order)."""
    props = result.get("properties") or {}
    return (
        str(props.get(HANDOFF_PROPERTY) or "")
        or marker_of(props.get("hs_task_body"))
        or str(result.get("objectWriteTraceId") or "")
        or None
    )


def _taken(error: ConnectorError) -> bool:
    """HubSpot's refusal of a unique value another record holds: 400 VALIDATION_ERROR
    naming the property ("... already has that value"), elsewhere 409 CONFLICT."""
    text = str(error)
    return isinstance(error, ConflictError) or (
        HANDOFF_PROPERTY in text and "already has that value" in text
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _v3_associations(raw: Any) -> tuple[dict[str, list[tuple[str, bool]]], list[str]]:
    """A v3 object read's `associations` -> ({kind: [(id, is primary)]}, kinds with more).

    v3 names each association type: `deal_to_company` is the primary company (type 5),
    `deal_to_company_unlabeled` any other. Line items arrive under "line items". Each
    kind embeds at most one page (100); `paging.next` says there are more.
    """
    links: dict[str, list[tuple[str, bool]]] = {}
    paged: list[str] = []
    if not isinstance(raw, dict):
        return links, paged
    for key, value in raw.items():
        kind = str(key).replace(" ", "_")
        merged: dict[str, bool] = {}
        for entry in results_of(value):
            if entry.get("id") is None:
                continue
            target = str(entry["id"])
            label = str(entry.get("type") or "")
            primary = label == "deal_to_company" or "primary" in label.lower()
            merged[target] = merged.get(target, False) or primary
        links.setdefault(kind, []).extend(merged.items())
        if next_after(value) is not None:
            paged.append(kind)
    return links, paged


def _primary(links: list[tuple[str, bool]], found: dict[str, dict[str, Any]]) -> str | None:
    """The primary company, else the first associated one HubSpot still has."""
    present = [(target, primary) for target, primary in links if target in found]
    for target, primary in present:
        if primary:
            return target
    return present[0][0] if present else None
