"""One HubSpot API client per connector, and HubSpot's failures in our three kinds.

Built on the official `hubspot-api-client`, with three deliberate changes:

* The API base is `HubSpotSettings.api_base` exactly as given (an `http://` loopback
  sandbox works), set as each generated package's `Configuration.host`.
* Every generated package talks through one shared `requests.Session` instead of a
  urllib3 pool per package: the discovery layer builds a fresh ApiClient on every attribute
  access, so without this each call would open a new connection. The session also gives
  every call a timeout (the generated code has none by default) and never retries.
* Every request first takes a slot from the account's shared rate budget (when the runtime
  gives one; see kernel/rate_budget.py), so N workers together stay under HubSpot's
  rolling limit instead of learning it from 429s. HubSpot's answers feed it back: their
  `X-HubSpot-RateLimit-*` figures and a 429's wait win over our own count.
* No retries inside the client. A hidden urllib3 retry would multiply the requests that
  count against HubSpot's 10-second limit and hide 429s from the job layer, which owns
  backoff, jitter and the 15-minute retry window.

Answers are parsed as plain JSON (`_preload_content=False`) rather than the generated
models: the models validate enums and required fields on read, so a value HubSpot adds
tomorrow would turn into a crash today.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
import structlog
import urllib3
from hubspot import HubSpot

from connectors.hubspot_settings import HubSpotSettings
from kernel import api_calls
from kernel import portal as portal_store
from kernel.cache import LocalCache, SharedCache, cache_key
from kernel.errors import (
    AuthError,
    ConnectorError,
    NotConfigured,
    PermanentError,
    QuotaError,
    RetryableError,
    retry_after_seconds,
)
from kernel.rate_budget import Limit, Observed, RateBudget, RateBudgets, take_slot
from kernel.settings import SharedSettings

log = structlog.get_logger("fullkit.hubspot")

DISABLED_MESSAGE = "HubSpot connector disabled: HUBSPOT_ACCESS_TOKEN is not set"

# (connect, read) seconds. Reads get longer because batch calls of 100 records can be slow;
# HUBSPOT_TIMEOUT_SECONDS sets the read timeout.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)

BATCH_LIMIT = 100  # HubSpot's batch read/create/update input limit
HISTORY_BATCH_LIMIT = 50  # batch reads that ask for propertiesWithHistory take fewer
# HubSpot's 423 locks "last for 2 seconds"; waiting less only earns another 423.
LOCK_SECONDS = 2.0
# Just after midnight a DAILY 429 means the reset is late, not that a day is left.
LATE_RESET_RECHECK = dt.timedelta(minutes=5)
# A DAILY 429 before the portal's time zone is known: look again within the hour.
UNKNOWN_RESET_RECHECK = dt.timedelta(hours=1)
DAILY_LIMIT = "HubSpot's daily API limit"


class NotFoundError(PermanentError):
    """404: the object (or the object named by idProperty) does not exist."""


class _DailyLimit(RetryableError):
    """429 with policyName DAILY, before the portal's time zone says when it ends."""


class ConflictError(PermanentError):
    """409: the write collides with an existing object (e.g. a unique property value)."""

    def __init__(self, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body: Mapping[str, Any] = body or {}


@dataclass
class _Response:
    """The slice of urllib3.HTTPResponse the generated REST layer reads."""

    status: int
    reason: str
    data: bytes
    headers: Mapping[str, str]

    def getheaders(self) -> Mapping[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


class _SessionPool:
    """Stands in for the urllib3.PoolManager of the generated REST client."""

    def __init__(
        self,
        session: requests.Session,
        timeout: tuple[float, float],
        budget: RateBudget | None = None,
        system: str = "hubspot",
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.budget = budget
        self.system = system  # what /metrics counts the calls under

    def request(
        self,
        method: str,
        url: str,
        body: str | bytes | None = None,
        fields: Any = None,
        preload_content: bool = True,
        timeout: urllib3.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        encode_multipart: bool = False,
    ) -> _Response:
        params = fields if method in {"GET", "HEAD"} else None
        data = body if body is not None else (fields if method not in {"GET", "HEAD"} else None)
        slot = self._slot()
        try:
            answer = self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=dict(headers or {}),
                timeout=self._timeout(timeout),
                allow_redirects=False,
            )
        except BaseException as exc:
            if self.budget is not None:
                timed_out = isinstance(exc, requests.Timeout)
                result = api_calls.outcome(None, timed_out=timed_out)
                self.budget.answered(slot, outcome=result, system=self.system)
            raise
        if self.budget is not None:
            status, headers = answer.status_code, answer.headers
            heed(self.budget, slot, status, headers, answer.content, system=self.system)
        return _Response(
            status=answer.status_code,
            reason=answer.reason or "",
            data=answer.content,
            headers=answer.headers,
        )

    def _slot(self) -> str | None:
        return take_slot(self.budget, "HubSpot")

    def _timeout(self, timeout: urllib3.Timeout | None) -> tuple[float, float]:
        if timeout is None:
            return self.timeout
        connect = timeout.connect_timeout
        read = timeout.read_timeout
        return (
            float(connect) if isinstance(connect, int | float) else self.timeout[0],
            float(read) if isinstance(read, int | float) else self.timeout[1],
        )


@dataclass(frozen=True)
class AccountDetails:
    portal_id: str
    time_zone: str  # IANA name, e.g. "America/New_York"
    ui_domain: str  # where the portal's UI lives, e.g. "app-eu1.hubspot.com"


@dataclass(frozen=True)
class OwnerName:
    """A HubSpot owner as people know them."""

    email: str | None
    name: str | None


# A portal's details hardly ever change (a time zone setting, a data-centre move): every
# process shares them for an hour. Owners come and go with staff, so their ids by email
# are shared for minutes; an email that is no owner is not remembered at all, so adding
# the user in HubSpot and replaying works at once.
ACCOUNT_TTL_SECONDS = 3600.0
OWNER_TTL_SECONDS = 600.0
# What the shared cache said is held by this object for a while, sparing a Redis round
# trip for each of the hundred record links a batch builds.
ACCOUNT_MEMO_SECONDS = 60.0
# The owners list answers up to 500 a page; a start-up reads at most this many pages, and
# owners past them are read one by one when a deal of theirs comes.
OWNER_PAGE = 500
OWNER_PAGES = 10


class HubSpotApi:
    """The official client pointed at our base, plus error translation and raw calls."""

    def __init__(
        self,
        settings: SharedSettings,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] | None = None,
        budgets: RateBudgets | None = None,
        cache: SharedCache | None = None,
        system: str = "hubspot",
    ) -> None:
        """`system` names the calls on /metrics: the connector or ops target making them."""
        own = settings.section(HubSpotSettings)
        if own.access_token is None:
            raise NotConfigured(DISABLED_MESSAGE)
        token = own.access_token.get_secret_value()
        if not token:
            raise NotConfigured(DISABLED_MESSAGE)
        self.settings = settings
        self.base = own.api_base.rstrip("/")
        self.session = session or requests.Session()
        rate = own.rate
        # One budget per portal and app: the token names both (only its digest is kept).
        # With the limit off it only counts the calls (for /metrics).
        self.budget = (
            budgets.budget("hubspot", f"{self.base} {token}", Limit(*rate) if rate else None)
            if budgets is not None
            else None
        )
        read = own.timeout_seconds
        timeout = timeout or (min(DEFAULT_TIMEOUT[0], read), read)
        self._pool = _SessionPool(self.session, timeout, self.budget, system)
        # Where the portal id goes once known, for the receivers (kernel/portal.py).
        self._redis = budgets.connection if budgets is not None else None
        self._apis: dict[tuple[str, str], Any] = {}
        self._token_digest = hashlib.sha256(token.encode()).hexdigest()
        # Facts about this portal (account details, owner ids), shared by every process
        # when the runtime gives a cache; this object's own memory otherwise.
        self.cache: SharedCache = cache if cache is not None else LocalCache()
        self._account_memo: tuple[AccountDetails, float] | None = None
        self._memo_lock = threading.Lock()
        self.client = HubSpot(access_token=token, api_factory=self._api_factory)
        # An explicit UI base (a loopback sandbox) wins over the portal's uiDomain.
        self.app_base = (own.app_base or "").rstrip("/") or None

    def _api_factory(self, package: Any, api_name: str, config: dict[str, Any]) -> Any:
        key = (package.__name__, api_name)
        api = self._apis.get(key)
        if api is None:
            configuration = package.Configuration(host=self.base)
            configuration.access_token = config["access_token"]
            api_client = package.ApiClient(configuration=configuration)
            api_client.rest_client.pool_manager = self._pool
            api_client.user_agent = "fullkit (hubspot-api-client)"
            api = getattr(package, api_name)(api_client=api_client)
            self._apis[key] = api
        return api

    def call(self, operation: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one generated API method; its JSON answer, or one of our three errors."""
        try:
            answer = method(*args, _preload_content=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure leaves as one of our kinds
            raise self._translate(exc, operation) from None
        return _json(answer)

    def _translate(self, exc: BaseException, operation: str) -> ConnectorError:
        error = translate(exc, operation)
        return self._daily_limit(operation) if isinstance(error, _DailyLimit) else error

    def _daily_limit(self, operation: str) -> QuotaError:
        """HubSpot's daily limit resets at midnight in the portal's time zone."""
        try:
            zone_name = self._account().time_zone
        except QuotaError as unknown:
            return unknown
        except ConnectorError:
            return _unknown_reset(operation)
        resets_at = daily_reset(dt.datetime.now(dt.UTC), _zone(zone_name))
        return QuotaError(
            f"HubSpot {operation}: daily API limit reached", DAILY_LIMIT, resets_at, zone_name
        )

    def request(
        self,
        operation: str,
        http_method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        plain: bool = False,
    ) -> Any:
        """A documented endpoint the generated packages lack, through the same ApiClient."""
        api = self.client.crm.owners.owners_api
        api_client = api.api_client

        def send() -> Any:
            return api_client.call_api(
                path,
                http_method,
                {},
                list((query or {}).items()),
                {"Accept": "application/json", "Content-Type": "application/json"},
                body=body,
                post_params=[],
                files={},
                response_types_map={},
                auth_settings=["oauth2"],
                _return_http_data_only=True,
                _preload_content=False,
            )

        try:
            answer = send()
        except Exception as exc:  # noqa: BLE001 - every failure leaves as one of our kinds
            # `plain`: the account details themselves, which a daily limit cannot wait on.
            error = translate(exc, operation) if plain else self._translate(exc, operation)
            raise error from None
        return _json(answer)

    def portal_id(self) -> str:
        return self._account().portal_id

    def time_zone(self) -> dt.tzinfo:
        """The portal's time zone (UTC when HubSpot names one Python does not know)."""
        return _zone(self._account().time_zone)

    def _key(self, *parts: str) -> str:
        # The portal and app are named by the API base and the token's digest.
        return cache_key("hubspot", self.base, self._token_digest, *parts)

    def _account(self) -> AccountDetails:
        with self._memo_lock:
            memo = self._account_memo
        if memo is not None and memo[1] > time.monotonic():
            return memo[0]
        key = self._key("account")
        account = _account_from_json(self.cache.get(key))
        if account is None:
            account = self._read_account()
            self.cache.set(key, json.dumps(account.__dict__), ACCOUNT_TTL_SECONDS)
        if self._redis is not None:
            portal_store.remember(self._redis, "hubspot", account.portal_id)
        with self._memo_lock:
            self._account_memo = (account, time.monotonic() + ACCOUNT_MEMO_SECONDS)
        return account

    def _read_account(self) -> AccountDetails:
        operation = "read account details"
        try:
            details = self.request(operation, "GET", "/account-info/v3/details", plain=True)
        except _DailyLimit:
            raise _unknown_reset(operation) from None
        details = details if isinstance(details, dict) else {}
        portal = str(details.get("portalId", ""))
        if not portal:
            raise PermanentError("HubSpot account details carry no portalId")
        return AccountDetails(
            portal,
            str(details.get("timeZone") or "UTC"),
            # Portals older than the field live on the original domain.
            str(details.get("uiDomain") or "app.hubspot.com"),
        )

    def owner_id(self, email: str) -> str | None:
        """The id of the active owner with this email, remembered for minutes."""
        key = self._key("owner", email.strip().lower())
        cached = self.cache.get(key)
        if cached:
            return cached
        found = find_owner_id(self, email)
        if found is not None:
            self.cache.set(key, found, OWNER_TTL_SECONDS)
        return found

    def owner_name(self, owner_id: str) -> OwnerName | None:
        """The email and name of the owner with this id, remembered for minutes like the
        ids by email; None (after a logged warning) when HubSpot will not say: a name is
        only shown to people, never worth failing a hand-off over."""
        key = self._key("owner-name", owner_id)
        cached = _owner_from_json(self.cache.get(key))
        if cached is not None:
            return cached
        owners_api = self.client.crm.owners.owners_api
        try:
            answer = self.call("read owner", owners_api.get_by_id, owner_id, id_property="id")
        except ConnectorError as exc:
            log.warning(
                "deal owner's name unknown; showing the id", owner_id=owner_id, error=str(exc)
            )
            return None
        found = _owner_from_wire(answer)
        if found is not None:
            self.cache.set(key, json.dumps(found.__dict__), OWNER_TTL_SECONDS)
        return found

    def remember_owner_names(self) -> None:
        """Every active owner's email and name, read a page of 500 at a time (a worker
        starting up): the first batches then read no owner by id."""
        owners_api = self.client.crm.owners.owners_api
        after: str | None = None
        for _ in range(OWNER_PAGES):
            kwargs: dict[str, Any] = {"limit": OWNER_PAGE, **({"after": after} if after else {})}
            page = self.call("list owners", owners_api.get_page, **kwargs)
            for owner in results_of(page):
                found = _owner_from_wire(owner)
                if found is not None and owner.get("id") is not None:
                    key = self._key("owner-name", str(owner["id"]))
                    self.cache.set(key, json.dumps(found.__dict__), OWNER_TTL_SECONDS)
            after = next_after(page)
            if after is None:
                return

    def forget_owner(self, email: str) -> None:
        """HubSpot refused a remembered owner id (the user left): ask again next time."""
        self.cache.forget(self._key("owner", email.strip().lower()))

    def id_by_unique(
        self, operation: str, get_by_id: Callable[..., Any], prop: str, value: str
    ) -> str | None:
        """The id of the object whose unique property `prop` holds `value`, or None.
        A read by the property is consistent, where search could miss a new object."""
        try:
            found = self.call(operation, get_by_id, value, id_property=prop, properties=[prop])
        except NotFoundError:
            return None
        return str(found["id"]) if isinstance(found, dict) and found.get("id") else None

    def record_url(self, object_type_id: str, object_id: str) -> str:
        """A record's page in HubSpot's UI, e.g. object type 0-3 (deal), 0-5 (ticket)."""
        account = self._account()
        base = self.app_base or f"https://{account.ui_domain}"
        return f"{base}/contacts/{account.portal_id}/record/{object_type_id}/{object_id}"


def _unknown_reset(operation: str) -> QuotaError:
    # The account details are spent too, so the portal's midnight is unknown: look again
    # within the hour rather than a day late.
    return QuotaError(
        f"HubSpot {operation}: daily API limit reached",
        DAILY_LIMIT,
        dt.datetime.now(dt.UTC) + UNKNOWN_RESET_RECHECK,
        "UTC; the portal's time zone is unknown, so checking hourly",
    )


def daily_reset(now: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """When a daily limit spent at `now` resets: the next midnight in the portal's zone."""
    local = now.astimezone(zone)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), zone)
    if midnight - now > dt.timedelta(hours=23):
        return (now + LATE_RESET_RECHECK).astimezone(zone)
    return midnight


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _account_from_json(raw: str | None) -> AccountDetails | None:
    if not raw:
        return None
    try:
        fields = json.loads(raw)
        return AccountDetails(
            str(fields["portal_id"]), str(fields["time_zone"]), str(fields["ui_domain"])
        )
    except (ValueError, KeyError, TypeError):
        return None  # written by another version: ask HubSpot again


def _owner_from_wire(owner: Any) -> OwnerName | None:
    if not isinstance(owner, dict):
        return None
    email = str(owner.get("email") or "").strip() or None
    parts = (str(owner.get(key) or "").strip() for key in ("firstName", "lastName"))
    name = " ".join(part for part in parts if part) or None
    return OwnerName(email, name) if email or name else None


def _owner_from_json(raw: str | None) -> OwnerName | None:
    try:
        values = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(values, dict):
        return None
    email, name = values.get("email"), values.get("name")
    return OwnerName(
        email if isinstance(email, str) else None, name if isinstance(name, str) else None
    )


def _json(answer: Any) -> Any:
    data = getattr(answer, "data", answer)
    if data is None or data == b"" or data == "":
        return None
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    if not isinstance(data, str):
        return data
    try:
        return json.loads(data)
    except ValueError:
        raise RetryableError("HubSpot answered with a body that is not JSON") from None


def translate(exc: BaseException, operation: str) -> ConnectorError:
    """Any failure of a HubSpot call -> RetryableError, AuthError or PermanentError."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError):
        return RetryableError(f"HubSpot {operation}: timed out")
    if isinstance(exc, requests.ConnectionError | urllib3.exceptions.HTTPError):
        return RetryableError(f"HubSpot {operation}: connection failed ({type(exc).__name__})")
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        return RetryableError(f"HubSpot {operation}: answer cut off ({type(exc).__name__})")
    if isinstance(exc, requests.RequestException):
        return PermanentError(f"HubSpot {operation}: request failed ({type(exc).__name__})")
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        return PermanentError(f"HubSpot {operation}: {type(exc).__name__}")
    headers = _headers(getattr(exc, "headers", None))
    body = _error_body(getattr(exc, "body", None))
    return from_status(status, headers, body, operation)


def from_status(
    status: int, headers: Mapping[str, str], body: Mapping[str, Any], operation: str
) -> ConnectorError:
    category = str(body.get("category") or "")
    message = str(body.get("message") or "").strip()
    detail = ": ".join(part for part in (category, message) if part)
    where = f"HubSpot {operation}: HTTP {status}" + (f" {detail}" if detail else "")
    if status == 0:
        # The generated client reports TLS failures as status 0.
        return RetryableError(f"HubSpot {operation}: TLS failure")
    if status == 429:
        policy = str(body.get("policyName") or "")
        if policy == "DAILY":
            return _DailyLimit(f"HubSpot {operation}: daily API limit reached")
        label = f" ({policy})" if policy else ""
        return RetryableError(
            f"HubSpot {operation}: rate limited{label}",
            retry_after=_rate_limit_wait(headers),
        )
    if status == 423:
        wait = max(LOCK_SECONDS, retry_after_seconds(headers) or 0.0)
        return RetryableError(f"{where} (locked: too many writes at once)", retry_after=wait)
    if status == 477:
        # The portal is moving between data centres; HubSpot says how long in Retry-After.
        return RetryableError(
            f"{where} (portal migration in progress)",
            retry_after=retry_after_seconds(headers),
        )
    if status >= 500 or status == 408:
        return RetryableError(where, retry_after=retry_after_seconds(headers))
    if status == 401:
        return AuthError(f"HubSpot {operation}: the access token was refused (HTTP 401)")
    if status == 403:
        scopes = _required_scopes(body)
        if scopes:
            return AuthError(
                f"HubSpot {operation}: the app lacks a required scope; "
                f"grant one of: {', '.join(scopes)}"
            )
        return AuthError(where)
    if status == 404:
        return NotFoundError(where)
    if status == 409:
        return ConflictError(where, body)
    return PermanentError(where)


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    items = raw.items() if hasattr(raw, "items") else raw
    return {str(key).lower(): str(value) for key, value in items}


def _error_body(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    explicit = retry_after_seconds(headers)
    if explicit is not None:
        return explicit
    # HubSpot's rolling-window answers name the window, not the time left in it; waiting
    # one whole window is the only wait that is certainly long enough.
    interval = headers.get("x-hubspot-ratelimit-interval-milliseconds")
    if interval:
        try:
            return max(0.0, float(interval) / 1000.0)
        except ValueError:
            return None
    return None


def heed(
    budget: RateBudget,
    slot: str | None,
    status: int,
    raw_headers: Any,
    content: bytes,
    *,
    system: str = "hubspot",
) -> None:
    """Tell the budget what HubSpot said: its remaining calls, and a 429's wait."""
    headers = _headers(raw_headers)
    figures = rate_figures(headers, default_interval=budget.limit.window)
    budget.answered(slot, figures, outcome=api_calls.outcome(status), system=system)
    if status != 429:
        return
    policy = str(_error_body(content).get("policyName") or "")
    # DAILY waits for the portal's midnight in the job layer; SECONDLY is search's own
    # limit, paced by the search code: neither says anything about the 10-second window.
    if policy in {"DAILY", "SECONDLY"}:
        return
    budget.pause(_rate_limit_wait(headers) or budget.limit.window)


def rate_figures(headers: Mapping[str, str], *, default_interval: float) -> Observed | None:
    """X-HubSpot-RateLimit-Remaining/-Max/-Interval-Milliseconds, when HubSpot sent them."""
    try:
        remaining = int(headers["x-hubspot-ratelimit-remaining"])
        maximum = int(headers["x-hubspot-ratelimit-max"])
    except (KeyError, ValueError):
        return None
    try:
        interval = float(headers["x-hubspot-ratelimit-interval-milliseconds"]) / 1000
    except (KeyError, ValueError):
        interval = default_interval
    return Observed(remaining, maximum, interval, time.time())


def _required_scopes(body: Mapping[str, Any]) -> list[str]:
    scopes: list[str] = []
    errors = body.get("errors")
    for error in errors if isinstance(errors, list) else []:
        context = error.get("context") if isinstance(error, dict) else None
        if not isinstance(context, dict):
            continue
        for key in ("requiredGranularScopes", "requiredScopes", "requiredScope"):
            values = context.get(key)
            for value in values if isinstance(values, list) else []:
                if str(value) not in scopes:
                    scopes.append(str(value))
    return scopes


def find_owner_id(api: HubSpotApi, email: str) -> str | None:
    """The id of the active HubSpot owner with this email (case-insensitive), if any."""
    key = email.strip().lower()
    owners_api = api.client.crm.owners.owners_api
    answer = api.call("look up owner", owners_api.get_page, email=email.strip(), limit=10)
    for owner in results_of(answer):
        if str(owner.get("email", "")).lower() == key and owner.get("id") is not None:
            return str(owner["id"])
    return None


def results_of(answer: Any) -> list[dict[str, Any]]:
    results = answer.get("results") if isinstance(answer, dict) else None
    return [result for result in results or [] if isinstance(result, dict)]


def next_after(page: Any) -> str | None:
    """The `paging.next.after` cursor of a page, or None on the last page."""
    paging = page.get("paging") if isinstance(page, dict) else None
    following = paging.get("next") if isinstance(paging, dict) else None
    after = following.get("after") if isinstance(following, dict) else None
    return str(after) if after not in (None, "") else None


def chunks(items: list[Any], size: int = BATCH_LIMIT) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
