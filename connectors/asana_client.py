"""The official `asana` client behind our error vocabulary, our rate budget and timeouts.

Only the client's public knobs are used: `Configuration.host` (ASANA_API_BASE exactly as
given, so a loopback sandbox works), `retry_strategy` off (the job layer owns backoff and
the retry window; a hidden urllib3 retry would multiply calls against Asana's per-minute
limit and hide its 429s), `_request_timeout` on every call, and `full_payload=True` so an
answer is the plain JSON envelope (`data`, `next_page`) rather than a page iterator.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import asana
import urllib3
from asana.rest import ApiException

from connectors.asana_oauth import AccessTokens
from connectors.asana_settings import AsanaSettings
from kernel import api_calls
from kernel.cache import LocalCache, SharedCache, cache_key
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

DISABLED_MESSAGE = (
    "asana ops target disabled: ASANA_ACCESS_TOKEN is not set "
    "(nor ASANA_CLIENT_ID, ASANA_CLIENT_SECRET and ASANA_REFRESH_TOKEN)"
)
CONNECT_TIMEOUT = 5.0
PAGE_LIMIT = 100  # Asana's largest page
# Users come and go with staff: their gids by email are shared for minutes; an email that
# is no user is not remembered, so adding the user in Asana and replaying works at once.
USER_TTL_SECONDS = 600.0


class NotFoundError(PermanentError):
    """404: the object (or the `external:` id) does not exist, or the token cannot see it."""


class TokenRefused(AuthError):
    """401: the token is wrong, revoked or expired."""


class AsanaApi:
    """One ApiClient per target, with the generated APIs Fullkit uses."""

    def __init__(
        self,
        settings: SharedSettings,
        *,
        budgets: RateBudgets | None = None,
        cache: SharedCache | None = None,
    ) -> None:
        own = settings.section(AsanaSettings)
        if not own.enabled:
            raise NotConfigured(DISABLED_MESSAGE)
        self.base = own.api_base.rstrip("/")
        self.timeout = (min(CONNECT_TIMEOUT, own.timeout_seconds), own.timeout_seconds)
        self.tokens = AccessTokens(own, self.timeout)
        # Names the account for the rate budget and the cache; only digests leave here.
        secret = own.refresh_token if own.refreshable else own.access_token
        token = secret.get_secret_value() if secret is not None else ""
        configuration = asana.Configuration()
        configuration.host = self.base
        configuration.retry_strategy = False
        self._configuration = configuration
        client = asana.ApiClient(configuration)
        client.user_agent = "fullkit (asana)"
        # The client starts a thread pool for `async_req`, which Fullkit never uses: stop
        # it now rather than keep idle threads per target (its __del__ skips a dropped pool).
        client.pool.terminate()
        del client.pool
        self.tasks = asana.TasksApi(client)
        self.users = asana.UsersApi(client)
        self.projects = asana.ProjectsApi(client)
        self.templates = asana.ProjectTemplatesApi(client)
        self.jobs = asana.JobsApi(client)
        self.job_wait_seconds = own.job_wait_seconds
        rate = own.rate
        # One budget per token (Asana counts per token); only its digest reaches Redis.
        # With the limit off it only counts the calls (for /metrics).
        self.budget: RateBudget | None = (
            budgets.budget("asana", f"{self.base} {token}", Limit(*rate) if rate else None)
            if budgets is not None
            else None
        )
        self._digest = hashlib.sha256(token.encode()).hexdigest()
        self.cache: SharedCache = cache if cache is not None else LocalCache()

    def call(self, operation: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One generated API method -> its whole JSON answer, or one of our three errors."""
        return self._send(
            operation,
            lambda: method(*args, full_payload=True, _request_timeout=self.timeout, **kwargs),
        )

    def post(
        self, operation: str, path: str, path_params: dict[str, str], body: Any, opt_fields: str
    ) -> dict[str, Any]:
        """A POST through the same ApiClient, for a generated method that would also copy
        its body into the query string (`instantiate_project` takes both from one dict)."""
        client = self.templates.api_client

        def send() -> Any:
            return client.call_api(
                path,
                "POST",
                path_params,
                {"opt_fields": opt_fields},
                {"Accept": "application/json", "Content-Type": "application/json"},
                body=body,
                response_type=object,
                auth_settings=["personalAccessToken"],
                _return_http_data_only=True,
                _request_timeout=self.timeout,
            )

        found = self._send(operation, send).get("data")
        if not isinstance(found, dict):
            raise RetryableError(f"Asana {operation}: the answer carries no data object")
        return found

    def _send(self, operation: str, send: Callable[[], Any]) -> dict[str, Any]:
        token = self.tokens.current()
        try:
            return self._send_once(operation, send, token)
        except TokenRefused:
            # A refreshed token may succeed where an expired one did not; once.
            if not self.tokens.refused(token):
                raise
        return self._send_once(operation, send, self.tokens.current())

    def _send_once(self, operation: str, send: Callable[[], Any], token: str) -> dict[str, Any]:
        # The generated client reads the token from its configuration on every call.
        self._configuration.access_token = token
        slot = self._slot(operation)
        try:
            answer = send()
        except Exception as exc:  # noqa: BLE001 - every failure leaves as one of our kinds
            error = translate(exc, operation)
            if self.budget is not None:
                status = getattr(exc, "status", None)
                self.budget.answered(
                    slot,
                    outcome=api_calls.outcome(
                        status if isinstance(status, int) and status else None,
                        timed_out=isinstance(exc, urllib3.exceptions.TimeoutError),
                    ),
                    system="asana",
                )
                if isinstance(error, RetryableError) and error.retry_after and _limited(exc):
                    # Asana's wait holds for every process spending this token.
                    self.budget.pause(error.retry_after)
            raise error from None
        if self.budget is not None:
            self.budget.answered(slot, outcome=api_calls.OK, system="asana")
        if not isinstance(answer, dict):
            raise RetryableError(f"Asana {operation}: the answer is not a JSON object")
        return answer

    def data(self, operation: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The answer's `data` object."""
        found = self.call(operation, method, *args, **kwargs).get("data")
        if not isinstance(found, dict):
            raise RetryableError(f"Asana {operation}: the answer carries no data object")
        return found

    def pages(
        self, operation: str, method: Callable[..., Any], *args: Any, opts: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paged list, page by page (offset tokens, as Asana pages)."""
        query = {**opts, "limit": PAGE_LIMIT}
        while True:
            answer = self.call(operation, method, *args, query)
            yield from (item for item in answer.get("data") or [] if isinstance(item, dict))
            offset = (answer.get("next_page") or {}).get("offset")
            if not offset:
                return
            query = {**query, "offset": offset}

    def user(self, email: str) -> dict[str, str]:
        """{gid, email} of the Asana user with this email, remembered for minutes.

        Asana takes an email wherever a user is named; asking first tells an unknown ops
        owner apart (a PermanentError naming it) and gives the gid a project owner needs.
        """
        key = cache_key("asana", self.base, self._digest, "user", email.strip().lower())
        cached = self.cache.get(key)
        if cached:
            try:
                found = json.loads(cached)
                return {"gid": str(found["gid"]), "email": str(found["email"])}
            except (ValueError, KeyError, TypeError):
                pass  # written by another version: ask Asana again
        try:
            user = self.data(
                "read ops owner", self.users.get_user, email, {"opt_fields": "email,name"}
            )
        except NotFoundError:
            raise PermanentError(
                f"ops owner {email} is not an Asana user the token can see; "
                "fix the kit's ops.owners or add the user to the Asana workspace"
            ) from None
        found = {"gid": str(user.get("gid")), "email": str(user.get("email") or email)}
        self.cache.set(key, json.dumps(found), USER_TTL_SECONDS)
        return found

    def _slot(self, operation: str) -> str | None:
        return take_slot(self.budget, f"Asana {operation}")


def _limited(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 429


def translate(exc: BaseException, operation: str) -> ConnectorError:
    """Any failure of an Asana call -> RetryableError, AuthError or PermanentError."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return RetryableError(f"Asana {operation}: timed out")
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return RetryableError(f"Asana {operation}: connection failed ({type(exc).__name__})")
    if not isinstance(exc, ApiException):
        return PermanentError(f"Asana {operation}: {type(exc).__name__}")
    status = exc.status if isinstance(exc.status, int) else 0
    return from_status(status, _headers(exc.headers), messages(exc.body), operation)


def from_status(
    status: int, headers: Mapping[str, str], said: str, operation: str
) -> ConnectorError:
    where = f"Asana {operation}: HTTP {status}" + (f" {said}" if said else "")
    if status == 0:
        # The generated client reports TLS failures as status 0.
        return RetryableError(f"Asana {operation}: TLS failure")
    if status == 429:
        return RetryableError(
            f"Asana {operation}: rate limited",
            retry_after=retry_after_seconds(headers) or 60.0,
        )
    if status >= 500 or status == 408:
        return RetryableError(where, retry_after=retry_after_seconds(headers))
    if status == 401:
        return TokenRefused(f"Asana {operation}: the access token was refused (HTTP 401)")
    if status in {402, 403}:
        # 402: a premium feature (templates) on a free domain; 403: the token's user may
        # not do this. Either way a human must change the set-up, not the data.
        return AuthError(where)
    if status == 404:
        return NotFoundError(where)
    return PermanentError(where)


def messages(body: Any) -> str:
    """The `errors[].message` of Asana's error body, joined; never the request itself."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        return ""
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    if not isinstance(errors, list):
        return ""
    found = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return "; ".join(found)[:500]


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    items = raw.items() if hasattr(raw, "items") else raw
    return {str(key).lower(): str(value) for key, value in items}
