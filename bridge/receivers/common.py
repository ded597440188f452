"""What every receiver checks first, in the SPEC's order: size, then content type; and how
the JSON receivers parse, refuse, count and time a request.

Counting stays in this process (prometheus_client's multiprocess files, a few counter
increments per request): no receiver pays a round trip for its metrics."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from flask import Request, Response, current_app
from pydantic import ValidationError

from bridge.metrics import (
    EVENTS_IGNORED,
    EVENTS_RECEIVED,
    RECEIVER_SECONDS,
    WEBHOOK_ANSWERS,
    WEBHOOKS_REFUSED,
)

log = structlog.get_logger("fullkit.receivers")
T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024


# Why a delivery was refused, as /metrics counts it: a fixed vocabulary, never the
# one-line reason itself (free text, and it may quote what the sender sent).
TOO_LARGE = "too_large"
CONTENT_TYPE = "content_type"
SIGNATURE = "signature"
TIMESTAMP = "timestamp"
MALFORMED = "malformed"
WRONG_ACCOUNT = "wrong_account"  # another HubSpot portal or Salesforce org
NOT_CONFIGURED = "not_configured"  # the receiver's secret or org id is unset
QUEUE_DOWN = "queue_down"
OTHER = "other"


class Refusal(Exception):
    """A request answered with a 4xx/5xx and a one-line reason; `cause` is what /metrics
    counts it under (one of the names above)."""

    def __init__(self, status: int, reason: str, cause: str = OTHER) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.cause = cause


def read_body(request: Request) -> bytes:
    """The raw body, refusing more than 1 MiB without reading it all."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise Refusal(413, "body over 1 MiB", TOO_LARGE)
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise Refusal(413, "body over 1 MiB", TOO_LARGE)
    return body


def require_content_type(request: Request, *allowed: str) -> None:
    if request.mimetype not in allowed:
        raise Refusal(415, f"content type must be {' or '.join(allowed)}", CONTENT_TYPE)


def public_url(request: Request) -> str:
    """The URL as the sender signed it: FULLKIT_PUBLIC_URL's scheme and host, or how the
    request reached us (forwarded headers already applied for trusted proxies only, see
    bridge/proxies.py; a client's own X-Forwarded-* headers are never read here)."""
    configured = current_app.config["FULLKIT"].settings.public_url
    base = configured or f"{request.scheme}://{request.host}"
    path = request.full_path if request.query_string else request.path
    return base.rstrip("/") + path


def count(receiver: str, status: int) -> None:
    WEBHOOK_ANSWERS.labels(receiver=receiver, status=str(status)).inc()


def count_refused(receiver: str, cause: str) -> None:
    WEBHOOKS_REFUSED.labels(receiver=receiver, reason=cause).inc()


def count_events(receiver: str, received: int, ignored: Counter[str]) -> None:
    """A delivery taken: its events, and those not queued by reason (one increment per
    reason, not per event: a batch holds up to 100)."""
    EVENTS_RECEIVED.labels(receiver=receiver).inc(received)
    for reason, events in ignored.items():
        if events:
            EVENTS_IGNORED.labels(receiver=receiver, reason=reason).inc(events)


def json_response(data: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def answer_json(receiver: str, handle: Callable[[], Response]) -> Response:
    """`handle`'s answer, or a Refusal's as {"error": reason}; either counted and timed."""
    started = time.perf_counter()
    try:
        answer = handle()
    except Refusal as refusal:
        # The reason only: a signature or secret in a log would be a credential leaked.
        log.warning(
            "webhook refused", receiver=receiver, status=refusal.status, reason=refusal.reason
        )
        answer = json_response({"error": refusal.reason}, refusal.status)
        count_refused(receiver, refusal.cause)
    count(receiver, answer.status_code)
    RECEIVER_SECONDS.labels(receiver=receiver).observe(time.perf_counter() - started)
    return answer


def parse_json(raw: str | bytes, validate: Callable[[Any], T], what: str) -> T:
    """The body as `validate` makes it, or a 400 naming the first problem's path."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        raise Refusal(400, "body is not JSON", MALFORMED) from None
    try:
        return validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise Refusal(400, f"not {what}: {where}: {first['msg']}", MALFORMED) from None
