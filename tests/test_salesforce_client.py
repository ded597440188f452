"""The Salesforce client on the wire (`responses`): logins, a renewed session, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import responses

from bridge.settings import Settings
from connectors.salesforce_client import SalesforceApi, usage
from kernel.errors import AuthError, PermanentError, QuotaError, RetryableError
from kernel.rate_budget import RateBudgets, observed
from tests.conftest import Backend

INSTANCE = "https://acme.my.salesforce.com"
QUERY = f"{INSTANCE}/services/data/v59.0/query/"
TOKEN_URL = f"{INSTANCE}/services/oauth2/token"
LIMIT = {"Sforce-Limit-Info": "api-usage=42/15000"}
ROWS: dict[str, Any] = {"totalSize": 1, "done": True, "records": [{"Id": "006A"}]}
SOAP_OK = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    "<loginResponse><result><serverUrl>https://acme.my.salesforce.com/services/Soap/u/59.0"
    "</serverUrl><sessionId>SOAPSESSION</sessionId></result></loginResponse>"
    "</soapenv:Body></soapenv:Envelope>"
)
EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def api(budgets: RateBudgets | None = None, **values: Any) -> SalesforceApi:
    return SalesforceApi(Settings(SALESFORCE_INSTANCE_URL=INSTANCE, **values), budgets=budgets)


def client_credentials() -> SalesforceApi:
    return api(SALESFORCE_CLIENT_ID="client-id", SALESFORCE_CLIENT_SECRET="client-secret")


def bearer(call: Any) -> str:
    return str(call.request.headers["Authorization"]).removeprefix("Bearer ")


@pytest.fixture
def mock() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        yield mocked


def test_access_token_is_used_as_given(mock: responses.RequestsMock) -> None:
    mock.get(QUERY, json=ROWS, headers=LIMIT)
    assert api(SALESFORCE_ACCESS_TOKEN="TOKEN").query_all("q", "SELECT Id FROM Opportunity")
    assert [bearer(call) for call in mock.calls] == ["TOKEN"]


def test_client_credentials_log_in_at_the_orgs_my_domain(mock: responses.RequestsMock) -> None:
    mock.post(TOKEN_URL, json={"access_token": "CC1", "instance_url": INSTANCE})
    mock.get(QUERY, json=ROWS, headers=LIMIT)
    client_credentials().query_all("q", "SELECT Id FROM Opportunity")
    form = mock.calls[0].request.body
    assert "grant_type=client_credentials" in str(form)
    assert bearer(mock.calls[1]) == "CC1"


def test_username_password_and_security_token_log_in(mock: responses.RequestsMock) -> None:
    mock.post("https://acme.my.salesforce.com/services/Soap/u/59.0", body=SOAP_OK)
    mock.get(QUERY, json=ROWS, headers=LIMIT)
    sf = api(
        SALESFORCE_USERNAME="rep@example.com",
        SALESFORCE_PASSWORD="pw",
        SALESFORCE_SECURITY_TOKEN="tok",
    )
    sf.query_all("q", "SELECT Id FROM Opportunity")
    assert "pwtok" in str(mock.calls[0].request.body)
    assert bearer(mock.calls[1]) == "SOAPSESSION"


def test_an_expired_session_is_renewed_once(mock: responses.RequestsMock) -> None:
    mock.post(TOKEN_URL, json={"access_token": "CC1", "instance_url": INSTANCE})
    mock.get(QUERY, json=EXPIRED, status=401)
    sf = client_credentials()
    with pytest.raises(AuthError):
        sf.query_all("q", "SELECT Id FROM Opportunity")
    # One login, one call, one renewed login, one call again: then a human must act.
    assert [c.request.method for c in mock.calls] == ["POST", "GET", "POST", "GET"]

    mock.replace(responses.GET, QUERY, json=ROWS, headers=LIMIT)
    assert sf.query_all("q", "SELECT Id FROM Opportunity") == ROWS["records"]


def test_an_expired_session_then_success_goes_on(mock: responses.RequestsMock) -> None:
    tokens = iter(["CC1", "CC2"])
    mock.add_callback(
        responses.POST,
        TOKEN_URL,
        callback=lambda _r: (
            200,
            {},
            json.dumps({"access_token": next(tokens), "instance_url": INSTANCE}),
        ),
    )
    mock.add_callback(
        responses.GET,
        QUERY,
        callback=lambda r: (
            (401, {}, json.dumps(EXPIRED))
            if "CC1" in r.headers["Authorization"]
            else (200, LIMIT, json.dumps(ROWS))
        ),
    )
    assert client_credentials().query_all("q", "SELECT Id FROM Opportunity") == ROWS["records"]


def test_a_refused_client_secret_is_an_auth_error(mock: responses.RequestsMock) -> None:
    mock.post(TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "x"})
    with pytest.raises(AuthError) as raised:
        client_credentials().query_all("q", "SELECT Id FROM Opportunity")
    assert "client-secret" not in str(raised.value)


def test_errors_become_our_three_kinds(mock: responses.RequestsMock) -> None:
    sf = api(SALESFORCE_ACCESS_TOKEN="TOKEN")
    invalid = [{"message": "No such column", "errorCode": "INVALID_FIELD"}]
    mock.get(QUERY, json=invalid, status=400)
    with pytest.raises(PermanentError):
        sf.query_all("q", "SELECT Nope__c FROM Opportunity")
    mock.replace(responses.GET, QUERY, json=[{"errorCode": "SERVER_ERROR"}], status=503)
    with pytest.raises(RetryableError) as retry:
        sf.query_all("q", "SELECT Id FROM Opportunity")
    assert not isinstance(retry.value, QuotaError)


def test_request_limit_exceeded_waits_for_every_process(
    mock: responses.RequestsMock, backend: Backend
) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    budgets = RateBudgets(connection, max_wait=0.1)
    sf = api(budgets, SALESFORCE_ACCESS_TOKEN="TOKEN")
    spent = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    mock.get(QUERY, json=spent, status=403, headers={"Sforce-Limit-Info": "api-usage=15000/15000"})
    with pytest.raises(QuotaError) as raised:
        sf.query_all("q", "SELECT Id FROM Opportunity")
    assert raised.value.resets_at is not None
    # The next call, from this or any process, waits instead of hammering the org.
    other = api(RateBudgets(connection, max_wait=0.1), SALESFORCE_ACCESS_TOKEN="TOKEN")
    with pytest.raises(RetryableError):
        other.query_all("q", "SELECT Id FROM Opportunity")
    assert len(mock.calls) == 1


def test_sforce_limit_info_reaches_the_shared_figures(
    mock: responses.RequestsMock, backend: Backend
) -> None:
    connection = redis.Redis.from_url(backend.redis_url)
    mock.get(QUERY, json=ROWS, headers={"Sforce-Limit-Info": "api-usage=42/15000"})
    sf = api(RateBudgets(connection), SALESFORCE_ACCESS_TOKEN="TOKEN")
    sf.query_all("q", "SELECT Id FROM Opportunity")
    assert sf.api_usage == (42, 15000)
    figures = observed(connection)["salesforce"]
    assert (figures.remaining, figures.maximum) == (14958, 15000)


def test_usage_reads_per_app_headers_too() -> None:
    assert usage("api-usage=5/100, per-app-api-usage=2/50(appName=x)") == (5, 100)
    assert usage(None) is None
