"""An in-memory HubSpot portal that behaves like the real one.

`HubSpotSandbox` holds the portal (properties, pipelines, owners, records, property
history, associations, webhook subscriptions) and implements HubSpot's rules; the
HTTP wire format lives in `sandbox.hubspot_http`, the server in `sandbox.server`.
See `sandbox/__init__.py` for how to point hubspot-api-client at it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbox.call_log import CallRecord, matching
from sandbox.faults import Fault
from sandbox.hubspot_chaos import Chaos
from sandbox.hubspot_model import (
    ASSOCIATION_BY_ID,
    ASSOCIATION_RESULT_KEYS,
    ASSOCIATION_TYPES,
    DEFAULT_GROUPS,
    DEFAULT_READ_PROPERTIES,
    OBJECT_TYPE_IDS,
    REQUIRED_ON_CREATE,
    ApiError,
    AssociationType,
    PropertyDef,
    PropertyProblem,
    check_definition,
    created_property,
    date_entered_property,
    default_association,
    epoch_ms,
    iso,
    normalize_value,
    not_found,
    now,
    options_from,
    resolve_object_type,
    stage_properties,
    standard_properties,
    validation_error,
)
from sandbox.hubspot_webhooks import Delivery, Subscription, WebhookDispatcher

DEAL_STAGES = [
    ("appointmentscheduled", "Appointment Scheduled", "0.2"),
    ("qualifiedtobuy", "Qualified To Buy", "0.4"),
    ("presentationscheduled", "Presentation Scheduled", "0.6"),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8"),
    ("contractsent", "Contract Sent", "0.9"),
    ("closedwon", "Closed Won", "1.0"),
    ("closedlost", "Closed Lost", "0.0"),
]
TICKET_STAGES = [
    ("1", "New", "OPEN"),
    ("2", "Waiting on contact", "OPEN"),
    ("3", "Waiting on us", "OPEN"),
    ("4", "Closed", "CLOSED"),
]
PIPELINE_PROPERTIES = {
    "deals": ("pipeline", "dealstage"),
    "tickets": ("hs_pipeline", "hs_pipeline_stage"),
}


@dataclass(frozen=True)
class WriteSource:
    """Who wrote a value: goes into property history and webhook events."""

    source_type: str  # INTEGRATION, CRM_UI, API, ...
    source_id: str | None
    change_source: str

    @staticmethod
    def app(app_id: int | None) -> WriteSource:
        return WriteSource("INTEGRATION", str(app_id) if app_id else None, "INTEGRATION")

    @staticmethod
    def user(user_id: int | None) -> WriteSource:
        return WriteSource("CRM_UI", f"userId:{user_id}" if user_id else None, "CRM_UI")


@dataclass
class HistoryEntry:
    value: str
    timestamp: dt.datetime
    source: WriteSource

    def as_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "value": self.value,
            "timestamp": iso(self.timestamp),
            "sourceType": self.source.source_type,
        }
        if self.source.source_id:
            body["sourceId"] = self.source.source_id
        return body


@dataclass
class Record:
    id: str
    object_type: str
    properties: dict[str, str]
    created_at: dt.datetime
    updated_at: dt.datetime
    history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    archived: bool = False
    # (visible from, properties) pairs: what search sees, for eventual consistency.
    snapshots: list[tuple[float, dict[str, str]]] = field(default_factory=list)


@dataclass
class Owner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    created_at: dt.datetime = field(default_factory=now)

    def as_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.created_at),
            "archived": False,
            "teams": [],
        }


@dataclass
class Pipeline:
    id: str
    label: str
    stages: list[tuple[str, str, dict[str, str]]]  # (id, label, metadata)
    created_at: dt.datetime = field(default_factory=now)

    def stage_ids(self) -> list[str]:
        return [s[0] for s in self.stages]

    def as_wire(self) -> dict[str, Any]:
        ts = iso(self.created_at)
        return {
            "id": self.id,
            "label": self.label,
            "displayOrder": 0,
            "archived": False,
            "createdAt": ts,
            "updatedAt": ts,
            "stages": [
                {
                    "id": sid,
                    "label": label,
                    "displayOrder": i,
                    "metadata": meta,
                    "archived": False,
                    "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                    "createdAt": ts,
                    "updatedAt": ts,
                }
                for i, (sid, label, meta) in enumerate(self.stages)
            ],
        }


@dataclass(frozen=True)
class StoredFile:
    """A file in the portal's file manager (what the Files API answers about it)."""

    id: str
    name: str  # without the extension, as HubSpot stores it
    extension: str
    type: str  # HubSpot's coarse kind: DOCUMENT, IMG, ...
    size: int
    created_at: dt.datetime

    def as_wire(self, base_url: str) -> dict[str, Any]:
        # Engagement attachments are hidden files: private, no public hosting URL.
        return {
            "id": self.id,
            "name": self.name,
            "extension": self.extension,
            "type": self.type,
            "size": self.size,
            "access": "HIDDEN_PRIVATE",
            "isUsableInContent": False,
            "url": f"{base_url}/hubfs/{self.id}/{self.name}.{self.extension}",
            "path": f"/{self.name}.{self.extension}",
            "archived": False,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.created_at),
        }


AssocKey = tuple[str, str]  # (object type, id)
CreateInput = tuple[dict[str, Any], list[tuple[str, str, int]]]  # properties, associations


@dataclass
class LateCreate:
    """A create answered with a timeout that HubSpot applies afterwards."""

    object_type: str
    inputs: list[CreateInput]
    source: WriteSource


class HubSpotSandbox:
    """One fake HubSpot portal. Thread-safe; every public method takes the lock."""

    def __init__(
        self,
        *,
        access_token: str = "sandbox-token",
        app_id: int = 1_000_001,
        portal_id: int = 62_515,
        rate_limit: tuple[int, float] | None = (100, 10.0),
        search_rate_limit: tuple[int, float] | None = (5, 1.0),
        search_lag_seconds: float = 0.0,
        search_result_cap: int = 10_000,
        time_zone: str = "UTC",
        ui_domain: str | None = None,
        scopes: Iterable[str] | None = None,
    ) -> None:
        self.portal_id = portal_id
        self.app_id = app_id
        self.time_zone = time_zone
        # The account details' uiDomain (e.g. app-eu1.hubspot.com); None: this server.
        self.ui_domain = ui_domain
        # HubSpot's association page sizes: an object read embeds 100 per type, a v4
        # batch read gives each object a page of 500 (HubSpot's documented list limit).
        self.association_embed_limit = 100
        self.association_batch_page = 500
        self.rate_limit = rate_limit
        self.search_rate_limit = search_rate_limit
        self.search_lag_seconds = search_lag_seconds
        self.search_result_cap = search_result_cap
        self.base_url = ""  # set by the server; used for UI links
        self.lock = threading.RLock()
        self.tokens: dict[str, int | None] = {access_token: app_id}
        # What HubSpot granted each token at install: by default the app config's
        # requiredScopes, as for the app Fullkit ships.
        self.token_scopes: dict[str, frozenset[str]] = {
            access_token: frozenset(_app_scopes() if scopes is None else scopes)
        }
        self.access_token = access_token
        self._ids = itertools.count(10_001)
        self._owner_ids = itertools.count(70_000_001)
        self._event_ids = itertools.count(1)
        self._subscription_ids = itertools.count(1)
        self.properties: dict[str, dict[str, PropertyDef]] = {
            t: {p.name: p for p in defs} for t, defs in standard_properties().items()
        }
        self.groups: dict[str, dict[str, dict[str, Any]]] = {
            t: {
                g: {
                    "name": g,
                    "label": g.replace("information", " information").title(),
                    "displayOrder": -1,
                    "archived": False,
                }
            }
            for t, g in DEFAULT_GROUPS.items()
        }
        self.pipelines: dict[str, dict[str, Pipeline]] = {
            "deals": {
                "default": Pipeline(
                    "default",
                    "Sales Pipeline",
                    [
                        (
                            sid,
                            label,
                            {
                                "isClosed": str(sid.startswith("closed")).lower(),
                                "probability": prob,
                            },
                        )
                        for sid, label, prob in DEAL_STAGES
                    ],
                )
            },
            "tickets": {
                "0": Pipeline(
                    "0",
                    "Support Pipeline",
                    [(sid, label, {"ticketState": state}) for sid, label, state in TICKET_STAGES],
                )
            },
        }
        for pipeline in self.pipelines["deals"].values():
            for prop in stage_properties(pipeline.stage_ids()):
                self.properties["deals"][prop.name] = prop
        self.owners: dict[str, Owner] = {}
        self.records: dict[str, dict[str, Record]] = {t: {} for t in OBJECT_TYPE_IDS}
        # (from type, from id) -> (to type, to id) -> {type ids}
        self.associations: dict[AssocKey, dict[AssocKey, set[int]]] = {}
        self.subscriptions: list[Subscription] = []
        self.webhooks = WebhookDispatcher()
        self.call_log: list[CallRecord] = []
        self.faults: list[Fault] = []
        # Random 5xx, 429 bursts and late answers for chaos runs; off unless set.
        self.chaos = Chaos()
        self.request_times: dict[tuple[str, str], deque[float]] = {}
        self.files: dict[str, StoredFile] = {}
        self._file_ids = itertools.count(190_000_001)
        # Creates HubSpot took but answered with a timeout: applied when the test says.
        self.late_creates_pending = 0
        self.late_creates: list[LateCreate] = []
        self.late_refusals: list[ApiError] = []

    # ------------------------------------------------------------------ set-up

    def add_token(
        self, token: str, app_id: int | None = None, scopes: Iterable[str] | None = None
    ) -> None:
        """Accept another bearer token (e.g. a second app), granted `scopes` (default:
        the app config's requiredScopes)."""
        with self.lock:
            self.tokens[token] = app_id
            self.token_scopes[token] = frozenset(_app_scopes() if scopes is None else scopes)

    def set_scopes(self, token: str, scopes: Iterable[str]) -> None:
        """Re-install the app with other scopes: the token now has exactly `scopes`."""
        with self.lock:
            if token not in self.tokens:
                raise KeyError("unknown token")
            self.token_scopes[token] = frozenset(scopes)

    def define_property(
        self,
        object_type: str,
        name: str,
        type: str,
        field_type: str,
        options: list[str] | list[dict[str, Any]] | None = None,
        has_unique_value: bool = False,
        *,
        label: str | None = None,
        group_name: str | None = None,
    ) -> None:
        """Create a custom property as an admin would in the UI (no HTTP, no 409)."""
        otype = self._object_type(object_type)
        body = {
            "name": name,
            "label": label or name.replace("_", " ").capitalize(),
            "type": type,
            "fieldType": field_type,
            "groupName": group_name or DEFAULT_GROUPS[otype],
            "options": options_from(options),
            "hasUniqueValue": has_unique_value,
        }
        with self.lock:
            self.properties[otype].pop(name, None)
            self.create_property(otype, body)

    def add_owner(self, email: str, first_name: str = "", last_name: str = "") -> str:
        """An owner (a HubSpot user) -> owner id. Idempotent by email."""
        with self.lock:
            for owner in self.owners.values():
                if owner.email.lower() == email.lower():
                    return owner.id
            if not first_name:
                local = email.split("@")[0].replace(".", "-").split("-")
                first_name = local[-1].capitalize()
                last_name = last_name or (local[0].capitalize() if len(local) > 1 else "")
            oid = str(next(self._owner_ids))
            self.owners[oid] = Owner(oid, email, first_name, last_name, int(oid) - 60_000_000)
            return oid

    def seed_default_portal(self) -> None:
        """The custom properties and users the default Fullkit mapping and kits expect."""
        self.define_property(
            "deals", "plan_tier", "enumeration", "select", ["starter", "pro", "enterprise"]
        )
        self.define_property("deals", "kickoff_date", "date", "date")
        self.define_property("deals", "sso_provider", "string", "text")
        self.define_property(
            "contacts",
            "contact_role",
            "enumeration",
            "select",
            ["billing", "champion", "technical"],
        )
        for email in (
            "sales-sam@example.com",
            "sales-sara@example.com",
            "ops-anna@example.com",
            "ops-ben@example.com",
        ):
            self.add_owner(email)

    def subscribe(
        self,
        target_url: str,
        client_secret: str,
        app_id: int | None = None,
        *,
        object_type: str = "deals",
        property_name: str = "dealstage",
        signature_version: str = "v1",
        generic: bool = False,
    ) -> int:
        """Send `<object>.propertyChange` events for one property to target_url
        (`object.propertyChange` with the objectTypeId when `generic`, as the
        `crmObjects` subscription of `hubspot-app/` makes HubSpot send)."""
        with self.lock:
            sub = Subscription(
                id=next(self._subscription_ids),
                target_url=target_url,
                client_secret=client_secret,
                app_id=app_id if app_id is not None else self.app_id,
                object_type=self._object_type(object_type),
                property_name=property_name,
                signature_version=signature_version,
                generic=generic,
            )
            self.subscriptions.append(sub)
            return sub.id

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        path_prefix: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next n API calls (whose path starts with path_prefix) with `status`:
        a 5xx, 423 (locked) or 477 (portal migration), with Retry-After if given."""
        with self.lock:
            self.faults.append(Fault(n, status, path_prefix, retry_after))

    def exhaust_daily_limit(self, n: int = 1, path_prefix: str | None = None) -> None:
        """Answer the next n API calls with HubSpot's 429 for a spent daily limit."""
        with self.lock:
            self.faults.append(Fault(n, 429, path_prefix, policy="DAILY"))

    def answer_creates_late(self, n: int = 1) -> None:
        """The next n object creates (single or batch) answer 504 at once, as a gateway
        gives up on a slow backend, yet HubSpot still applies them: when
        `apply_late_creates()` says, after the client has moved on."""
        with self.lock:
            self.late_creates_pending += n

    def apply_late_creates(self) -> int:
        """Apply the creates answered late, as HubSpot would; -> how many records were made.

        Each is checked as any create is: one whose unique value is taken by then is
        refused (kept in `late_refusals`), as HubSpot refuses it.
        """
        made = 0
        with self.lock:
            pending, self.late_creates = self.late_creates, []
            for late in pending:
                try:
                    made += len(self.create_many(late.object_type, late.inputs, late.source))
                except ApiError as refused:
                    self.late_refusals.append(refused)
        return made

    def attach_file(
        self,
        deal_id: str,
        name: str,
        extension: str = "pdf",
        *,
        via: str = "notes",
        file_type: str = "DOCUMENT",
        size: int = 48_213,
    ) -> str:
        """Upload a file and attach it to a new note (or email) on the deal -> file id."""
        with self.lock:
            file_id = str(next(self._file_ids))
            self.files[file_id] = StoredFile(file_id, name, extension, file_type, size, now())
            kind = self._object_type(via)
            body = {"notes": "hs_note_body", "emails": "hs_email_subject"}[kind]
            engagement = self.create(
                kind,
                {body: f"{name}.{extension}", "hs_timestamp": str(epoch_ms(now())),
                 "hs_attachment_ids": file_id},
                source=WriteSource.user(None),
            )  # fmt: skip
            type_id = default_association("deals", kind)
            assert type_id is not None
            self.associate("deals", str(deal_id), kind, engagement.id, type_id.type_id)
            return file_id

    # ------------------------------------------------------------- test helpers

    @property
    def request_count(self) -> int:
        with self.lock:
            return len(self.call_log)

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[CallRecord]:
        """API calls received so far, optionally filtered."""
        with self.lock:
            return matching(self.call_log, method, path_prefix)

    def reset_calls(self) -> None:
        with self.lock:
            self.call_log.clear()

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook POST attempt made, with the status it got."""
        return self.webhooks.deliveries()

    @contextmanager
    def hold_webhooks(self) -> Iterator[None]:
        """Queue webhook events without sending; on exit they go out batched."""
        self.webhooks.hold(True)
        try:
            yield
        finally:
            self.webhooks.hold(False)

    def flush_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until every queued webhook batch is delivered or given up on."""
        return self.webhooks.flush(timeout)

    def send_events(
        self, events: list[dict[str, Any]], subscription_id: int | None = None
    ) -> int | None:
        """Deliver a hand-crafted batch (signed, once, now) -> HTTP status or None."""
        with self.lock:
            if not self.subscriptions:
                raise RuntimeError("no webhook subscription: call subscribe() first")
            sub = next(
                (s for s in self.subscriptions if s.id == subscription_id), self.subscriptions[0]
            )
        return self.webhooks.deliver_now(sub, events)

    def deal_event(self, deal_id: str, stage: str, **overrides: Any) -> dict[str, Any]:
        """A well-formed deal.propertyChange event, e.g. to feed send_events."""
        with self.lock:
            sub = self.subscriptions[0] if self.subscriptions else None
            event = {
                "eventId": next(self._event_ids),
                "subscriptionId": sub.id if sub else 1,
                "portalId": self.portal_id,
                "appId": sub.app_id if sub else self.app_id,
                "occurredAt": epoch_ms(now()),
                "subscriptionType": "deal.propertyChange",
                "attemptNumber": 0,
                "objectId": int(deal_id),
                "propertyName": "dealstage",
                "propertyValue": stage,
                "changeSource": "CRM_UI",
                "sourceId": None,
            }
        event.update(overrides)
        return event

    def create_deal(
        self,
        properties: Mapping[str, str] | None = None,
        *,
        company: Mapping[str, str] | str | None = None,
        contacts: Iterable[Mapping[str, str] | str] = (),
        line_items: Iterable[Mapping[str, str]] = (),
        owner_email: str | None = None,
    ) -> str:
        """Create a deal with its company, contacts and line items -> deal id.

        Company and contacts may be property maps (created) or existing ids. Values
        are validated like API writes; history is attributed to a CRM user.
        """
        props = dict(properties or {})
        with self.lock:
            source = WriteSource.user(None)
            if owner_email:
                owner_id = self.add_owner(owner_email)
                props.setdefault("hubspot_owner_id", owner_id)
                source = WriteSource.user(self.owners[owner_id].user_id)
            deal = self.create("deals", props, source=source)
            if company is not None:
                cid = self._existing_or_new("companies", company, source)
                self.associate("deals", deal.id, "companies", cid, 5)
            for contact in contacts:
                kid = self._existing_or_new("contacts", contact, source)
                self.associate("deals", deal.id, "contacts", kid, 3)
            for item in line_items:
                lid = self.create("line_items", dict(item), source=source).id
                self.associate("deals", deal.id, "line_items", lid, 19)
            return deal.id

    def _existing_or_new(
        self, otype: str, record: Mapping[str, str] | str, source: WriteSource
    ) -> str:
        """An existing record's id as given, or the id of one created from properties."""
        if isinstance(record, str):
            return record
        return self.create(otype, dict(record), source=source).id

    def move_deal(
        self, deal_id: str, stage: str, by_user: bool = True, *, at: dt.datetime | None = None
    ) -> None:
        """Change a deal's stage as a salesperson in the UI would (fires webhooks).

        `at` dates the change in the past, as if it had happened then.
        """
        with self.lock:
            deal = self._record("deals", deal_id)
            if by_user:
                owner = self.owners.get(deal.properties.get("hubspot_owner_id", ""))
                source = WriteSource.user(owner.user_id if owner else None)
            else:
                source = WriteSource("AUTOMATION_PLATFORM", None, "AUTOMATION_PLATFORM")
            self.update("deals", deal_id, {"dealstage": stage}, source=source, at=at)

    def get(self, object_type: str, record_id: str) -> dict[str, Any]:
        """A record as plain data: id, properties, associations {type: [ids]}."""
        with self.lock:
            otype = self._object_type(object_type)
            rec = self._record(otype, record_id)
            assoc: dict[str, list[str]] = {}
            for to_type, to_id in self.associations.get((otype, rec.id), {}):
                assoc.setdefault(to_type, []).append(to_id)
            return {
                "id": rec.id,
                "properties": {k: v for k, v in rec.properties.items() if v != ""},
                "associations": assoc,
                "history": {
                    k: [(h.value, h.source.source_type) for h in v] for k, v in rec.history.items()
                },
            }

    def all(self, object_type: str) -> list[dict[str, Any]]:
        with self.lock:
            otype = self._object_type(object_type)
            return [
                self.get(otype, rid) for rid, r in self.records[otype].items() if not r.archived
            ]

    def tickets(self) -> list[dict[str, Any]]:
        return self.all("tickets")

    def tasks_for_deal(self, deal_id: str) -> list[dict[str, Any]]:
        with self.lock:
            linked = self.associations.get(("deals", str(deal_id)), {})
            return [
                self.get("tasks", tid)
                for (ttype, tid) in linked
                if ttype == "tasks" and not self.records["tasks"][tid].archived
            ]

    def ui_url(self, object_type: str, record_id: str) -> str:
        otype = self._object_type(object_type)
        return (
            f"{self.base_url}/contacts/{self.portal_id}/record/{OBJECT_TYPE_IDS[otype]}/{record_id}"
        )

    def close(self) -> None:
        self.webhooks.close()

    # ------------------------------------------------------------ object writes

    def create(
        self,
        object_type: str,
        properties: Mapping[str, Any],
        *,
        source: WriteSource,
        associations: Sequence[tuple[str, str, int]] = (),
    ) -> Record:
        """Validate and store a new record (with its associations) atomically."""
        with self.lock:
            otype = self._object_type(object_type)
            return self.create_many(otype, [(dict(properties), list(associations))], source)[0]

    def take_late_create(self, otype: str, inputs: list[CreateInput], source: WriteSource) -> bool:
        """Hold this create to apply late, if the test asked for one (see answer_creates_late)."""
        if self.late_creates_pending <= 0:
            return False
        self.late_creates_pending -= 1
        self.late_creates.append(LateCreate(otype, inputs, source))
        return True

    def create_each(
        self, otype: str, inputs: list[CreateInput], source: WriteSource
    ) -> list[Record | ApiError]:
        """Each input created on its own, as a multi-status batch create does: a refused
        input (bad value, taken unique value) is its error, the others are made."""
        outcomes: list[Record | ApiError] = []
        for item in inputs:
            try:
                outcomes.append(self.create_many(otype, [item], source)[0])
            except ApiError as refused:
                outcomes.append(refused)
        return outcomes

    def create_many(
        self,
        otype: str,
        inputs: list[CreateInput],
        source: WriteSource,
    ) -> list[Record]:
        prepared = []
        for props, assocs in inputs:
            values = self._validate(otype, props, existing=None)
            self._fill_defaults(otype, values)
            self._check_required(otype, values)
            for to_type, to_id, type_id in assocs:
                self._check_association(otype, to_type, to_id, type_id)
            prepared.append((values, assocs))
        self._check_unique(otype, [(None, values) for values, _ in prepared])
        created = []
        for values, assocs in prepared:
            moment = now()
            rid = str(next(self._ids))
            rec = Record(rid, otype, {}, moment, moment)
            self.records[otype][rid] = rec
            system = {
                "hs_object_id": rid,
                created_property(otype): iso(moment),
                "hs_lastmodifieddate": iso(moment),
            }
            self._apply(rec, {**values, **system}, source, moment, notify=False)
            for to_type, to_id, type_id in assocs:
                self.associate(otype, rid, to_type, to_id, type_id)
            created.append(rec)
        return created

    def update(
        self,
        object_type: str,
        record_id: str,
        properties: Mapping[str, Any],
        *,
        source: WriteSource,
        id_property: str | None = None,
        at: dt.datetime | None = None,
    ) -> Record:
        with self.lock:
            otype = self._object_type(object_type)
            rec = self.find(otype, record_id, id_property)
            return self.update_many(otype, [(rec, dict(properties))], source, at=at)[0]

    def update_many(
        self,
        otype: str,
        inputs: list[tuple[Record, dict[str, Any]]],
        source: WriteSource,
        *,
        at: dt.datetime | None = None,
    ) -> list[Record]:
        prepared = [(rec, self._validate(otype, props, existing=rec)) for rec, props in inputs]
        self._check_unique(otype, [(rec.id, values) for rec, values in prepared])
        moment = at or now()
        for rec, values in prepared:
            self._apply(rec, {**values, "hs_lastmodifieddate": iso(moment)}, source, moment)
        return [rec for rec, _ in prepared]

    def archive(self, object_type: str, record_id: str) -> None:
        with self.lock:
            rec = self._record(self._object_type(object_type), record_id)
            rec.archived = True
            self._snapshot(rec)

    def find(self, otype: str, record_id: str, id_property: str | None = None) -> Record:
        """A live record by id, or by the value of a unique property."""
        if not id_property or id_property == "hs_object_id":
            return self._record(otype, record_id)
        prop = self.properties[otype].get(id_property)
        if prop is None or not (
            prop.has_unique_value or (otype, id_property) == ("contacts", "email")
        ):
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Property {id_property} is not a unique identifier property for {otype}",
            )
        for rec in self.records[otype].values():
            if not rec.archived and _same(prop, rec.properties.get(id_property, ""), record_id):
                return rec
        raise not_found(record_id)

    def _record(self, otype: str, record_id: str) -> Record:
        rec = self.records[otype].get(str(record_id))
        if rec is None or rec.archived:
            raise not_found(str(record_id))
        return rec

    def _apply(
        self,
        rec: Record,
        values: Mapping[str, str],
        source: WriteSource,
        moment: dt.datetime,
        *,
        notify: bool = True,
    ) -> None:
        changed = []
        stage = values.get("dealstage")
        if rec.object_type == "deals" and stage and stage != rec.properties.get("dealstage"):
            values = {**values, date_entered_property(stage): iso(moment)}
        for name, value in values.items():
            if rec.properties.get(name, "") == value and name in rec.properties:
                continue  # HubSpot records no history and sends no event for a no-op write
            if rec.properties.get(name) is None and value == "":
                continue
            rec.properties[name] = value
            rec.history.setdefault(name, []).insert(0, HistoryEntry(value, moment, source))
            changed.append(name)
        rec.updated_at = moment
        self._snapshot(rec)
        if notify:
            for name in changed:
                self._notify(rec, name, source, moment)

    def _snapshot(self, rec: Record) -> None:
        visible_at = time.time() + self.search_lag_seconds
        props = {} if rec.archived else dict(rec.properties)
        rec.snapshots.append((visible_at, props))
        del rec.snapshots[:-20]

    def _notify(self, rec: Record, name: str, source: WriteSource, moment: dt.datetime) -> None:
        for sub in self.subscriptions:
            if sub.object_type != rec.object_type or sub.property_name != name:
                continue
            event = {
                "eventId": next(self._event_ids),
                "subscriptionId": sub.id,
                "portalId": self.portal_id,
                "appId": sub.app_id,
                "occurredAt": epoch_ms(moment),
                "subscriptionType": f"{rec.object_type.rstrip('s')}.propertyChange",
                "attemptNumber": 0,
                "objectId": int(rec.id),
                "propertyName": name,
                "propertyValue": rec.properties[name],
                "changeSource": source.change_source,
                "sourceId": source.source_id,
            }
            if sub.generic:
                event["subscriptionType"] = "object.propertyChange"
                event["objectTypeId"] = OBJECT_TYPE_IDS[rec.object_type]
            self.webhooks.enqueue(sub, event)

    # -------------------------------------------------------------- validation

    def _validate(
        self, otype: str, props: Mapping[str, Any], *, existing: Record | None
    ) -> dict[str, str]:
        defs = self.properties[otype]
        problems: list[PropertyProblem] = []
        values: dict[str, str] = {}
        for name, raw in props.items():
            prop = defs.get(name)
            if prop is None:
                problems.append(
                    PropertyProblem(
                        name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                    )
                )
                continue
            if prop.read_only:
                problems.append(
                    PropertyProblem(name, "READ_ONLY_VALUE", f'Property "{name}" is read only')
                )
                continue
            value, problem = normalize_value(prop, raw)
            if problem:
                problems.append(problem)
            elif value is not None:
                values[name] = value
        if not problems:
            problems += self._check_external(otype, values, existing)
        if problems:
            raise validation_error(problems, self.portal_id)
        return values

    def _check_external(
        self, otype: str, values: dict[str, str], existing: Record | None
    ) -> list[PropertyProblem]:
        problems = []
        owner = values.get("hubspot_owner_id")
        if owner and owner not in self.owners:
            problems.append(
                PropertyProblem(
                    "hubspot_owner_id", "INVALID_OWNER_ID", f"{owner} is not a valid owner id"
                )
            )
        if otype in PIPELINE_PROPERTIES:
            pipe_prop, stage_prop = PIPELINE_PROPERTIES[otype]
            current = existing.properties if existing else {}
            pipe_id = (
                values.get(pipe_prop) or current.get(pipe_prop) or next(iter(self.pipelines[otype]))
            )
            pipeline = self.pipelines[otype].get(pipe_id)
            if pipeline is None:
                problems.append(
                    PropertyProblem(
                        pipe_prop,
                        "INVALID_OPTION",
                        f"{pipe_id} was not one of the allowed options: "
                        f"{sorted(self.pipelines[otype])}",
                    )
                )
            elif values.get(stage_prop) and values[stage_prop] not in pipeline.stage_ids():
                problems.append(
                    PropertyProblem(
                        stage_prop,
                        "INVALID_OPTION",
                        f"{values[stage_prop]} was not one of the allowed options: "
                        f"{pipeline.stage_ids()}",
                    )
                )
        return problems

    def _fill_defaults(self, otype: str, values: dict[str, str]) -> None:
        if otype in PIPELINE_PROPERTIES:
            pipe_prop, stage_prop = PIPELINE_PROPERTIES[otype]
            # HubSpot puts a record in the portal's first pipeline when only one exists.
            if not values.get(pipe_prop) and len(self.pipelines[otype]) == 1:
                values[pipe_prop] = next(iter(self.pipelines[otype]))
            if otype == "deals" and not values.get(stage_prop) and values.get(pipe_prop):
                values[stage_prop] = self.pipelines[otype][values[pipe_prop]].stage_ids()[0]
        if otype == "tasks":
            values.setdefault("hs_task_status", "NOT_STARTED")

    def _check_required(self, otype: str, values: dict[str, str]) -> None:
        required = list(REQUIRED_ON_CREATE.get(otype, []))
        if otype == "tickets" and len(self.pipelines["tickets"]) > 1:
            required.append("hs_pipeline")
        missing = [name for name in required if not values.get(name)]
        if missing:
            raise validation_error(
                [
                    PropertyProblem(name, "REQUIRED_PROPERTY", f"{name} is required")
                    for name in missing
                ],
                self.portal_id,
            )

    def _check_unique(self, otype: str, writes: list[tuple[str | None, dict[str, str]]]) -> None:
        """Refuse a value of a unique property that another record already has.

        HubSpot answers 400 with "... <existing id> already has that value." for
        custom unique properties, and 409 CONFLICT for a duplicate contact email.
        """
        defs = self.properties[otype]
        unique = [p for p in defs.values() if p.has_unique_value and p.name != "hs_object_id"]
        if otype == "contacts":
            unique.append(defs["email"])
        claimed: dict[tuple[str, str], str] = {}
        for rec in self.records[otype].values():
            if rec.archived:
                continue
            for prop in unique:
                value = rec.properties.get(prop.name, "")
                if value:
                    claimed[(prop.name, _key(prop, value))] = rec.id
        for index, (own_id, values) in enumerate(writes):
            for prop in unique:
                value = values.get(prop.name, "")
                if not value:
                    continue
                holder = claimed.get((prop.name, _key(prop, value)))
                if holder is not None and holder != own_id:
                    raise self._unique_error(otype, prop.name, value, holder, own_id)
                claimed[(prop.name, _key(prop, value))] = own_id or f"batch input {index}"

    def _unique_error(
        self, otype: str, name: str, value: str, holder: str, own_id: str | None
    ) -> ApiError:
        if otype == "contacts" and name == "email":
            return ApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {holder}")
        coordinates = (
            f"PropertyValueCoordinates{{portalId={self.portal_id}, "
            f"objectTypeId={OBJECT_TYPE_IDS[otype]}, propertyName={name}, value={value}}}"
        )
        target = own_id or "a new object"
        return ApiError(
            400,
            "VALIDATION_ERROR",
            f"Cannot set {coordinates} on {target}. {holder} already has that value.",
            extra={"context": {"id": [holder], "propertyName": [name]}},
        )

    # ------------------------------------------------------------ associations

    def associate(
        self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int
    ) -> None:
        """Add an association (and its inverse); a new primary demotes the old one."""
        with self.lock:
            from_type, to_type = self._object_type(from_type), self._object_type(to_type)
            spec = self._check_association(from_type, to_type, to_id, type_id)
            self._record(from_type, from_id)
            if spec.primary:
                for other, types in self.associations.get((from_type, from_id), {}).items():
                    if other[0] == to_type and spec.type_id in types and other[1] != to_id:
                        types.discard(spec.type_id)
                        self.associations[other][(from_type, from_id)].discard(spec.inverse_id)
            ids = {spec.type_id} | ({spec.implies} if spec.implies else set())
            for type_ in ids:
                inverse = ASSOCIATION_BY_ID[(from_type, to_type, type_)].inverse_id
                self.associations.setdefault((from_type, from_id), {}).setdefault(
                    (to_type, to_id), set()
                ).add(type_)
                self.associations.setdefault((to_type, to_id), {}).setdefault(
                    (from_type, from_id), set()
                ).add(inverse)

    def dissociate(self, from_type: str, from_id: str, to_type: str, to_id: str) -> None:
        with self.lock:
            self.associations.get((from_type, from_id), {}).pop((to_type, to_id), None)
            self.associations.get((to_type, to_id), {}).pop((from_type, from_id), None)

    def associated(self, from_type: str, from_id: str, to_type: str) -> list[tuple[str, set[int]]]:
        """[(to id, type ids)] in id order, skipping archived records."""
        links = self.associations.get((from_type, str(from_id)), {})
        out = [
            (tid, set(types))
            for (ttype, tid), types in links.items()
            if ttype == to_type and types and not self.records[ttype][tid].archived
        ]
        return sorted(out, key=lambda item: int(item[0]))

    def _check_association(
        self, from_type: str, to_type: str, to_id: str, type_id: int
    ) -> AssociationType:
        spec = ASSOCIATION_BY_ID.get((from_type, to_type, int(type_id)))
        if spec is None:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"{type_id} is not a valid association type id from "
                f"{OBJECT_TYPE_IDS[from_type]} to {OBJECT_TYPE_IDS[to_type]}",
            )
        rec = self.records[to_type].get(str(to_id))
        if rec is None or rec.archived:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"No {to_type.rstrip('s')} with ID {to_id} exists",
                extra={"context": {"id": [str(to_id)]}},
            )
        return spec

    def association_results(self, otype: str, rid: str, wanted: Iterable[str]) -> dict[str, Any]:
        """The v3 `associations` map of a read, keyed as HubSpot keys it.

        Only the first page of each type is embedded, with a cursor when there are more.
        """
        out: dict[str, Any] = {}
        limit = self.association_embed_limit
        for to_type in wanted:
            linked = self.associated(otype, rid, to_type)
            results = [
                {"id": tid, "type": ASSOCIATION_BY_ID[(otype, to_type, type_id)].name}
                for tid, types in linked[:limit]
                for type_id in sorted(types, key=_primary_first(otype, to_type))
            ]
            if not results:
                continue
            entry: dict[str, Any] = {"results": results}
            if len(linked) > limit:
                link = (
                    f"{self.base_url}/crm/v4/objects/{OBJECT_TYPE_IDS[otype]}/{rid}"
                    f"/associations/{OBJECT_TYPE_IDS[to_type]}?after={limit}"
                )
                entry["paging"] = {"next": {"after": str(limit), "link": link}}
            out[ASSOCIATION_RESULT_KEYS[to_type]] = entry
        return out

    # -------------------------------------------------------------- properties

    def create_property(self, otype: str, body: dict[str, Any]) -> PropertyDef:
        problems = check_definition(body)
        if problems:
            raise ApiError(400, "VALIDATION_ERROR", "; ".join(problems))
        name = body["name"]
        if name in self.properties[otype]:
            raise ApiError(
                409,
                "OBJECT_ALREADY_EXISTS",
                f"A property named '{name}' already exists.",
                extra={"context": {"propertyName": [name]}},
            )
        if body["groupName"] not in self.groups[otype]:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Property group {body['groupName']} does not exist",
            )
        if (
            body.get("hasUniqueValue")
            and sum(
                p.has_unique_value and not p.hubspot_defined
                for p in self.properties[otype].values()
            )
            >= 10
        ):
            raise ApiError(
                400, "VALIDATION_ERROR", "An object type can have at most 10 unique properties"
            )
        prop = PropertyDef(
            name=name,
            label=body["label"],
            type=body["type"],
            field_type=body["fieldType"],
            group_name=body["groupName"],
            options=options_from(body.get("options")),
            has_unique_value=bool(body.get("hasUniqueValue", False)),
            description=body.get("description", ""),
            display_order=int(body.get("displayOrder", -1)),
        )
        self.properties[otype][name] = prop
        return prop

    def update_property(self, otype: str, name: str, body: dict[str, Any]) -> PropertyDef:
        prop = self.properties[otype].get(name)
        if prop is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for {otype}")
        if prop.hubspot_defined and ("type" in body or "fieldType" in body):
            raise ApiError(400, "VALIDATION_ERROR", f"Property {name} is HubSpot-defined")
        for key, attr in (
            ("label", "label"),
            ("description", "description"),
            ("groupName", "group_name"),
            ("type", "type"),
            ("fieldType", "field_type"),
        ):
            if key in body:
                setattr(prop, attr, body[key])
        if "options" in body:
            prop.options = options_from(body["options"])
        prop.updated_at = now()
        return prop

    def create_group(self, otype: str, body: dict[str, Any]) -> dict[str, Any]:
        name, label = body.get("name"), body.get("label")
        if not isinstance(name, str) or not isinstance(label, str) or not name or not label:
            raise ApiError(400, "VALIDATION_ERROR", "name and label are required")
        if name in self.groups[otype]:
            raise ApiError(
                409, "OBJECT_ALREADY_EXISTS", f"A property group named '{name}' already exists."
            )
        group = {
            "name": name,
            "label": label,
            "displayOrder": int(body.get("displayOrder", -1)),
            "archived": False,
        }
        self.groups[otype][name] = group
        return group

    # ------------------------------------------------------------------- wire

    def record_wire(
        self,
        rec: Record,
        properties: list[str] | None = None,
        with_history: list[str] | None = None,
        associations: list[str] | None = None,
        *,
        props_override: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A record the way HubSpot's v3 object endpoints serialize it."""
        source = props_override if props_override is not None else rec.properties
        defs = self.properties[rec.object_type]
        names = list(properties) if properties else list(DEFAULT_READ_PROPERTIES[rec.object_type])
        names += [created_property(rec.object_type), "hs_lastmodifieddate", "hs_object_id"]
        props: dict[str, str | None] = {}
        for name in names:
            if name in defs:
                value = source.get(name, "")
                # HubSpot answers every requested property; unset ones are null.
                props[name] = value if value != "" else None
        body: dict[str, Any] = {
            "id": rec.id,
            "properties": props,
            "createdAt": iso(rec.created_at),
            "updatedAt": iso(rec.updated_at),
            "archived": rec.archived,
        }
        if with_history:
            body["propertiesWithHistory"] = {
                name: [h.as_wire() for h in rec.history.get(name, [])]
                for name in with_history
                if name in defs
            }
        if associations:
            wanted = [t for t in (resolve_object_type(a) for a in associations) if t]
            found = self.association_results(rec.object_type, rec.id, wanted)
            if found:
                body["associations"] = found
        return body

    def search_view(self, rec: Record) -> dict[str, str] | None:
        """The properties search can see right now (lagging writes by search_lag_seconds)."""
        moment = time.time()
        visible = [props for at, props in rec.snapshots if at <= moment]
        if not visible or not visible[-1]:
            return None
        return visible[-1]

    def _object_type(self, raw: str) -> str:
        otype = resolve_object_type(raw)
        if otype is None:
            raise ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {raw}")
        return otype


def _app_scopes() -> tuple[str, ...]:
    # The portal installed the app Fullkit ships: its token has that app's scopes.
    from connectors.hubspot_app import required_scopes

    return required_scopes()


def _same(prop: PropertyDef, stored: str, wanted: str) -> bool:
    return bool(stored) and _key(prop, stored) == _key(prop, wanted)


def _key(prop: PropertyDef, value: str) -> str:
    # Email addresses identify contacts case-insensitively.
    return value.lower() if prop.name == "email" else value


def _primary_first(otype: str, to_type: str) -> Any:
    def order(type_id: int) -> tuple[int, int]:
        spec = ASSOCIATION_BY_ID[(otype, to_type, type_id)]
        return (0 if spec.primary else 1, type_id)

    return order


__all__ = [
    "ASSOCIATION_TYPES",
    "ApiError",
    "CallRecord",
    "HubSpotSandbox",
    "WriteSource",
    "default_association",
]
