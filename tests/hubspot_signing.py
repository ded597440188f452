"""Sign test requests the way HubSpot does (independently of the code under test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def v3_headers(secret: str, uri: str, body: str, timestamp_ms: int | None = None) -> dict[str, str]:
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    message = f"POST{uri}{body}{timestamp}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": timestamp,
    }


def v2_headers(secret: str, uri: str, body: str) -> dict[str, str]:
    signature = hashlib.sha256(f"{secret}POST{uri}{body}".encode()).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": signature,
        "X-HubSpot-Signature-Version": "v2",
    }


def v1_headers(secret: str, body: str) -> dict[str, str]:
    signature = hashlib.sha256(f"{secret}{body}".encode()).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": signature,
        "X-HubSpot-Signature-Version": "v1",
    }
