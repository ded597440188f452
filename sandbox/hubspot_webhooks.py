"""Signed webhook delivery the way HubSpot does it: batches of up to 100 events,
v3 + v1 signatures, retries with backoff on connection errors, timeouts and 5xx
(never on 4xx), at most 10 attempts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MAX_BATCH = 100
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Subscription:
    id: int
    target_url: str
    client_secret: str
    app_id: int
    object_type: str  # "deals"
    property_name: str  # "dealstage"
    signature_version: str = "v1"  # what X-HubSpot-Signature carries besides v3
    # A developer-platform `crmObjects` subscription sends `object.propertyChange` with
    # the objectTypeId; a legacy one sends `deal.propertyChange`.
    generic: bool = False


@dataclass
class Delivery:
    """One HTTP attempt at delivering a batch."""

    url: str
    attempt: int
    events: list[dict[str, Any]]
    status: int | None
    error: str | None = None
    at: float = field(default_factory=time.time)


def sign_headers(
    subscription: Subscription, body: str, *, timestamp_ms: int | None = None
) -> dict[str, str]:
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    secret = subscription.client_secret
    v3_source = f"POST{subscription.target_url}{body}{ts}"
    v3 = base64.b64encode(
        hmac.new(secret.encode(), v3_source.encode(), hashlib.sha256).digest()
    ).decode()
    if subscription.signature_version == "v2":
        legacy_source = f"{secret}POST{subscription.target_url}{body}"
    else:
        legacy_source = f"{secret}{body}"
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": v3,
        "X-HubSpot-Request-Timestamp": ts,
        "X-HubSpot-Signature": hashlib.sha256(legacy_source.encode()).hexdigest(),
        "X-HubSpot-Signature-Version": subscription.signature_version,
        "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio)",
    }


def post_batch(
    subscription: Subscription, events: list[dict[str, Any]], timeout: float
) -> tuple[int | None, str | None]:
    """One signed POST -> (status, error). Connection failures give (None, reason)."""
    body = json.dumps(events, separators=(",", ":"))
    request = urllib.request.Request(
        subscription.target_url,
        data=body.encode(),
        method="POST",
        headers=sign_headers(subscription, body),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), None
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


class WebhookDispatcher:
    """Background batching and delivery; `flush` waits for everything queued."""

    def __init__(
        self,
        *,
        batch_window: float = 0.05,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self.batch_window = batch_window
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.log: list[Delivery] = []
        self._cond = threading.Condition()
        self._queue: list[tuple[Subscription, dict[str, Any]]] = []
        self._in_flight = 0
        self._held = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def enqueue(self, subscription: Subscription, event: dict[str, Any]) -> None:
        with self._cond:
            self._queue.append((subscription, event))
            self._ensure_thread()
            self._cond.notify_all()

    def hold(self, held: bool) -> None:
        """While held, events queue up and nothing is sent (to force one batch)."""
        with self._cond:
            self._held = held
            self._cond.notify_all()

    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self.log)

    def deliver_now(self, subscription: Subscription, events: list[dict[str, Any]]) -> int | None:
        """Send one batch synchronously, once, no retry (for hand-crafted deliveries)."""
        status, error = post_batch(subscription, events, self.timeout)
        with self._cond:
            self.log.append(Delivery(subscription.target_url, 1, events, status, error))
        return status

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty and no batch is in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals ---------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._collect, name="hubspot-sandbox-webhooks", daemon=True
            )
            self._thread.start()

    def _collect(self) -> None:
        while True:
            with self._cond:
                while (not self._queue or self._held) and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                # Let a burst of changes pile up so they go out as one batch, as HubSpot does.
                deadline = time.monotonic() + self.batch_window
                while (remaining := deadline - time.monotonic()) > 0 and len(
                    self._queue
                ) < MAX_BATCH:
                    self._cond.wait(remaining)
                batches = self._take_batches()
                self._in_flight += len(batches)
            for subscription, events in batches:
                threading.Thread(
                    target=self._deliver, args=(subscription, events), daemon=True
                ).start()

    def _take_batches(self) -> list[tuple[Subscription, list[dict[str, Any]]]]:
        by_target: dict[tuple[str, str], tuple[Subscription, list[dict[str, Any]]]] = {}
        for subscription, event in self._queue:
            key = (subscription.target_url, subscription.client_secret)
            by_target.setdefault(key, (subscription, []))[1].append(event)
        self._queue.clear()
        batches = []
        for subscription, events in by_target.values():
            for start in range(0, len(events), MAX_BATCH):
                batches.append((subscription, events[start : start + MAX_BATCH]))
        return batches

    def _deliver(self, subscription: Subscription, events: list[dict[str, Any]]) -> None:
        try:
            for attempt in range(MAX_ATTEMPTS):
                sent = [{**e, "attemptNumber": attempt} for e in events]
                status, error = post_batch(subscription, sent, self.timeout)
                with self._cond:
                    self.log.append(
                        Delivery(subscription.target_url, attempt + 1, sent, status, error)
                    )
                if status is not None and status < 500:
                    return
                delay = min(self.backoff_max, self.backoff_base * (2**attempt))
                with self._cond:
                    if self._cond.wait_for(lambda: self._closed, timeout=delay):
                        return
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()
