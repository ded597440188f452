"""The `jira` library (pycontribs) behind our error vocabulary and the site's rate budget.

* One `JIRA` client per target on REST API v3 (ADF descriptions), built without the
  server-info call (we speak only to Jira Cloud, so the client is told so) and with the
  library's own retries off (`max_retries=0`): the job layer retries with backoff, and a
  library that sleeps through 429s inside a job holds a worker and spends the budget.
* Every call takes a slot of the site's shared budget first; a 429 pauses every
  process's budget for its `Retry-After`.
* Failures leave as our kinds: 429, 5xx, timeouts and connection errors retry (with
  `Retry-After` when Jira sends one); 401 and 403 stop (the token or the account's
  permissions need a human); other 4xx are bad data. Messages carry Jira's own error
  texts, never a header or the token (`str(JIRAError)` would print both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import requests
from jira import JIRA, JIRAError
from jira.resilientsession import parse_errors

from connectors.jira_settings import JiraSettings
from kernel import api_calls
from kernel.errors import (
    AuthError,
    ConnectorError,
    NotConfigured,
    PermanentError,
    RetryableError,
    retry_after_seconds,
)
from kernel.rate_budget import Limit, RateBudget, RateBudgets, take_slot
from kernel.settings import SharedSettings

T = TypeVar("T")

# Jira Cloud limits bursts per endpoint and a points quota per hour; ten calls a second
# per site, shared by every worker, stays under both for hand-off volumes.
DEFAULT_LIMIT = Limit(requests=10, window=1.0)
CONNECT_TIMEOUT = 5.0
DISABLED_MESSAGE = "jira ops target disabled: JIRA_BASE_URL is not set"


def translate(exc: BaseException, operation: str) -> ConnectorError:
    """One of our three kinds for whatever the library or requests raised."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return RetryableError(f"Jira {operation}: {type(exc).__name__}")
    if not isinstance(exc, JIRAError):
        return RetryableError(f"Jira {operation}: {type(exc).__name__}")
    status = exc.status_code or 0
    response = exc.response if isinstance(exc.response, requests.Response) else None
    said = "; ".join(parse_errors(response)) if response is not None else ""
    message = f"Jira {operation}: HTTP {status}" + (f": {said}" if said else "")
    if status == 401:
        return TokenRefused(f"Jira {operation}: JIRA_EMAIL and JIRA_API_TOKEN were refused (401)")
    if status == 403:
        return AuthError(message)
    if status == 429 or status >= 500 or status == 0:
        return RetryableError(
            message,
            retry_after=retry_after_seconds(None if response is None else response.headers),
        )
    return PermanentError(message)


class TokenRefused(AuthError):
    """401: the site refused JIRA_EMAIL and JIRA_API_TOKEN, whatever the request."""


class JiraApi:
    """One Jira Cloud site: a `JIRA` client, its budget and our error translation."""

    def __init__(self, settings: SharedSettings, *, budgets: RateBudgets | None = None) -> None:
        self.config = settings.section(JiraSettings)
        config = self.config
        if config.base_url is None or config.email is None or config.api_token is None:
            raise NotConfigured(DISABLED_MESSAGE)
        self.base_url = config.base_url
        self.budget: RateBudget | None = (
            budgets.budget("jira", f"{self.base_url} {config.email}", DEFAULT_LIMIT)
            if budgets
            else None
        )
        self.client = JIRA(
            server=self.base_url,
            basic_auth=(config.email, config.api_token.get_secret_value()),
            options={"rest_api_version": "3"},
            get_server_info=False,
            max_retries=0,
            timeout=(CONNECT_TIMEOUT, config.timeout_seconds),
        )
        # Without the server-info call the library assumes Data Center and would search
        # through the /search endpoint Jira Cloud has removed; we only speak to Cloud.
        self.client.deploymentType = "Cloud"

    def url(self, path: str) -> str:
        return f"{self.base_url}/rest/api/3/{path}"

    def browse_url(self, key: str) -> str:
        return f"{self.base_url}/browse/{key}"

    def call(
        self,
        operation: str,
        action: Callable[[JIRA], T],
        refused: Callable[[], None] | None = None,
        sending: Callable[[], None] | None = None,
    ) -> T:
        """Run one request's worth of `action`, paced by the site's budget.

        `sending` runs once the slot is taken, just before the request goes out (a budget
        spent first sends nothing). `refused` runs when Jira answered with a 4xx: it did
        certainly not do the work (unlike a 5xx or a timeout, after which it may have).
        """
        slot = self._slot(operation)
        outcome = api_calls.OK
        try:
            if sending is not None:
                sending()
            return action(self.client)
        except Exception as exc:  # noqa: BLE001 - every failure leaves as one of our kinds
            error = translate(exc, operation)
            status = error_status(exc) or 0
            outcome = api_calls.outcome(status or None, timed_out=isinstance(exc, requests.Timeout))
            if refused is not None and 400 <= status < 500:
                refused()
            if self.budget is not None and status == 429:
                # Every process holds back, rather than each spending a call to learn it.
                self.budget.pause(getattr(error, "retry_after", None) or 1.0)
            raise error from None
        finally:
            if self.budget is not None:
                self.budget.answered(slot, outcome=outcome, system="jira")

    def post(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        refused: Callable[[], None] | None = None,
        sending: Callable[[], None] | None = None,
    ) -> Any:
        """POST through the library's own session (its auth, timeouts and error handling)
        where the library has no method taking the whole body."""

        def send(client: JIRA) -> Any:
            return client._session.post(self.url(path), json=body).json()

        return self.call(operation, send, refused, sending)

    def _slot(self, operation: str) -> str | None:
        return take_slot(self.budget, f"Jira {operation}")


def error_status(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, JIRAError) else None
