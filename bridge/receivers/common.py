"""What every receiver checks first, in the SPEC's order: size, then content type."""

from __future__ import annotations

from flask import Request, current_app

from bridge.metrics import WEBHOOK_ANSWERS

MAX_BODY_BYTES = 1024 * 1024


class Refusal(Exception):
    """A request answered with a 4xx/5xx and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_body(request: Request) -> bytes:
    """The raw body, refusing more than 1 MiB without reading it all."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise Refusal(413, "body over 1 MiB")
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise Refusal(413, "body over 1 MiB")
    return body


def require_content_type(request: Request, *allowed: str) -> None:
    if request.mimetype not in allowed:
        raise Refusal(415, f"content type must be {' or '.join(allowed)}")


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
