"""simple-salesforce behind our error vocabulary, our rate budget and one login.

* Login in one of three modes (SalesforceSettings.login_mode): a ready access token,
  OAuth client credentials through an External Client App, or username + password +
  security token. The client is always built on a session id, so the SDK never logs in
  again by itself: an expired session (INVALID_SESSION_ID) is renewed here once; a second
  refusal is an AuthError, as is a token that cannot be renewed at all.
* Every request goes through `BudgetedSession` (the SDK's public `session` knob): it takes
  a slot of the org's shared budget first, reads `Sforce-Limit-Info` from the answer into
  it (what /metrics shows), and, for an `http://` instance (a loopback sandbox), sends the
  SDK's https:// URLs there over plain HTTP.
* Failures leave as our three kinds: 5xx, timeouts and connection errors retry;
  REQUEST_LIMIT_EXCEEDED is a QuotaError that waits (and pauses every process's budget);
  auth failures stop; INVALID_FIELD and the other 4xx are permanent.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)
from simple_salesforce.login import SalesforceLogin

from connectors.salesforce_settings import SalesforceSettings
from kernel import api_calls
from kernel.errors import (
    AuthError,
    ConnectorError,
    NotConfigured,
    PermanentError,
    QuotaError,
    RetryableError,
)
from kernel.rate_budget import Limit, Observed, RateBudget, RateBudgets, take_slot
from kernel.settings import SharedSettings

T = TypeVar("T")

# Salesforce's API allocation is a rolling 24 hours; a spent one frees up gradually, so
# an attempt that meets REQUEST_LIMIT_EXCEEDED asks again after this long, not sooner.
DAILY_WINDOW_SECONDS = 24 * 3600.0
QUOTA_WAIT = dt.timedelta(hours=1)
DAILY_LIMIT = "Salesforce's daily API request limit"
# The shared pacing per org: Salesforce has no per-second limit, but a burst from many
# workers must not spend the whole day's allocation in minutes either.
DEFAULT_LIMIT = Limit(requests=50, window=1.0)
# sObject Collections take at most 200 records per call; `IN (...)` lists stay well under
# the 100,000-character SOQL limit at this size.
COLLECTION_LIMIT = 200
QUERY_ID_LIMIT = 200

_AUTH_CODES = frozenset(
    {"INVALID_SESSION_ID", "INVALID_AUTH_HEADER", "INSUFFICIENT_ACCESS", "API_DISABLED_FOR_ORG"}
)
_RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"})


def chunks(items: Sequence[T], size: int = COLLECTION_LIMIT) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def usage(limit_info: str | None) -> tuple[int, int] | None:
    """`api-usage=used/total` (Sforce-Limit-Info) -> (used, total)."""
    if not limit_info:
        return None
    for part in limit_info.split(","):
        name, _, value = part.strip().partition("=")
        if name == "api-usage":
            used, _, total = value.partition("/")
            try:
                return int(used), int(total)
            except ValueError:
                return None
    return None


def figures(limit_info: str | None) -> Observed | None:
    """The org's daily allocation as the budget's metric figures (remaining of maximum)."""
    found = usage(limit_info)
    if found is None:
        return None
    used, total = found
    return Observed(max(0, total - used), total, DAILY_WINDOW_SECONDS, time.time())


def error_code(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode") or "")
    if isinstance(content, dict):
        return str(content.get("errorCode") or content.get("error") or "")
    return ""


def error_message(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        fields = ", ".join(first.get("fields") or [])
        text = f"{first.get('errorCode')}: {first.get('message')}"
        return f"{text} ({fields})" if fields else text
    return f"HTTP {exc.status}"


def quota_error(operation: str) -> QuotaError:
    resets = dt.datetime.now(dt.UTC) + QUOTA_WAIT
    return QuotaError(
        f"Salesforce {operation}: daily API limit reached", DAILY_LIMIT, resets, "UTC"
    )


def translate(exc: BaseException, operation: str) -> ConnectorError:
    """One of our three kinds for whatever simple-salesforce or requests raised."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return RetryableError(f"Salesforce {operation}: {type(exc).__name__}")
    if isinstance(exc, SalesforceAuthenticationFailed):
        return AuthError(f"Salesforce {operation}: login refused ({exc.code})")
    if isinstance(exc, SalesforceError):
        code = error_code(exc)
        message = f"Salesforce {operation}: {error_message(exc)}"
        if code == "REQUEST_LIMIT_EXCEEDED":
            return quota_error(operation)
        if isinstance(exc, SalesforceExpiredSession) or code in _AUTH_CODES:
            return AuthError(message)
        if isinstance(exc, SalesforceGeneralError) and exc.status >= 500 or code in _RETRY_CODES:
            return RetryableError(message)
        if isinstance(exc, SalesforceGeneralError) and exc.status == 429:
            return RetryableError(message)
        if isinstance(exc, SalesforceRefusedRequest):
            return PermanentError(message)
        return PermanentError(message)
    return RetryableError(f"Salesforce {operation}: {type(exc).__name__}")


class BudgetedSession(requests.Session):
    """Every request paced by the org's shared budget; Sforce-Limit-Info fed back to it."""

    def __init__(
        self,
        instance_url: str,
        budget: RateBudget | None,
        timeout: float,
        system: str = "salesforce",
    ) -> None:
        super().__init__()
        self.budget = budget
        self.timeout = timeout
        self.system = system  # what /metrics counts the calls under
        self.last_usage: tuple[int, int] | None = None
        target = urlsplit(instance_url)
        # An http:// instance is reached as given, whatever URL the SDK built.
        self._plain = (target.scheme, target.netloc) if target.scheme == "http" else None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if self._plain is not None:
            parts = urlsplit(str(url))
            url = urlunsplit((*self._plain, parts.path, parts.query, ""))
        kwargs.setdefault("timeout", self.timeout)
        slot = self._slot()
        try:
            answer = super().request(method, url, *args, **kwargs)
        except BaseException as exc:
            if self.budget is not None:
                result = api_calls.outcome(None, timed_out=isinstance(exc, requests.Timeout))
                self.budget.answered(slot, outcome=result, system=self.system)
            raise
        info = answer.headers.get("Sforce-Limit-Info")
        self.last_usage = usage(info) or self.last_usage
        if self.budget is not None:
            spent = answer.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in answer.text
            result = api_calls.outcome(answer.status_code, rate_limited=spent)
            self.budget.answered(slot, figures(info), outcome=result, system=self.system)
            if spent:
                # Every process waits, rather than each one spending a call to learn it.
                self.budget.pause(QUOTA_WAIT.total_seconds())
        return answer

    def _slot(self) -> str | None:
        return take_slot(self.budget, "Salesforce")


def login_domain(instance_url: str) -> str:
    """simple-salesforce's `domain` (`https://<domain>.salesforce.com`) of a My Domain URL."""
    host = urlsplit(instance_url).hostname or ""
    if host.endswith(".salesforce.com"):
        return host.removesuffix(".salesforce.com")
    # Not a salesforce.com host (a loopback sandbox): the session routes there anyway;
    # client credentials need a My Domain-shaped name rather than `login`.
    return "fullkit.my"


class SalesforceApi:
    """One org: a logged-in simple-salesforce client and our error translation."""

    def __init__(
        self,
        settings: SharedSettings,
        *,
        budgets: RateBudgets | None = None,
        session: requests.Session | None = None,
        system: str = "salesforce",
    ) -> None:
        """`system` names the calls on /metrics: the connector or ops target making them."""
        self.config = settings.section(SalesforceSettings)
        if self.config.instance_url is None:
            raise NotConfigured("Salesforce connector disabled: SALESFORCE_INSTANCE_URL is not set")
        if not self.config.enabled:
            raise NotConfigured(
                "Salesforce connector disabled: no login is set (SALESFORCE_ACCESS_TOKEN, "
                "SALESFORCE_CLIENT_ID and _SECRET, or SALESFORCE_USERNAME and _PASSWORD)"
            )
        self.instance_url = self.config.instance_url
        identity = f"{self.instance_url} {self._identity()}"
        budget = budgets.budget("salesforce", identity, DEFAULT_LIMIT) if budgets else None
        self.session = session or BudgetedSession(
            self.instance_url, budget, self.config.timeout_seconds, system
        )
        self._client: Salesforce | None = None
        self._lock = threading.Lock()

    def _identity(self) -> str:
        # Names the account for the budget's key; only its digest reaches Redis.
        config = self.config
        return config.username or (
            config.client_id.get_secret_value() if config.client_id else "token"
        )

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """(used, total) of the org's daily allocation, as the last answer said."""
        return getattr(self.session, "last_usage", None)

    # --- session ---------------------------------------------------------------------

    def client(self) -> Salesforce:
        with self._lock:
            if self._client is None:
                self._client = self._connect(self._session_id())
            return self._client

    def _connect(self, session_id: str) -> Salesforce:
        return Salesforce(
            instance_url=self.instance_url,
            session_id=session_id,
            session=self.session,
            version=self.config.api_version,
        )

    def _session_id(self) -> str:
        config = self.config
        mode = config.login_mode
        if mode == "token" and config.access_token is not None:
            return config.access_token.get_secret_value()
        domain = login_domain(self.instance_url)
        try:
            if mode == "client_credentials":
                assert config.client_id is not None and config.client_secret is not None
                session_id, _instance = SalesforceLogin(
                    consumer_key=config.client_id.get_secret_value(),
                    consumer_secret=config.client_secret.get_secret_value(),
                    domain=domain,
                    session=self.session,
                    sf_version=config.api_version,
                )
            else:
                assert config.username is not None and config.password is not None
                token = config.security_token
                session_id, _instance = SalesforceLogin(
                    username=config.username,
                    password=config.password.get_secret_value(),
                    security_token=token.get_secret_value() if token is not None else "",
                    domain=domain if domain != "fullkit.my" else "login",
                    session=self.session,
                    sf_version=config.api_version,
                )
        except SalesforceAuthenticationFailed as exc:
            # invalid_grant / invalid_client / a wrong password: a human must act.
            raise AuthError(f"Salesforce login ({mode}) refused: {exc.code}") from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise RetryableError(f"Salesforce login: {type(exc).__name__}") from None
        return str(session_id)

    def _renew(self, stale: Salesforce) -> Salesforce:
        with self._lock:
            if self._client is stale:  # another thread may have renewed it already
                self._client = self._connect(self._session_id())
            assert self._client is not None
            return self._client

    # --- calls -----------------------------------------------------------------------

    def call(self, operation: str, action: Callable[[Salesforce], T]) -> T:
        """Run `action` on the client; an expired session is renewed once, then retried."""
        try:
            client = self.client()
            try:
                return action(client)
            except SalesforceExpiredSession:
                if self.config.login_mode == "token":
                    raise AuthError(
                        f"Salesforce {operation}: SALESFORCE_ACCESS_TOKEN expired or revoked"
                    ) from None
                return action(self._renew(client))
        except Exception as exc:  # noqa: BLE001 - every failure leaves as one of our kinds
            raise translate(exc, operation) from None

    def query_all(self, operation: str, soql: str) -> list[dict[str, Any]]:
        answer = self.call(operation, lambda sf: sf.query_all(soql))
        records: list[dict[str, Any]] = answer.get("records") or []
        return records

    def restful(self, operation: str, path: str, method: str = "GET", body: Any = None) -> Any:
        return self.call(
            operation,
            lambda sf: (
                sf.restful(path, method=method, json=body)
                if body is not None
                else sf.restful(path, method=method)
            ),
        )


def quote(value: str) -> str:
    """A SOQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def id_list(ids: Sequence[str]) -> str:
    return ", ".join(quote(record_id) for record_id in ids)


def record_errors(result: dict[str, Any]) -> str:
    errors = result.get("errors") or []
    return "; ".join(
        f"{e.get('statusCode') or e.get('errorCode')}: {e.get('message')}"
        + (f" ({', '.join(e['fields'])})" if e.get("fields") else "")
        for e in errors
        if isinstance(e, dict)
    )


def item_error(result: dict[str, Any], operation: str) -> ConnectorError:
    """One record's failure in a collection answer, as one of our kinds."""
    text = f"Salesforce {operation}: {record_errors(result) or 'refused'}"
    codes = {
        str(e.get("statusCode") or e.get("errorCode"))
        for e in result.get("errors") or []
        if isinstance(e, dict)
    }
    if codes & _RETRY_CODES:
        return RetryableError(text)
    if "REQUEST_LIMIT_EXCEEDED" in codes:
        return quota_error(operation)
    if codes & _AUTH_CODES:
        return AuthError(text)
    return PermanentError(text)
