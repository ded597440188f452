"""Signatures of JSON calls from Salesforce Flows and Apex:
`X-Fullkit-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` with
`X-Fullkit-Timestamp: <unix seconds>`, accepted within 5 minutes either way."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

MAX_SKEW_SECONDS = 5 * 60
# ASCII digits only: `str.isdigit()` also passes "²" and "٣", and thousands of digits
# overflow int()'s limit (see hubspot_signature).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


class SignatureInvalid(Exception):
    pass


class TimestampInvalid(SignatureInvalid):
    """The signed timestamp is missing, malformed or outside the window (a replay, or a
    clock off): told apart from a wrong signature on /metrics."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The header value a sender puts in X-Fullkit-Signature."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    signature: str | None,
    timestamp: str | None,
    secret: str,
    body: bytes,
    now: float | None = None,
) -> None:
    """Raises SignatureInvalid unless the request is signed with `secret` and fresh."""
    if not timestamp or not _TIMESTAMP.fullmatch(timestamp):
        raise TimestampInvalid("missing or malformed X-Fullkit-Timestamp")
    moment = time.time() if now is None else now
    if abs(moment - int(timestamp)) > MAX_SKEW_SECONDS:
        raise TimestampInvalid("timestamp outside the 5-minute window")
    given = _SIGNATURE.fullmatch(signature.strip()) if signature else None
    if given is None:
        raise SignatureInvalid("missing or malformed X-Fullkit-Signature (sha256=<hex>)")
    expected = sign(secret, timestamp, body).removeprefix("sha256=")
    if not hmac.compare_digest(expected, given.group(1).lower()):
        raise SignatureInvalid("signature does not match")
