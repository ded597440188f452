"""The three kinds of connector failure; the job layer picks one handling path for each."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every connector failure. Messages never contain secrets."""


class RetryableError(ConnectorError):
    """Try again later: 429, 5xx, timeouts, connection errors."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(ConnectorError):
    """Authentication or configuration is wrong: stop at once, a human must act."""


class PermanentError(ConnectorError):
    """The data is bad (a 4xx a retry cannot fix): record it and surface it."""
