"""The three kinds of connector failure; the job layer picks one handling path for each."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping


class ConnectorError(Exception):
    """Base of every connector failure. Messages never contain secrets."""


class RetryableError(ConnectorError):
    """Try again later: 429, 5xx, timeouts, connection errors."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110).

    `headers` as a client gives them: case-insensitive, or with lower-cased names."""
    value = None if headers is None else headers.get("retry-after", headers.get("Retry-After"))
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class QuotaError(RetryableError):
    """A quota that resets at a known moment (e.g. a daily API limit) is spent.

    Asking again before `resets_at` cannot help, however long that is, so the job layer
    waits for it instead of counting the wait against its retry window.
    """

    def __init__(self, message: str, quota: str, resets_at: dt.datetime, zone: str) -> None:
        super().__init__(message, retry_after=None)
        self.quota = quota  # e.g. "HubSpot's daily API limit"
        self.resets_at = resets_at  # timezone-aware, in `zone`
        self.zone = zone  # the IANA name the reset is counted in, for people to read

    def waiting(self) -> str:
        return f"waiting for {self.quota} to reset at {self.resets_at:%Y-%m-%d %H:%M} ({self.zone})"


class AuthError(ConnectorError):
    """Authentication or configuration is wrong: stop at once, a human must act."""


class NotConfigured(AuthError):
    """The connector has no credentials at all: it is switched off, not broken."""


class PermanentError(ConnectorError):
    """The data is bad (a 4xx a retry cannot fix): record it and surface it."""


class Unsupported(PermanentError):
    """The connector cannot do this (yet); asking again will not help."""


class PartialFailure(ConnectorError):
    """A batch call in which some items failed and the others were done.

    `failed` maps each failed item's key (the key the method's answer uses: a hand-off id
    or a deal id) to one of the three kinds above; `done` is the answer for the rest, so
    one bad item retries or fails alone instead of taking its batch with it.
    """

    def __init__(
        self, operation: str, failed: dict[str, ConnectorError], done: object = None
    ) -> None:
        first = next(iter(failed.values()), None)
        super().__init__(f"{operation}: {len(failed)} item(s) failed, first: {first}")
        self.failed = failed
        self.done = done
