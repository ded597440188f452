"""POST /webhooks/hubspot: verify, validate, keep the hand-off stage changes, queue them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import structlog
from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
)
from redis import RedisError

from bridge import intake
from bridge.deal_ids import InvalidDealId
from bridge.metrics import EVENTS_QUEUED
from bridge.queue import QueueUnavailable
from bridge.receivers import hubspot_signature
from bridge.receivers.common import (
    MALFORMED,
    NOT_CONFIGURED,
    QUEUE_DOWN,
    SIGNATURE,
    TIMESTAMP,
    WRONG_ACCOUNT,
    Refusal,
    answer_json,
    count_events,
    parse_json,
    public_url,
    read_body,
    require_content_type,
)
from bridge.receivers.hubspot_settings import HubSpotReceiverSettings
from kernel import portal

log = structlog.get_logger("fullkit.receivers")
blueprint = Blueprint("hubspot_webhooks", __name__)
RECEIVER = "hubspot"
_LEARNED = "fullkit.hubspot_portal"
DEAL_TYPE_ID = "0-3"


# What a real event can hold, so that no signed but absurd value reaches the worker, where
# it would fail for an hour of retries instead of being refused once, here.
MAX_ID = 2**63 - 1  # HubSpot ids are 64-bit
EARLIEST_MS = 946_684_800_000  # 2000-01-01: older than any HubSpot event
FUTURE_SLACK_MS = 24 * 60 * 60 * 1000  # clocks drift, but not by a day
MAX_NAME = 256  # subscription types, property names, change sources
MAX_VALUE = 65_536  # HubSpot's own limit on a property value

Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
Name = Annotated[StrictStr, Field(max_length=MAX_NAME)]


def _plausible_moment(ms: int) -> int:
    latest = int(time.time() * 1000) + FUTURE_SLACK_MS
    if not EARLIEST_MS <= ms <= latest:
        raise ValueError("must be epoch milliseconds between 2000 and a day from now")
    return ms


class HubSpotEvent(BaseModel):
    """One webhook event, as HubSpot sends it; unknown fields are HubSpot's business."""

    model_config = ConfigDict(extra="allow")

    eventId: Id
    subscriptionType: Name
    objectId: Id
    occurredAt: Annotated[StrictInt, AfterValidator(_plausible_moment)]
    propertyName: Name | None = None
    propertyValue: Annotated[StrictStr, Field(max_length=MAX_VALUE)] | None = None
    changeSource: Name | None = None
    sourceId: Name | Annotated[StrictInt, Field(ge=0, le=MAX_ID)] | None = None
    objectTypeId: Name | None = None
    attemptNumber: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    portalId: Id | None = None
    appId: Id | None = None
    subscriptionId: Id | None = None
    changeFlag: Name | None = None


Batch = TypeAdapter(Annotated[list[HubSpotEvent], Field(min_length=1, max_length=100)])


@blueprint.post("/webhooks/hubspot")
def receive() -> Response:
    return answer_json(RECEIVER, lambda: Response(status=_receive()))


def _receive() -> int:
    body = read_body(request)
    require_content_type(request, "application/json")
    app = current_app.config["FULLKIT"]
    own = app.settings.section(HubSpotReceiverSettings)
    secret = own.client_secret
    if secret is None:
        raise Refusal(503, "HUBSPOT_CLIENT_SECRET is not set", NOT_CONFIGURED)
    text = _text(body)
    try:
        hubspot_signature.verify(
            request.headers, secret.get_secret_value(), request.method,
            public_url(request), text if text is not None else body.decode("latin-1"),
            accept_legacy=own.accept_legacy_signatures,
        )  # fmt: skip
    except hubspot_signature.SignatureInvalid as exc:
        cause = TIMESTAMP if isinstance(exc, hubspot_signature.TimestampInvalid) else SIGNATURE
        raise Refusal(401, str(exc), cause) from None
    if text is None:
        raise Refusal(400, "body is not UTF-8", MALFORMED)
    events = _parse(text)
    _check_portal(events, own.portal_id or _learned_portal(app))
    stages = app.handoff_stages[RECEIVER]
    ignored: Counter[str] = Counter()
    changes = []
    for event in events:
        reason = _ignored_because(event, stages, own.app_id)
        if reason is None:
            changes.append(_change(event))
        else:
            ignored[reason] += 1
    ignored["duplicate"] = len(changes) - _queue(app, changes)
    count_events(RECEIVER, len(events), ignored)
    return 204


def _text(body: bytes) -> str | None:
    """The body as text, or None when it is not UTF-8 (refused once the signature is checked)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parse(text: str) -> list[HubSpotEvent]:
    return parse_json(text, Batch.validate_python, "a HubSpot event batch")


class LearnedPortal:
    """The portal id a worker stored (kernel/portal.py), read when the app is built and
    kept once found, since a token's portal never changes. Until then it is looked for
    again at most every RECHECK_SECONDS, the only webhooks that pay a second round trip
    to Redis (the SPEC's "one round trip" holds for all others)."""

    RECHECK_SECONDS = 300.0

    def __init__(self) -> None:
        self.portal_id: int | None = None
        self._checked_at = float("-inf")

    def get(self, connection: Callable[[], Any]) -> int | None:
        now = time.monotonic()
        if self.portal_id is not None or now - self._checked_at < self.RECHECK_SECONDS:
            return self.portal_id
        self._checked_at = now
        try:
            found = portal.recall(connection(), RECEIVER)
        except (RedisError, QueueUnavailable):
            return None  # queueing answers 503 for an unreachable Redis
        if found and found.isascii() and found.isdigit():
            self.portal_id = int(found)
        return self.portal_id


@blueprint.record_once
def _learn_portal_at_start(setup: BlueprintSetupState) -> None:
    learned = LearnedPortal()
    setup.app.extensions[_LEARNED] = learned
    learned.get(lambda: setup.app.config["FULLKIT"].redis)


def _learned_portal(app: Any) -> int | None:
    learned: LearnedPortal = current_app.extensions[_LEARNED]
    return learned.get(lambda: app.redis)


def _check_portal(events: list[HubSpotEvent], portal_id: int | None) -> None:
    """An app installed in several portals signs all their events with one secret: when
    the operator names the portal (HUBSPOT_PORTAL_ID), no other portal's event counts."""
    if portal_id is None:
        return
    for index, event in enumerate(events):
        if event.portalId != portal_id:
            raise Refusal(
                400, f"event {index}: portalId {event.portalId} is not {portal_id}", WRONG_ACCOUNT
            )


def _ignored_because(event: HubSpotEvent, stages: frozenset[str], app_id: str | None) -> str | None:
    """Why the event is no hand-off (the reason /metrics counts it under), or None."""
    on_deal = event.subscriptionType == "deal.propertyChange" or (
        event.subscriptionType == "object.propertyChange" and event.objectTypeId == DEAL_TYPE_ID
    )
    if not on_deal:
        return "other_event"
    # Before the property: Fullkit's own writes echoing back is worth seeing as such.
    if event.changeSource == "INTEGRATION" and app_id and str(event.sourceId) == app_id:
        return "own_write"
    if event.propertyName != "dealstage":
        return "other_property"
    if event.propertyValue not in stages:
        return "not_handoff_stage"
    return None


def _change(event: HubSpotEvent) -> intake.StageChange:
    try:
        return intake.hubspot_change(
            event.objectId, str(event.propertyValue), event.occurredAt, event.eventId
        )
    except InvalidDealId as exc:
        raise Refusal(400, f"not a HubSpot event batch: objectId: {exc}", MALFORMED) from None


def _queue(app: Any, changes: list[intake.StageChange]) -> int:
    """How many changes were new to the queue (the others are duplicates)."""
    try:
        queued = intake.queue_changes(app, changes)
    except QueueUnavailable:
        raise Refusal(503, "queue unavailable; retry later", QUEUE_DOWN) from None
    EVENTS_QUEUED.labels(crm=RECEIVER).inc(queued)
    return queued
