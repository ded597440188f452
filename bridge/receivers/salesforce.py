"""Salesforce receivers: outbound messages (SOAP 1.1) and JSON calls from Flows and Apex.

Both verify, parse, keep the changes into a hand-off stage and queue them in one round
trip; neither calls Salesforce. Stage names compare as Salesforce's do, ignoring case.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Annotated, Any

import structlog
from flask import Blueprint, Response, current_app, request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
)

from bridge import intake
from bridge.deal_ids import InvalidDealId, salesforce_id18
from bridge.metrics import EVENTS_QUEUED, RECEIVER_SECONDS
from bridge.queue import QueueUnavailable
from bridge.receivers import salesforce_signature, salesforce_soap
from bridge.receivers.common import (
    CONTENT_TYPE,
    MALFORMED,
    NOT_CONFIGURED,
    QUEUE_DOWN,
    SIGNATURE,
    TIMESTAMP,
    WRONG_ACCOUNT,
    Refusal,
    answer_json,
    count,
    count_events,
    count_refused,
    json_response,
    parse_json,
    read_body,
    require_content_type,
)
from bridge.receivers.salesforce_settings import SalesforceReceiverSettings, org_id18

log = structlog.get_logger("fullkit.receivers")
blueprint = Blueprint("salesforce_webhooks", __name__)
CRM = "salesforce"
OUTBOUND_RECEIVER = "salesforce_outbound"
JSON_RECEIVER = "salesforce"
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # older than any real stage change
FUTURE_SLACK = dt.timedelta(days=1)  # clocks drift, but not by a day


class Fault(Exception):
    """An outbound message answered with a SOAP fault (HTTP 500 unless the SPEC says
    otherwise): `Client` when the message is wrong, `Server` when we are. `cause` is what
    /metrics counts it under (bridge.receivers.common)."""

    def __init__(self, status: int, code: str, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.cause = cause


# --- POST /webhooks/salesforce/outbound -------------------------------------------------


@blueprint.post("/webhooks/salesforce/outbound")
def receive_outbound() -> Response:
    started = time.perf_counter()
    try:
        _receive_outbound()
        status = 200
        answer = Response(salesforce_soap.ACK, status=status, mimetype="text/xml")
    except Fault as fault:
        status = fault.status
        log.warning(
            "webhook refused", receiver=OUTBOUND_RECEIVER, status=status, reason=fault.reason
        )
        body = salesforce_soap.fault(fault.code, fault.reason)
        answer = Response(body, status=status, mimetype="text/xml")
        count_refused(OUTBOUND_RECEIVER, fault.cause)
    count(OUTBOUND_RECEIVER, status)
    RECEIVER_SECONDS.labels(receiver=OUTBOUND_RECEIVER).observe(time.perf_counter() - started)
    return answer


def _receive_outbound() -> None:
    try:
        body = read_body(request)
    except Refusal as refusal:
        raise Fault(refusal.status, "Client", refusal.reason, refusal.cause) from None
    if request.mimetype != "text/xml":
        raise Fault(500, "Client", "content type must be text/xml (SOAP 1.1)", CONTENT_TYPE)
    app = current_app.config["FULLKIT"]
    own = app.settings.section(SalesforceReceiverSettings)
    if own.org_id is None:
        # 503, as for every receiver whose setting is missing: Salesforce redelivers
        # for 24 hours, so messages sent before the operator sets it still arrive.
        raise Fault(503, "Server", "SALESFORCE_ORG_ID is not set", NOT_CONFIGURED)
    try:
        message = salesforce_soap.parse(body)
    except salesforce_soap.Malformed as exc:
        raise Fault(500, "Client", str(exc), MALFORMED) from None
    _check_org(message.organization_id, own.org_id)
    stages = _folded(app.handoff_stages[CRM])
    changes = [
        _outbound_change(index, note)
        for index, note in enumerate(message.notifications)
        if note.stage_name.lower() in stages
    ]
    try:
        queued = _queue(app, changes)
    except QueueUnavailable:
        raise Fault(
            500, "Server", "queue unavailable; Salesforce will redeliver", QUEUE_DOWN
        ) from None
    received = len(message.notifications)
    ignored = Counter(not_handoff_stage=received - len(changes), duplicate=len(changes) - queued)
    count_events(OUTBOUND_RECEIVER, received, ignored)


def _check_org(sent: str, ours: str) -> None:
    try:
        same = org_id18(sent) == ours
    except ValueError:
        same = False
    if not same:
        raise Fault(
            500, "Client", f"OrganizationId {sent[:18]!r} is not the org Fullkit serves",
            WRONG_ACCOUNT,
        )  # fmt: skip


def _outbound_change(index: int, note: salesforce_soap.Notification) -> intake.StageChange:
    if not _plausible(note.last_modified):
        raise Fault(
            500, "Client", f"notification {index}: sf:LastModifiedDate out of range", MALFORMED
        )
    return intake.StageChange(
        CRM,
        note.opportunity_id,
        note.stage_name,
        note.last_modified,
        intake.salesforce_notification_key(note.notification_id),
        f"salesforce-notification:{note.notification_id}",
    )


# --- POST /webhooks/salesforce (Flow HTTP callouts, Apex) ---------------------------------


def _opportunity_id(raw: str) -> str:
    try:
        value = salesforce_id18(raw)
    except InvalidDealId as exc:
        raise ValueError(str(exc)) from None
    if not value.startswith(salesforce_soap.OPPORTUNITY_PREFIX):
        raise ValueError("not an Opportunity id (they start with 006)")
    return value


def _moment(raw: object) -> dt.datetime:
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValueError("must be an ISO 8601 date and time, e.g. 2026-11-27T10:20:00Z")
    moment = dt.datetime.fromisoformat(raw)  # ValueError: pydantic's 400
    if moment.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-11-27T10:20:00Z")
    if not _plausible(moment):
        raise ValueError("must lie between 2000 and a day from now")
    return moment


class StageCall(BaseModel):
    """What a Flow's HTTP callout or Apex sends; nothing else, so a typo is a 400."""

    model_config = ConfigDict(extra="forbid")

    opportunityId: Annotated[StrictStr, Field(max_length=18), AfterValidator(_opportunity_id)]
    stage: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    eventId: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    occurredAt: Annotated[dt.datetime, BeforeValidator(_moment)] | None = None


@blueprint.post("/webhooks/salesforce")
def receive_call() -> Response:
    return answer_json(JSON_RECEIVER, lambda: json_response({"queued": _receive_call()}, 202))


def _receive_call() -> bool:
    body = read_body(request)
    require_content_type(request, "application/json")
    app = current_app.config["FULLKIT"]
    secret = app.settings.section(SalesforceReceiverSettings).webhook_secret
    if secret is None:
        raise Refusal(503, "SALESFORCE_WEBHOOK_SECRET is not set", NOT_CONFIGURED)
    try:
        salesforce_signature.verify(
            request.headers.get("X-Fullkit-Signature"),
            request.headers.get("X-Fullkit-Timestamp"),
            secret.get_secret_value(),
            body,
        )
    except salesforce_signature.SignatureInvalid as exc:
        timestamp = isinstance(exc, salesforce_signature.TimestampInvalid)
        raise Refusal(401, str(exc), TIMESTAMP if timestamp else SIGNATURE) from None
    call = _parse_call(body)
    if call.stage.lower() not in _folded(app.handoff_stages[CRM]):
        count_events(JSON_RECEIVER, 1, Counter(not_handoff_stage=1))
        return False
    moment = call.occurredAt or dt.datetime.now(dt.UTC)
    change = intake.StageChange(
        CRM,
        call.opportunityId,
        call.stage,
        moment,
        intake.salesforce_event_key(call.eventId),
        f"salesforce-event:{call.eventId[:200]}",
    )
    try:
        queued = _queue(app, [change])
    except QueueUnavailable:
        raise Refusal(503, "queue unavailable; retry later", QUEUE_DOWN) from None
    count_events(JSON_RECEIVER, 1, Counter(duplicate=1 - queued))
    return True


def _parse_call(body: bytes) -> StageCall:
    return parse_json(body, StageCall.model_validate, "a Salesforce stage call")


# --- shared ------------------------------------------------------------------------------


def _folded(stages: frozenset[str]) -> set[str]:
    return {stage.lower() for stage in stages}


def _plausible(moment: dt.datetime) -> bool:
    return EARLIEST <= moment <= dt.datetime.now(dt.UTC) + FUTURE_SLACK


def _queue(app: Any, changes: list[intake.StageChange]) -> int:
    """How many changes were new to the queue; raises QueueUnavailable when it cannot be
    reached."""
    queued = intake.queue_changes(app, changes)
    EVENTS_QUEUED.labels(crm=CRM).inc(queued)
    return queued
