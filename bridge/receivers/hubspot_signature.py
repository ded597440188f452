"""HubSpot request signatures: v3 (HMAC, timestamped), with v2/v1 for older apps."""

from __future__ import annotations

import base64
import hmac
import re
import time
from collections.abc import Iterable
from typing import Protocol

from hubspot.utils.signature import Signature

MAX_SKEW_MS = 5 * 60 * 1000
# Epoch milliseconds in ASCII digits: `str.isdigit()` also passes "²" and "٣", which int()
# refuses or reads, and thousands of digits overflow int()'s limit: each was a 500.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# HubSpot's v3 instructions decode exactly these escapes in the URI before signing.
_V3_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip


class SignatureInvalid(Exception):
    pass


class TimestampInvalid(SignatureInvalid):
    """The signed timestamp is missing, malformed or outside the window (a replay, or a
    clock off): told apart from a wrong signature on /metrics."""


class HeaderItems(Protocol):
    """A request's headers, as a dict or werkzeug's Headers (read once, not copied first)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def decode_v3_uri(uri: str) -> str:
    if "%" not in uri:  # the usual webhook URL: nothing to decode, no loop per character
        return uri
    out = []
    index = 0
    while index < len(uri):
        chunk = uri[index : index + 3].upper()
        if chunk in _V3_DECODED:
            out.append(_V3_DECODED[chunk])
            index += 3
        else:
            out.append(uri[index])
            index += 1
    return "".join(out)


def verify(
    headers: HeaderItems,
    secret: str,
    method: str,
    uri: str,
    body: str,
    now_ms: int | None = None,
    *,
    accept_legacy: bool = False,
) -> str:
    """Check the request's signature; returns the version used, raises SignatureInvalid.

    v2/v1 carry no timestamp (v1 not even the URL), so a captured request replays forever:
    they count only with `accept_legacy`, and never when v3 headers are present.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    v3 = lowered.get("x-hubspot-signature-v3")
    if v3 is not None:
        timestamp = lowered.get("x-hubspot-request-timestamp", "")
        _check_timestamp(timestamp, now_ms)
        return _compare(v3_signature(secret, method, uri, body, timestamp), v3, "v3")
    signature = lowered.get("x-hubspot-signature")
    if signature is None:
        raise SignatureInvalid("missing signature")
    if not accept_legacy:
        raise SignatureInvalid("v3 signature required (legacy v1/v2 signatures are off)")
    version = lowered.get("x-hubspot-signature-version", "v1").lower()
    if version not in {"v1", "v2"}:
        raise SignatureInvalid(f"unsupported signature version {version}")
    expected = Signature.get_signature(secret, body, version, uri, method)
    return _compare(expected, signature, version)


def v3_signature(secret: str, method: str, uri: str, body: str, timestamp: str) -> str:
    """What Signature.get_signature(..., "v3", ...) of hubspot-api-client computes, with
    the one-shot HMAC of the standard library: every webhook pays for it, and the client's
    builds an HMAC object in Python first."""
    message = f"{method}{decode_v3_uri(uri)}{body}{timestamp}".encode()
    return base64.b64encode(hmac.digest(secret.encode(), message, "sha256")).decode()


def _check_timestamp(timestamp: str, now_ms: int | None) -> None:
    if not _TIMESTAMP.fullmatch(timestamp):
        raise TimestampInvalid("missing or malformed X-HubSpot-Request-Timestamp")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    if abs(now - int(timestamp)) > MAX_SKEW_MS:
        raise TimestampInvalid("timestamp outside the 5-minute window")


def _compare(expected: str, given: str, version: str) -> str:
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise SignatureInvalid(f"{version} signature does not match")
    return version
