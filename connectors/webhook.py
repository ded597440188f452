"""Ops target: a signed JSON hand-off document POSTed to any URL (Standard Webhooks).

One document per accepted attempt. A webhook has no lookup, so `may_exist` cannot ask
the receiver what an earlier try delivered; the guarantee is the `webhook-id`, derived
from the hand-off id and the same on every retry, by which receivers de-duplicate (as
the Standard Webhooks spec tells them to). Signing is the `standardwebhooks` library's;
delivery is one `requests` POST with timeouts, no redirects followed (the spec calls a
3xx a failure: the sender should fix its URL instead).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import requests
import urllib3
from standardwebhooks.webhooks import Webhook

from connectors.registry import register_target
from connectors.webhook_document import DEFAULT_EVENT_TYPE, document, encode, webhook_id
from connectors.webhook_settings import WebhookSettings, check_secret
from kernel import api_calls
from kernel.connector import OpsRequest, OpsResult, OpsTarget
from kernel.errors import (
    AuthError,
    ConnectorError,
    NotConfigured,
    PartialFailure,
    PermanentError,
    RetryableError,
    retry_after_seconds,
)
from kernel.rate_budget import Limit, RateBudget, take_slot
from kernel.settings import SharedSettings
from kernel.text import inert

DEFAULT_SECRET_ENV = "FULLKIT_WEBHOOK_SECRET"
SECRET_ENV = re.compile(r"FULLKIT_WEBHOOK_SECRET_[A-Z0-9_]{1,64}")
EVENT_TYPE = re.compile(r"[A-Za-z0-9_]{1,40}(\.[A-Za-z0-9_]{1,40}){0,5}")
URL_LENGTH = 2048
TIMEOUT_RANGE = (1, 120)
# What a receiver's answer may hold that we read: an id, a link and an owner.
ANSWER_BYTES = 64 * 1024
EXCERPT_CHARS = 300
REF_LENGTH = 100  # the ledger's ops_ref column
RETRY_STATUSES = frozenset({408, 425, 429})
USER_AGENT = "Fullkit-Webhook/1"


@register_target
class WebhookTarget(OpsTarget):
    name = "webhook"
    settings_class = WebhookSettings
    crms: ClassVar[frozenset[str] | None] = None  # a document fits any CRM's deal
    option_keys: ClassVar[frozenset[str]] = frozenset(
        {"url", "event_type", "secret_env", "timeout_seconds"}
    )

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        self._session: requests.Session | None = None

    @property
    def config(self) -> WebhookSettings:
        return self.settings.section(WebhookSettings)

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            # HTTPS_PROXY is honoured on purpose: an egress proxy that filters internal
            # addresses (Standard Webhooks suggests one) is the network's SSRF guard.
            self._session = requests.Session()
        return self._session

    @classmethod
    def validate_options(cls, options: MappingABC[str, Any]) -> list[str]:
        problems = super().validate_options(options)
        if "url" not in options:
            problems.append("url: required: the http(s) URL the hand-off document is POSTed to")
        else:
            problems += [f"url: {p}" for p in _url_problems(options["url"])]
        event_type = options.get("event_type", DEFAULT_EVENT_TYPE)
        if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
            problems.append(
                "event_type: must be dot-separated names of letters, digits and _, "
                f"e.g. {DEFAULT_EVENT_TYPE}"
            )
        secret_env = options.get("secret_env", DEFAULT_SECRET_ENV)
        if secret_env != DEFAULT_SECRET_ENV and (
            not isinstance(secret_env, str) or not SECRET_ENV.fullmatch(secret_env)
        ):
            problems.append(
                "secret_env: must name an environment variable FULLKIT_WEBHOOK_SECRET_<NAME> "
                "(capitals, digits, _) that holds this receiver's secret; never the secret"
            )
        timeout = options.get("timeout_seconds")
        low, high = TIMEOUT_RANGE
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not low <= timeout <= high
        ):
            problems.append(f"timeout_seconds: must be a number of seconds from {low} to {high}")
        return problems

    def disabled(self, options: MappingABC[str, Any]) -> str | None:
        env = str(options.get("secret_env", DEFAULT_SECRET_ENV))
        if env == DEFAULT_SECRET_ENV:
            return super().disabled(options)
        return None if os.environ.get(env) else f"{env} (the kit's secret_env) is not set"

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        """POST each request's document; one that fails fails alone (PartialFailure).

        `may_exist` changes nothing: the retry sends the same `webhook-id`, and the
        receiver, not a lookup, recognises a document it already has.
        """
        done: dict[str, OpsResult] = {}
        failed: dict[str, ConnectorError] = {}
        for request in {r.handoff_id: r for r in requests}.values():
            try:
                done[request.handoff_id] = self.deliver(request)
            except ConnectorError as exc:
                failed[request.handoff_id] = exc
        if failed:
            raise PartialFailure("webhook deliveries", failed, done)
        return done

    def deliver(self, request: OpsRequest) -> OpsResult:
        options = request.options
        url = str(options["url"])
        where = _describe(url)
        key = self._secret(str(options.get("secret_env", DEFAULT_SECRET_ENV)))
        msg_id = webhook_id(request.handoff_id)
        sent_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        event_type = str(options.get("event_type", DEFAULT_EVENT_TYPE))
        body = encode(document(request, event_type, sent_at))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(key).sign(msg_id, sent_at, body),
        }
        read = float(options.get("timeout_seconds") or self.config.timeout_seconds)
        budget = self._budget(url)
        slot = _take(budget, where)
        outcome = api_calls.UNREACHABLE
        try:
            answer = self.session.post(
                url,
                data=body.encode("utf-8"),
                headers=headers,
                timeout=(self.config.connect_timeout_seconds, read),
                allow_redirects=False,
                stream=True,
            )
            outcome = api_calls.outcome(answer.status_code)
            try:
                text = _bounded_text(answer)
            finally:
                answer.close()
        except requests.Timeout:
            outcome = api_calls.TIMEOUT
            raise RetryableError(f"webhook {where}: no answer within {read:g} s") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            # urllib3's own errors: the answer's body, read by us, ended or stalled.
            raise RetryableError(f"webhook {where}: {type(exc).__name__}") from None
        finally:
            if budget is not None:
                budget.answered(slot, outcome=outcome, system=self.name)
        if answer.status_code == 429 and budget is not None:
            wait = retry_after_seconds(answer.headers)
            if wait:
                budget.pause(wait)  # every worker holds back from this receiver
        _raise_for(answer, text, where, request)
        return self._result(request, msg_id, answer, text)

    def _secret(self, env: str) -> str:
        """The signing secret, read now from the process's own environment."""
        if env == DEFAULT_SECRET_ENV:
            value = self.config.secret
            if value is None:
                raise NotConfigured(f"webhook target disabled: {DEFAULT_SECRET_ENV} is not set")
            return value.get_secret_value()
        text = os.environ.get(env, "")
        if not text:
            raise NotConfigured(f"webhook target: {env} (the kit's secret_env) is not set")
        problem = check_secret(text)
        if problem is not None:
            raise AuthError(f"webhook target: {env} {problem}")
        return text

    def _budget(self, url: str) -> RateBudget | None:
        rate = self.config.rate
        if self.rate_budgets is None:
            return None
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
        # With the limit off the budget only counts the calls (for /metrics).
        return self.rate_budgets.budget("webhook", origin, Limit(*rate) if rate else None)

    def _result(
        self, request: OpsRequest, msg_id: str, answer: requests.Response, text: str
    ) -> OpsResult:
        reply = _reply(answer, text)
        ref = _reply_ref(reply.get("id")) or msg_id
        link = _reply_url(reply.get("url")) or self._console_link(request, msg_id)
        owner = reply.get("owner")
        if isinstance(owner, str) and owner.strip():
            return OpsResult(ref, link, inert(owner)[:320])
        return OpsResult(ref, link, request.owner_email)

    def _console_link(self, request: OpsRequest, msg_id: str) -> str:
        """Fullkit's own page of the hand-off; the fragment names this document."""
        base = getattr(self.settings, "public_url", None)
        if not base:
            raise AuthError(
                f"webhook {_describe(str(request.options['url']))}: delivered "
                f"(webhook-id {msg_id}), but it has no link: the receiver answered without "
                "`url` and FULLKIT_PUBLIC_URL is not set; set it and run `fullkit replay` "
                "(the receiver gets the same webhook-id and keeps one document)"
            )
        crm, deal = quote(request.crm, safe=""), quote(request.deal_id, safe="")
        return f"{str(base).rstrip('/')}/console/handoffs/{crm}/{deal}#{msg_id}"


def _url_problems(value: object) -> list[str]:
    """An operator writes the URL, so loopback and private hosts are allowed (a
    receiver on the same host or network is normal); what could leak is refused."""
    if not isinstance(value, str) or not value.strip():
        return ["must be an http:// or https:// URL"]
    if len(value) > URL_LENGTH or any(ch.isspace() for ch in value):
        return [f"must be one URL without spaces, at most {URL_LENGTH} characters"]
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return ["is not a valid URL"]
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return ["must be an http:// or https:// URL with a host"]
    problems = []
    if parts.username is not None or parts.password is not None:
        problems.append(
            "must not hold a user or password: secrets never go in YAML; the receiver "
            "checks the signature instead"
        )
    if parts.fragment:
        problems.append("must not have a #fragment (it is never sent)")
    if port == 0:
        problems.append("port 0 is not a port")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        address = None
    if address is not None and (address.is_link_local or address.is_multicast):
        # 169.254.169.254 is a cloud's metadata service, never a hand-off receiver.
        problems.append("must not be a link-local or multicast address")
    return problems


def _describe(url: str) -> str:
    """The receiver as errors (and so the ledger) name it: its origin only, since some
    receivers (chat incoming webhooks) carry a token in the path or the query."""
    try:
        parts = urlsplit(url)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "(an invalid URL)"
    if not parts.scheme or not netloc:
        return "(a path on the same host)"
    return inert(f"{parts.scheme}://{netloc}"[:EXCERPT_CHARS], links=True)


def _take(budget: RateBudget | None, where: str) -> str | None:
    return take_slot(budget, f"webhook {where}")


def _bounded_text(answer: requests.Response) -> str:
    raw = answer.raw.read(ANSWER_BYTES, decode_content=True) if answer.raw is not None else b""
    try:
        return raw.decode(answer.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _raise_for(answer: requests.Response, text: str, where: str, request: OpsRequest) -> None:
    status = answer.status_code
    if 200 <= status < 300:
        return
    said = f"webhook {where} answered {status}"
    excerpt = inert(text[:EXCERPT_CHARS])
    if status in RETRY_STATUSES or status >= 500:
        raise RetryableError(said, retry_after=retry_after_seconds(answer.headers))
    if status in (401, 403):
        env = str(request.options.get("secret_env", DEFAULT_SECRET_ENV))
        raise AuthError(f"{said}: it refused the signature or the sender; check it holds {env}")
    if status == 410:
        raise AuthError(f"{said} (Gone): it takes no more deliveries; change the kit's ops.url")
    if 300 <= status < 400:
        location = answer.headers.get("location")
        to = f" (a redirect to {_describe(location)})" if location else ""
        raise PermanentError(
            f"{said}{to}: webhook senders follow no redirects; set the kit's ops.url to "
            "the final URL"
        )
    raise PermanentError(f"{said}: {excerpt}" if excerpt else said)


def _reply(answer: requests.Response, text: str) -> dict[str, Any]:
    if "json" not in answer.headers.get("content-type", "") or not text.strip():
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _reply_ref(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if not 0 < len(text) <= REF_LENGTH or not text.isprintable() or " " in text:
        return None
    return text


def _reply_url(value: object) -> str | None:
    if not isinstance(value, str) or _url_problems(value):
        return None
    return value
