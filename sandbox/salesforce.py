"""One fake Salesforce org: users, OAuth clients, sessions, the daily API limit, the
outbound-message Flow, and helpers that play the sales rep in tests and the demo.

Writes made through these helpers go through the same validation as API writes
(`Store`), so a test cannot seed data the real org would refuse.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sandbox.call_log import CallRecord, matching
from sandbox.salesforce_model import (
    API_VERSION,
    FieldDef,
    IdMaker,
    SalesforceError,
    default_schema,
    id18,
)
from sandbox.salesforce_outbound import MAX_NOTIFICATIONS, Delivery, OutboundRule, envelope, post
from sandbox.salesforce_store import Notification, OrgData, Row, Store

DEFAULT_DAILY_LIMIT = 15_000  # Enterprise Edition's base allocation before per-licence extras


@dataclass
class Session:
    user_id: str
    issued_at: float
    valid: bool = True


@dataclass(frozen=True)
class ClientApp:
    """An External Client App with the client credentials flow enabled."""

    client_id: str
    client_secret: str
    run_as: str | None  # the client credentials flow's run-as user


class SalesforceSandbox:
    """One fake org. Thread-safe; every public method takes the lock."""

    def __init__(
        self,
        *,
        org_id: str | None = None,
        daily_api_limit: int = DEFAULT_DAILY_LIMIT,
        custom_object: str = "Onboarding__c",
        query_batch_size: int = 2000,
        child_batch_size: int = 200,
        api_version: str = API_VERSION,
    ) -> None:
        self.lock = threading.RLock()
        self.store = Store(default_schema(custom_object))
        self.store.hooks.append(self._flow)
        self.org_id = org_id or id18(IdMaker().new("00D")[:15])
        self.custom_object = custom_object
        self.api_version = api_version
        self.query_batch_size = query_batch_size
        self.child_batch_size = child_batch_size
        self.daily_api_limit = daily_api_limit
        self.api_requests_used = 0
        self.base_url = "http://127.0.0.1"  # set by the server once it listens
        self.sessions: dict[str, Session] = {}
        self.client_apps: dict[str, ClientApp] = {}
        self.passwords: dict[str, tuple[str, str]] = {}  # username -> (password, token)
        self.call_log: list[CallRecord] = []
        self.cursors: dict[str, list[Row]] = {}
        self.rules: list[OutboundRule] = []
        self.deliveries: list[Delivery] = []
        with self.lock:
            self.integration_user = self.add_user(
                "fullkit-integration@example.com", "Fullkit", "Integration"
            )
            self.access_token = self.issue_token(self.integration_user)

    # ----------------------------------------------------------- users, auth

    def add_user(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        *,
        password: str | None = None,
        security_token: str = "",
    ) -> str:
        with self.lock:
            existing = self.user_by_email(email)
            if existing is not None:
                return existing
            last = last_name or email.split("@")[0]
            values = {"Username": email, "Email": email, "FirstName": first_name, "LastName": last}
            user_id = self.store.create(self.store.object("User"), values, "005000000000000AAA")
            row = self.store.table(self.store.object("User"))[user_id]
            row["CreatedById"] = row["LastModifiedById"] = user_id
            if password is not None:
                self.passwords[email.lower()] = (password, security_token)
            return user_id

    def user_by_email(self, email: str) -> str | None:
        with self.lock:
            users = self.store.table(self.store.object("User")).values()
            return next((u["Id"] for u in users if u["Email"].lower() == email.lower()), None)

    def add_client_app(self, client_id: str, client_secret: str, run_as: str | None) -> None:
        with self.lock:
            self.client_apps[client_id] = ClientApp(client_id, client_secret, run_as)

    def issue_token(self, user_id: str) -> str:
        with self.lock:
            token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
            self.sessions[token] = Session(user_id, time.time())
            return token

    def expire_session(self, token: str | None = None) -> None:
        """Expire one session (default: the integration user's), as a timeout would."""
        with self.lock:
            self.sessions[token or self.access_token].valid = False

    def session_user(self, token: str | None) -> str | None:
        with self.lock:
            session = self.sessions.get(token or "")
            return session.user_id if session is not None and session.valid else None

    # -------------------------------------------------------- schema changes

    def define_field(
        self, object_name: str, name: str, kind: str = "string", **options: Any
    ) -> None:
        """Deploy a custom field (e.g. the mapping's `Plan__c`)."""
        with self.lock:
            self.store.object(object_name).add(FieldDef(name, kind, **options))

    def remove_field(self, object_name: str, name: str) -> None:
        """An org where the admin has not deployed a field yet."""
        with self.lock:
            self.store.object(object_name).fields.pop(name.lower(), None)

    def restrict_field(self, object_name: str, name: str) -> None:
        """Field-level security: the integration user may read but not write it."""
        with self.lock:
            definition = self.store.object(object_name).field(name)
            assert definition is not None, name
            definition.createable = definition.updateable = False

    # ------------------------------------------------------------ API limits

    def set_daily_api_limit(self, limit: int, used: int | None = None) -> None:
        with self.lock:
            self.daily_api_limit = limit
            if used is not None:
                self.api_requests_used = used

    def count_api_request(self) -> bool:
        """Count one API request; False when the daily limit is already spent."""
        with self.lock:
            if self.api_requests_used >= self.daily_api_limit:
                return False
            self.api_requests_used += 1
            return True

    def limit_info(self) -> str:
        with self.lock:
            return f"api-usage={self.api_requests_used}/{self.daily_api_limit}"

    def request_count(self) -> int:
        with self.lock:
            return len(self.call_log)

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[CallRecord]:
        with self.lock:
            return matching(self.call_log, method, path_prefix)

    def reset_calls(self) -> None:
        with self.lock:
            self.call_log.clear()

    # ------------------------------------------------------------ the org data

    def seed_default_org(self) -> None:
        """The users, price book and products of the demo and tests."""
        with self.lock:
            for email in ("sales-sam@example.com", "sales-sue@example.com"):
                self.add_user(email, email.split("@")[0].split("-")[1].title(), "Sales")
            for email in ("ops-anna@example.com", "ops-ben@example.com"):
                self.add_user(email, email.split("@")[0].split("-")[1].title(), "Ops")
            self.define_field("Opportunity", "Plan__c", "picklist", picklist=("pro", "enterprise"))
            self.define_field("Opportunity", "Kickoff_Date__c", "date")
            self.define_field("Opportunity", "SSO_Provider__c")
            roles = self.store.object("OpportunityContactRole").field("Role")
            assert roles is not None
            roles.picklist = (*roles.picklist, "Billing", "Champion", "Technical")

    def standard_pricebook(self) -> str:
        with self.lock:
            books = self.store.table(self.store.object("Pricebook2"))
            for row in books.values():
                if row.get("IsStandard"):
                    return str(row["Id"])
            book_id = self._create("Pricebook2", {"Name": "Standard Price Book"})
            books[book_id]["IsStandard"] = True
            return book_id

    def create_opportunity(
        self,
        fields: Row,
        *,
        account: Row | None = None,
        contacts: Iterable[Row] = (),
        line_items: Iterable[Row] = (),
        files: Iterable[tuple[str, str]] = (),
        owner_email: str | None = None,
    ) -> str:
        """An opportunity with its account, contact roles (`Role` on each contact's
        row), line items (`Name`, `Quantity`, `UnitPrice`) and files (title, extension),
        created as a sales rep would in the UI."""
        with self.lock:
            user = self.user_by_email(owner_email) if owner_email else None
            owner = user or self.integration_user
            values = {"CloseDate": time.strftime("%Y-%m-%d"), **fields, "OwnerId": owner}
            if account is not None:
                values["AccountId"] = self._create("Account", account, owner)
            opportunity = self._create("Opportunity", values, owner)
            for contact in contacts:
                person = {k: v for k, v in contact.items() if k not in ("Role", "IsPrimary")}
                person.setdefault("AccountId", values.get("AccountId"))
                contact_id = self._create("Contact", person, owner)
                role = {"OpportunityId": opportunity, "ContactId": contact_id}
                role.update({k: v for k, v in contact.items() if k in ("Role", "IsPrimary")})
                self._create("OpportunityContactRole", role, owner)
            for item in line_items:
                self.add_line_item(opportunity, **item)
            for title, extension in files:
                self.attach_file(opportunity, title, extension)
            return opportunity

    def add_line_item(
        self, opportunity_id: str, Name: str, Quantity: float = 1, UnitPrice: float = 0
    ) -> str:
        with self.lock:
            products = self.store.table(self.store.object("Product2")).values()
            product = next((p["Id"] for p in products if p["Name"] == Name), None)
            if product is None:
                product = self._create("Product2", {"Name": Name})
            entries = self.store.table(self.store.object("PricebookEntry")).values()
            entry = next((e["Id"] for e in entries if e["Product2Id"] == product), None)
            if entry is None:
                book = self.standard_pricebook()
                entry_values = {"Pricebook2Id": book, "Product2Id": product, "UnitPrice": UnitPrice}
                entry = self._create("PricebookEntry", entry_values)
            item = {
                "OpportunityId": opportunity_id,
                "PricebookEntryId": entry,
                "Quantity": Quantity,
                "UnitPrice": UnitPrice,
            }
            return self._create("OpportunityLineItem", item)

    def attach_file(self, record_id: str, title: str, extension: str = "pdf") -> str:
        """Upload a file onto the record (ContentVersion, its document and link)."""
        with self.lock:
            version = {
                "Title": title,
                "PathOnClient": f"{title}.{extension}",
                "VersionData": "JVBERi0xLjQK",  # "%PDF-1.4\n"
                "FirstPublishLocationId": record_id,
            }
            version_id = self._create("ContentVersion", version)
            row = self.store.table(self.store.object("ContentVersion"))[version_id]
            return str(row["ContentDocumentId"])

    def move_opportunity(self, opportunity_id: str, stage: str, by: str | None = None) -> None:
        """A user (by email; default the owner) changes the stage in the UI."""
        with self.lock:
            row = self.get("Opportunity", opportunity_id)
            user = (self.user_by_email(by) if by else None) or row["OwnerId"]
            self.store.update(
                self.store.object("Opportunity"), row["Id"], {"StageName": stage}, user
            )

    def update(self, object_name: str, record_id: str, values: Row, by: str | None = None) -> None:
        with self.lock:
            user = (self.user_by_email(by) if by else None) or self.integration_user
            self.store.update(self.store.object(object_name), record_id, values, user)

    def get(self, object_name: str, record_id: str) -> Row:
        with self.lock:
            return dict(self.store.find(self.store.object(object_name), record_id))

    def all(self, object_name: str) -> list[Row]:
        with self.lock:
            return [dict(r) for r in self.store.table(self.store.object(object_name)).values()]

    def _create(self, object_name: str, values: Row, user: str | None = None) -> str:
        return self.store.create(
            self.store.object(object_name), values, user or self.integration_user
        )

    # ------------------------------------------------------- outbound messages

    def add_outbound_message(
        self,
        url: str,
        stages: Iterable[str] = ("Closed Won",),
        fields: Iterable[str] = ("StageName", "LastModifiedDate", "OwnerId", "AccountId"),
        *,
        skip_saves_by: Iterable[str] = (),
    ) -> str:
        """A record-triggered Flow on Opportunity whose entry criteria are "StageName is
        changed to one of `stages`" (and, optionally, "the save was not made by one of
        `skip_saves_by`", user emails), sending an outbound message to `url`."""
        with self.lock:
            action_id = self.store.data.ids.new("04k")
            skipped = frozenset(filter(None, (self.user_by_email(e) for e in skip_saves_by)))
            rule = OutboundRule(action_id, url, frozenset(stages), tuple(fields), skipped)
            self.rules.append(rule)
            return action_id

    def _flow(self, old: Row | None, row: Row, data: OrgData) -> None:
        # Real Flows fire on every save that meets the criteria, whoever saves: a write
        # by Fullkit's integration user that sets a hand-off stage fires it too.
        changed = old is None or old.get("StageName") != row.get("StageName")
        if not changed:
            return
        for rule in self.rules:
            if row.get("StageName") in rule.stages and row["LastModifiedById"] not in (
                rule.skip_user_ids
            ):
                notification_id = data.ids.new("04l")
                data.notifications.append(Notification(notification_id, rule.action_id, row["Id"]))

    def pending_notifications(self) -> list[Notification]:
        with self.lock:
            return [n for n in self.store.data.notifications if not n.acked]

    def deliver_outbound(self, *, again: bool = False, timeout: float = 10.0) -> list[Delivery]:
        """Salesforce's next delivery round: every unacknowledged notification (with
        `again`, the acknowledged ones too: Salesforce may deliver twice) in batches of
        up to 100 per outbound message. Returns this round's deliveries."""
        with self.lock:
            queued = [n for n in self.store.data.notifications if again or not n.acked]
            rounds: list[tuple[OutboundRule, list[Notification]]] = []
            for rule in self.rules:
                mine = [n for n in queued if n.action_id == rule.action_id]
                for start in range(0, len(mine), MAX_NOTIFICATIONS):
                    rounds.append((rule, mine[start : start + MAX_NOTIFICATIONS]))
        return [self._deliver(rule, batch, timeout) for rule, batch in rounds]

    def redeliver(self, notification_id: str, times: int = 1, timeout: float = 10.0) -> None:
        """Send one notification again, acknowledged or not, `times` times."""
        with self.lock:
            item = next(n for n in self.store.data.notifications if n.id == notification_id)
            rule = next(r for r in self.rules if r.action_id == item.action_id)
        for _ in range(times):
            self._deliver(rule, [item], timeout)

    def _deliver(self, rule: OutboundRule, batch: list[Notification], timeout: float) -> Delivery:
        with self.lock:
            obj = self.store.object("Opportunity")
            table = self.store.table(obj)
            pairs = [(n, table[n.record_id]) for n in batch if n.record_id in table]
            body = envelope(self.org_id, rule, pairs, obj, self.base_url)
        status, acked, error = post(rule.url, body, timeout)
        with self.lock:
            for item in batch:
                item.attempts += 1
                item.acked = item.acked or acked
            delivery = Delivery(rule.url, [n.id for n in batch], status, acked, body, error)
            self.deliveries.append(delivery)
        return delivery

    def close(self) -> None:
        """Nothing runs in the background: delivery happens only in `deliver_outbound`."""


__all__ = ["CallRecord", "SalesforceError", "SalesforceSandbox"]
