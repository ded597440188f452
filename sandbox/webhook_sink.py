"""A loopback webhook receiver that behaves as Standard Webhooks asks receivers to.

It verifies every delivery with the `standardwebhooks` library (401 on a missing or
bad signature or a timestamp outside 5 minutes), keeps each document once by its
`webhook-id` (a redelivery is answered as the first delivery was, and stored no
second time), and answers 200 with `{"id", "url", "owner"}` (`reply="record"`, the
optional reply the webhook target reads) or 204 with no body (`reply="none"`).

Fault hooks, each for the next n deliveries: `fail_next(n, 429|500|503|401|...,
retry_after=...)` answers that status before anything is stored (as a rate limiter or
a broken deploy in front of the receiver would); `drop_answer_next(n)` stores the
document, then closes the connection without an answer (a crash between the
receiver's commit and its reply, or between our POST and our ledger write);
`hang_next(n, seconds)` stores it and answers only after `seconds`, beyond the
client's timeout. `calls()` lists every request with the status it got.

    from sandbox.webhook_sink import start_webhook_sink

    with start_webhook_sink(secret="whsec_...") as sink:     # sink.url + "/hooks/ops"
        ...
        sink.sandbox.handoffs()                              # documents, once each
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.call_log import CallRecord, matching
from sandbox.server import RunningServer, _server

MAX_BODY = 1024 * 1024


@dataclass
class Fault:
    remaining: int
    status: int
    retry_after: float | None = None


@dataclass(frozen=True)
class Delivery:
    """One POST as received: its webhook-id (if any) and the status it was answered."""

    webhook_id: str | None
    path: str
    status: int
    at: float


@dataclass
class Stored:
    """A document kept once, with what the receiver answered for it."""

    webhook_id: str
    ref: str
    path: str
    body: dict[str, Any]
    received: int = 1  # deliveries of this webhook-id, the first included


@dataclass
class WebhookSink:
    secret: str
    reply: str = "record"  # "record": 200 with id/url/owner; "none": 204
    owner: str | None = None  # the owner the reply names; None: the document's ops owner
    base_url: str = ""
    # Servable: a receiver holds a secret to verify with, not an API token.
    access_token: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock)
    faults: list[Fault] = field(default_factory=list)
    drops: int = 0
    hangs: list[float] = field(default_factory=list)
    stored: dict[str, Stored] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    call_log: list[CallRecord] = field(default_factory=list)
    _refs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _closing: threading.Event = field(default_factory=threading.Event)

    # --- fault hooks

    def fail_next(self, n: int = 1, status: int = 503, *, retry_after: float | None = None) -> None:
        with self.lock:
            self.faults.append(Fault(n, status, retry_after))

    def drop_answer_next(self, n: int = 1) -> None:
        with self.lock:
            self.drops += n

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        with self.lock:
            self.hangs += [seconds] * n

    # --- what tests read

    def handoffs(self) -> list[dict[str, Any]]:
        """The documents kept, once each, in arrival order."""
        with self.lock:
            return [s.body for s in self.stored.values()]

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[CallRecord]:
        with self.lock:
            return matching(self.call_log, method, path_prefix)

    def close(self) -> None:
        self._closing.set()  # a hanging answer ends with the server

    # --- the receiver

    def receive(self, request: Request) -> Response:
        fault = self._next_fault()
        if fault is not None:
            return self._fault(fault)
        body = request.get_data(cache=False)
        try:
            Webhook(self.secret).verify(body, dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: a malformed signature list or non-UTF-8 body; same answer.
            return _json({"error": "invalid signature", "detail": str(exc)}, 401)
        if request.mimetype != "application/json":
            return _json({"error": "expected application/json"}, 415)
        try:
            document = json.loads(body)
        except ValueError:
            return _json({"error": "body is not JSON"}, 400)
        if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
            return _json({"error": "expected an object with `type` and `data`"}, 400)
        msg_id = request.headers["webhook-id"]
        with self.lock:
            found = self.stored.get(msg_id)
            if found is not None:
                found.received += 1
            else:
                found = Stored(msg_id, f"doc-{next(self._refs)}", request.path, document)
                self.stored[msg_id] = found
        self._misbehave_after_storing(request)
        return self._answer(found)

    def document_page(self, ref: str) -> Response:
        """The reply's `url`: the stored document, as a receiver's UI would show it."""
        with self.lock:
            for stored in self.stored.values():
                if stored.ref == ref:
                    return _json(stored.body, 200)
        raise NotFound()

    def _answer(self, stored: Stored) -> Response:
        if self.reply == "none":
            return Response(status=204)
        data = stored.body["data"]
        owner = self.owner or (data.get("ops") or {}).get("owner")
        return _json(
            {"id": stored.ref, "url": f"{self.base_url}/documents/{stored.ref}", "owner": owner},
            200,
        )

    def _next_fault(self) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
        return None

    def _fault(self, fault: Fault) -> Response:
        bodies = {
            401: {"error": "invalid signature"},
            429: {"error": "too many requests"},
        }
        answer = _json(bodies.get(fault.status, {"error": "receiver unavailable"}), fault.status)
        if fault.retry_after is not None:
            answer.headers["Retry-After"] = f"{fault.retry_after:g}"
        return answer

    def _misbehave_after_storing(self, request: Request) -> None:
        with self.lock:
            drop = self.drops > 0
            self.drops -= 1 if drop else 0
            hang = self.hangs.pop(0) if self.hangs and not drop else None
        if drop:
            sock = request.environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)  # the client sees the connection end
        elif hang is not None:
            self._closing.wait(hang)

    def log(self, request: Request, status: int, started: float) -> None:
        with self.lock:
            self.call_log.append(CallRecord(request.method, request.path, status, started))
            if request.method == "POST":
                msg_id = request.headers.get("webhook-id")
                self.deliveries.append(Delivery(msg_id, request.path, status, started))


class WebhookSinkApp:
    """The sink's WSGI app: POST anywhere but /documents/ delivers."""

    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink
        self.urls = Map(
            [
                Rule("/documents/<ref>", endpoint="document", methods=["GET"]),
                Rule("/<path:path>", endpoint="receive", methods=["POST"]),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        started = time.time()
        try:
            if request.content_length is not None and request.content_length > MAX_BODY:
                answer = _json({"error": "body too large"}, 413)
            else:
                endpoint, values = self.urls.bind_to_environ(environ).match()
                if endpoint == "document":
                    answer = self.sink.document_page(values["ref"])
                else:
                    answer = self.sink.receive(request)
        except (NotFound, MethodNotAllowed) as exc:
            answer = _json({"error": exc.name}, exc.code or 404)
        except HTTPException as exc:
            answer = _json({"error": exc.name}, exc.code or 400)
        self.sink.log(request, answer.status_code, started)
        return answer(environ, start_response)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


class RunningWebhookSink(RunningServer[WebhookSink]):
    """A sink being served: `.url`, `.sandbox` (the WebhookSink), `.stop()`."""

    thread_name = "webhook-sink"


def start_webhook_sink(
    secret: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reply: str = "record",
    access_log: bool = False,
) -> RunningWebhookSink:
    """Serve a fresh sink verifying with `secret` on host:port (0 = any free port)."""
    sink = WebhookSink(secret=secret, reply=reply)
    return RunningWebhookSink(sink, _server(host, port, WebhookSinkApp(sink), access_log))
