"""HubSpot CRM connector: wire shapes and error translation against mocked HTTP (responses)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from bridge.mapping import FieldSpec, Mapping
from bridge.settings import Settings
from connectors.base import Acceptance, PushBack
from connectors.errors import AuthError, PermanentError, RetryableError
from connectors.hubspot import (
    HubSpotConnector,
    marker_of,
    previous_stage,
    task_body,
    task_subject,
)
from connectors.hubspot_client import DISABLED_MESSAGE, HubSpotApi, forget_portal_ids

BASE = "http://127.0.0.1:9"
APP = "https://app.example.test"
TOKEN = "pat-na1-very-secret-token"

MAPPING = Mapping(
    crm="hubspot",
    stages={"contractsent": "contractsent", "closedwon": "closedwon"},
    deal=(
        FieldSpec("amount", "amount", "number"),
        FieldSpec("plan", "plan_tier"),
        FieldSpec("kickoff_date", "kickoff_date", "date"),
        FieldSpec("sso_provider", "sso_provider"),
        FieldSpec("signed", "contract_signed", "bool"),
    ),
    company=(FieldSpec("name", "name"), FieldSpec("domain", "domain")),
    contact=(
        FieldSpec("email", "email"),
        FieldSpec("role", "contact_role"),
        FieldSpec("buying_roles", "hs_buying_role", "list"),
    ),
    line_item=(FieldSpec("name", "name"), FieldSpec("quantity", "quantity", "number")),
)


def settings(token: str | None = TOKEN) -> Settings:
    values: dict[str, Any] = {"HUBSPOT_API_BASE": BASE, "HUBSPOT_APP_BASE": APP}
    if token is not None:
        values["HUBSPOT_ACCESS_TOKEN"] = token
    return Settings(**values)


@pytest.fixture(autouse=True)
def _fresh_portal_cache() -> Iterator[None]:
    forget_portal_ids()
    yield
    forget_portal_ids()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{BASE}/account-info/v3/details", json={"portalId": 4242, "uiDomain": "x"})
        yield mock


def connector() -> HubSpotConnector:
    return HubSpotConnector(settings(), MAPPING)


def api_calls(mock: responses.RequestsMock) -> list[str]:
    return [
        f"{call.request.method} {call.request.path_url.split('?')[0]}"
        for call in mock.calls
        if "/account-info/" not in (call.request.path_url or "")
    ]


def sent(call: Any) -> Any:
    return json.loads(call.request.body)


# --- error translation ---------------------------------------------------------------


def _get_deal(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Exception:
    with responses.RequestsMock() as mock:
        mock.get(
            f"{BASE}/crm/v3/objects/deals/1",
            status=status,
            json=body if body is not None else {"status": "error", "message": "x"},
            headers=headers or {},
        )
        api = HubSpotApi(settings())
        with pytest.raises(Exception) as caught:
            api.call("read deal", api.client.crm.deals.basic_api.get_by_id, "1")
    return caught.value


def test_429_uses_retry_after_header() -> None:
    error = _get_deal(
        429,
        {"status": "error", "message": "limit", "policyName": "TEN_SECONDLY_ROLLING"},
        {"Retry-After": "3", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"},
    )
    assert isinstance(error, RetryableError)
    assert error.retry_after == 3.0
    assert "TEN_SECONDLY_ROLLING" in str(error)


def test_429_without_retry_after_waits_one_rate_limit_window() -> None:
    error = _get_deal(
        429,
        {"status": "error", "message": "limit", "policyName": "TEN_SECONDLY_ROLLING"},
        {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000", "X-HubSpot-RateLimit-Max": "100"},
    )
    assert isinstance(error, RetryableError)
    assert error.retry_after == 10.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(status: int) -> None:
    error = _get_deal(status)
    assert isinstance(error, RetryableError)
    assert error.retry_after is None


def test_503_honours_retry_after() -> None:
    error = _get_deal(503, headers={"Retry-After": "7"})
    assert isinstance(error, RetryableError)
    assert error.retry_after == 7.0


def test_401_is_auth_error_without_the_token() -> None:
    error = _get_deal(401, {"status": "error", "message": "expired", "category": "INVALID_AUTH"})
    assert isinstance(error, AuthError)
    assert TOKEN not in str(error)


def test_403_missing_scopes_names_the_scope() -> None:
    body = {
        "status": "error",
        "message": "This app hasn't been granted all required scopes to make this call.",
        "category": "MISSING_SCOPES",
        "errors": [
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": ["crm.objects.deals.read"]},
            }
        ],
    }
    error = _get_deal(403, body)
    assert isinstance(error, AuthError)
    assert "crm.objects.deals.read" in str(error)


def test_400_validation_error_is_permanent_with_message_and_category() -> None:
    body = {
        "status": "error",
        "message": "Property values were not valid",
        "correlationId": "abc",
        "category": "VALIDATION_ERROR",
    }
    error = _get_deal(400, body)
    assert isinstance(error, PermanentError)
    assert "VALIDATION_ERROR" in str(error)
    assert "Property values were not valid" in str(error)


def test_connection_errors_and_timeouts_are_retryable() -> None:
    for failure in (requests.ConnectionError("refused"), requests.ReadTimeout("slow")):
        with responses.RequestsMock() as mock:
            mock.get(f"{BASE}/crm/v3/objects/deals/1", body=failure)
            api = HubSpotApi(settings())
            with pytest.raises(RetryableError):
                api.call("read deal", api.client.crm.deals.basic_api.get_by_id, "1")


def test_missing_token_disables_the_connector() -> None:
    hub = HubSpotConnector(settings(token=None), MAPPING)  # constructing is fine
    with pytest.raises(AuthError) as caught:
        hub.fetch_packets(["1"])
    assert (
        str(caught.value)
        == DISABLED_MESSAGE
        == ("HubSpot connector disabled: HUBSPOT_ACCESS_TOKEN is not set")
    )


def test_requests_go_to_the_configured_base_with_bearer_token(
    mocked: responses.RequestsMock,
) -> None:
    mocked.get(f"{BASE}/crm/v3/objects/deals/1", json={"id": "1", "properties": {}})
    hub = connector()
    hub.fetch_packets(["1"])
    request = mocked.calls[0].request
    assert str(request.url).startswith(f"{BASE}/crm/v3/objects/deals/1?")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


# --- task text -----------------------------------------------------------------------


def test_task_subject_singular_and_plural() -> None:
    assert task_subject(1) == "Hand-off returned: 1 item missing"
    assert task_subject(2) == "Hand-off returned: 2 items missing"
    assert task_subject(0) == "Hand-off returned: 0 items missing"


def _push(handoff: str = "hubspot:101:1", deal: str = "101", **extra: Any) -> PushBack:
    values: dict[str, Any] = {
        "handoff_id": handoff,
        "deal_id": deal,
        "return_stage_ref": "contractsent",
        "missing": ("Deal amount must be above zero", "Add a <billing> contact"),
        "owner_ref": "77",
        "due": dt.date(2026, 11, 27),
    }
    values.update(extra)
    return PushBack(**values)


def test_task_body_lists_messages_escaped_with_marker() -> None:
    body = task_body(_push())
    assert "<li>Deal amount must be above zero</li>\n<li>Add a &lt;billing&gt; contact</li>" in body
    assert marker_of(body) == "hubspot:101:1"
    assert marker_of(task_body(_push(handoff="hubspot:101:10"))) == "hubspot:101:10"
    assert marker_of("a task someone else wrote") is None


def test_previous_stage_is_newest_different_value() -> None:
    history = [
        {"value": "closedwon", "timestamp": "2026-11-27T10:00:00.000Z"},
        {"value": "contractsent", "timestamp": "2026-11-20T10:00:00.000Z"},
        {"value": "appointmentscheduled", "timestamp": "2026-11-01T10:00:00.000Z"},
    ]
    assert previous_stage(history, "closedwon") == "contractsent"
    assert previous_stage(list(reversed(history)), "closedwon") == "contractsent"
    assert previous_stage(history[:1], "closedwon") is None
    assert previous_stage([], "closedwon") is None


# --- fetch ---------------------------------------------------------------------------

DEAL_101 = {
    "id": "101",
    "properties": {
        "dealname": "Acme onboarding",
        "dealstage": "closedwon",
        "pipeline": "default",
        "hubspot_owner_id": "77",
        "amount": "1500.50",
        "plan_tier": "enterprise",
        "kickoff_date": "2026-12-01",
        "sso_provider": "",
        "contract_signed": "true",
    },
    "propertiesWithHistory": {
        "dealstage": [
            {"value": "closedwon", "timestamp": "2026-11-27T10:00:00.000Z", "sourceType": "CRM_UI"},
            {"value": "contractsent", "timestamp": "2026-11-20T09:00:00.000Z"},
        ]
    },
    "createdAt": "2026-11-01T00:00:00.000Z",
    "updatedAt": "2026-11-27T10:00:00.000Z",
    "archived": False,
}


def _company(object_id: str, name: str) -> dict[str, Any]:
    return {"id": object_id, "properties": {"name": name, "domain": f"{name.lower()}.test"}}


def test_fetch_one_deal_in_four_calls(mocked: responses.RequestsMock) -> None:
    deal = dict(DEAL_101)
    deal["associations"] = {
        "companies": {
            "results": [
                {"id": "201", "type": "deal_to_company_unlabeled"},
                {"id": "202", "type": "deal_to_company"},
                {"id": "202", "type": "deal_to_company_unlabeled"},
            ]
        },
        "contacts": {
            "results": [
                {"id": "301", "type": "deal_to_contact"},
                {"id": "302", "type": "deal_to_contact"},
            ]
        },
        "line items": {"results": [{"id": "401", "type": "deal_to_line_item"}]},
    }
    mocked.get(f"{BASE}/crm/v3/objects/deals/101", json=deal)
    mocked.post(
        f"{BASE}/crm/v3/objects/companies/batch/read",
        json={"status": "COMPLETE", "results": [_company("201", "Other"), _company("202", "Acme")]},
    )
    mocked.post(
        f"{BASE}/crm/v3/objects/contacts/batch/read",
        json={
            "status": "COMPLETE",
            "results": [
                {"id": "302", "properties": {"email": "", "contact_role": "champion"}},
                {
                    "id": "301",
                    "properties": {
                        "email": "bill@acme.test",
                        "contact_role": "billing",
                        "hs_buying_role": "BUDGET_HOLDER;DECISION_MAKER",
                    },
                },
            ],
        },
    )
    mocked.post(
        f"{BASE}/crm/v3/objects/line_items/batch/read",
        json={"results": [{"id": "401", "properties": {"name": "Seats", "quantity": "12"}}]},
    )

    packets = connector().fetch_packets(["101"])

    assert api_calls(mocked) == [
        "GET /crm/v3/objects/deals/101",
        "POST /crm/v3/objects/companies/batch/read",
        "POST /crm/v3/objects/contacts/batch/read",
        "POST /crm/v3/objects/line_items/batch/read",
    ]
    query = str(mocked.calls[0].request.url)
    assert "propertiesWithHistory=dealstage" in query
    for prop in ("amount", "dealname", "dealstage", "hubspot_owner_id", "pipeline", "plan_tier"):
        assert f"properties={prop}" in query
    packet = packets["101"]
    assert packet.crm == "hubspot"
    assert packet.deal == {
        "amount": 1500.5,
        "plan": "enterprise",
        "kickoff_date": dt.date(2026, 12, 1),
        "signed": True,
    }
    assert "sso_provider" not in packet.deal
    assert packet.company == {"name": "Acme", "domain": "acme.test"}
    assert packet.company_ref == "202"
    assert packet.contacts == [
        {
            "email": "bill@acme.test",
            "role": "billing",
            "buying_roles": ["BUDGET_HOLDER", "DECISION_MAKER"],
        },
        {"role": "champion"},
    ]
    assert packet.line_items == [{"name": "Seats", "quantity": 12.0}]
    assert packet.name == "Acme onboarding"
    assert packet.stage_ref == "closedwon"
    assert packet.previous_stage_ref == "contractsent"
    assert packet.owner_ref == "77"
    assert packet.url == f"{APP}/contacts/4242/record/0-3/101"


def test_fetch_one_deal_without_associations_is_one_call(mocked: responses.RequestsMock) -> None:
    mocked.get(f"{BASE}/crm/v3/objects/deals/101", json=DEAL_101)
    packet = connector().fetch_packets(["101"])["101"]
    assert api_calls(mocked) == ["GET /crm/v3/objects/deals/101"]
    assert packet.company == {} and packet.company_ref is None
    assert packet.contacts == [] and packet.line_items == []


def test_fetch_unknown_deal_is_absent(mocked: responses.RequestsMock) -> None:
    mocked.get(
        f"{BASE}/crm/v3/objects/deals/999",
        status=404,
        json={"status": "error", "message": "Object not found", "category": "OBJECT_NOT_FOUND"},
    )
    assert connector().fetch_packets(["999"]) == {}


def test_fetch_many_deals_in_seven_calls(mocked: responses.RequestsMock) -> None:
    second = {
        "id": "102",
        "properties": {"dealstage": "closedwon", "dealname": "Beta", "amount": "0"},
        "propertiesWithHistory": {"dealstage": [{"value": "closedwon", "timestamp": "1"}]},
    }
    mocked.post(
        f"{BASE}/crm/v3/objects/deals/batch/read",
        status=207,
        json={
            "status": "COMPLETE",
            "results": [second, DEAL_101],
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some DEAL objects, they may be deleted or not exist.",
                    "context": {"ids": ["999"]},
                }
            ],
        },
    )

    def v4(to_type: str, results: list[dict[str, Any]]) -> None:
        mocked.post(
            f"{BASE}/crm/v4/associations/deals/{to_type}/batch/read",
            status=207,
            json={"status": "COMPLETE", "results": results, "numErrors": 1, "errors": []},
        )

    primary = [
        {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
        {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None},
    ]
    plain = [{"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]
    v4(
        "companies",
        [
            {
                "from": {"id": "101"},
                "to": [
                    {"toObjectId": 201, "associationTypes": plain},
                    {"toObjectId": 202, "associationTypes": primary},
                ],
            },
            {"from": {"id": "102"}, "to": [{"toObjectId": 201, "associationTypes": plain}]},
        ],
    )
    v4(
        "contacts",
        [
            {
                "from": {"id": "101"},
                "to": [{"toObjectId": 301, "associationTypes": [{"typeId": 3}]}],
            }
        ],
    )
    v4("line_items", [])
    mocked.post(
        f"{BASE}/crm/v3/objects/companies/batch/read",
        json={"results": [_company("201", "Other"), _company("202", "Acme")]},
    )
    mocked.post(
        f"{BASE}/crm/v3/objects/contacts/batch/read",
        json={"results": [{"id": "301", "properties": {"email": "a@acme.test"}}]},
    )

    packets = connector().fetch_packets(["101", "102", "999"])

    assert sorted(packets) == ["101", "102"]
    calls = api_calls(mocked)
    assert calls == [
        "POST /crm/v3/objects/deals/batch/read",
        "POST /crm/v4/associations/deals/companies/batch/read",
        "POST /crm/v4/associations/deals/contacts/batch/read",
        "POST /crm/v4/associations/deals/line_items/batch/read",
        "POST /crm/v3/objects/companies/batch/read",
        "POST /crm/v3/objects/contacts/batch/read",
    ]
    read = sent(mocked.calls[0])
    assert read["propertiesWithHistory"] == ["dealstage"]
    assert [item["id"] for item in read["inputs"]] == ["101", "102", "999"]
    assert sent(mocked.calls[1])["inputs"] == [{"id": "102"}, {"id": "101"}]
    assert packets["101"].company_ref == "202"
    assert packets["101"].previous_stage_ref == "contractsent"
    assert packets["102"].company_ref == "201"
    assert packets["102"].deal == {"amount": 0.0}
    assert packets["102"].previous_stage_ref is None
    assert packets["101"].contacts == [{"email": "a@acme.test"}]


def test_fetch_many_chunks_at_one_hundred(mocked: responses.RequestsMock) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/deals/batch/read", json={"results": []})
    assert connector().fetch_packets([str(n) for n in range(1, 151)]) == {}
    sizes = [len(sent(call)["inputs"]) for call in mocked.calls]
    assert sizes == [100, 50]


# --- push-back -----------------------------------------------------------------------


def test_create_one_task_with_deal_association(mocked: responses.RequestsMock) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/tasks", status=201, json={"id": "9001", "properties": {}})
    result = connector().create_return_tasks([_push()])
    assert result == {"hubspot:101:1": "9001"}
    body = sent(mocked.calls[0])
    props = body["properties"]
    assert props["hs_task_subject"] == "Hand-off returned: 2 items missing"
    assert props["hs_task_status"] == "NOT_STARTED"
    assert props["hubspot_owner_id"] == "77"
    assert props["hs_timestamp"] == str(
        int(dt.datetime(2026, 11, 27, tzinfo=dt.UTC).timestamp() * 1000)
    )
    assert marker_of(props["hs_task_body"]) == "hubspot:101:1"
    assert body["associations"] == [
        {
            "to": {"id": "101"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 216}],
        }
    ]


def test_create_several_tasks_in_one_batch(mocked: responses.RequestsMock) -> None:
    items = [_push(), _push(handoff="hubspot:102:3", deal="102", missing=("One",))]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        inputs = json.loads(request.body)["inputs"]
        results = [
            {"id": str(7000 + n), "properties": entry["properties"]}
            for n, entry in enumerate(reversed(inputs))
        ]
        return 201, {}, json.dumps({"status": "COMPLETE", "results": results})

    mocked.add_callback(
        responses.POST, f"{BASE}/crm/v3/objects/tasks/batch/create", callback=answer
    )
    result = connector().create_return_tasks(items)
    assert result == {"hubspot:102:3": "7000", "hubspot:101:1": "7001"}
    subjects = [i["properties"]["hs_task_subject"] for i in sent(mocked.calls[0])["inputs"]]
    assert subjects == ["Hand-off returned: 2 items missing", "Hand-off returned: 1 item missing"]


def test_may_exist_returns_the_existing_task(mocked: responses.RequestsMock) -> None:
    mocked.post(
        f"{BASE}/crm/v4/associations/deals/tasks/batch/read",
        json={
            "results": [
                {
                    "from": {"id": "101"},
                    "to": [
                        {"toObjectId": 5, "associationTypes": [{"typeId": 216}]},
                        {"toObjectId": 6, "associationTypes": [{"typeId": 216}]},
                    ],
                }
            ]
        },
    )
    mocked.post(
        f"{BASE}/crm/v3/objects/tasks/batch/read",
        match=[matchers.json_params_matcher({"properties": ["hs_task_body"]}, strict_match=False)],
        json={
            "results": [
                {
                    "id": "5",
                    "properties": {"hs_task_body": task_body(_push(handoff="hubspot:101:10"))},
                },
                {"id": "6", "properties": {"hs_task_body": task_body(_push())}},
            ]
        },
    )
    result = connector().create_return_tasks([_push()], may_exist=True)
    assert result == {"hubspot:101:1": "6"}
    assert api_calls(mocked) == [
        "POST /crm/v4/associations/deals/tasks/batch/read",
        "POST /crm/v3/objects/tasks/batch/read",
    ]


def test_may_exist_creates_when_absent(mocked: responses.RequestsMock) -> None:
    mocked.post(
        f"{BASE}/crm/v4/associations/deals/tasks/batch/read",
        status=207,
        json={"results": [], "errors": [{"category": "OBJECT_NOT_FOUND", "message": "none"}]},
    )
    mocked.post(f"{BASE}/crm/v3/objects/tasks", status=201, json={"id": "9002"})
    assert connector().create_return_tasks([_push()], may_exist=True) == {"hubspot:101:1": "9002"}
    assert api_calls(mocked) == [
        "POST /crm/v4/associations/deals/tasks/batch/read",
        "POST /crm/v3/objects/tasks",
    ]


def test_write_returns_one_deal_patch(mocked: responses.RequestsMock) -> None:
    mocked.patch(f"{BASE}/crm/v3/objects/deals/101", json={"id": "101"})
    connector().write_returns([_push()])
    assert sent(mocked.calls[0]) == {
        "properties": {
            "dealstage": "contractsent",
            "fullkit_status": "returned",
            "fullkit_missing": "Deal amount must be above zero\nAdd a <billing> contact",
        }
    }


def test_write_returns_many_is_one_batch_update(mocked: responses.RequestsMock) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/deals/batch/update", json={"results": []})
    connector().write_returns([_push(), _push(handoff="hubspot:102:1", deal="102")])
    assert [i["id"] for i in sent(mocked.calls[0])["inputs"]] == ["101", "102"]
    assert len(mocked.calls) == 1


def test_write_acceptance_properties(mocked: responses.RequestsMock) -> None:
    mocked.patch(f"{BASE}/crm/v3/objects/deals/101", json={"id": "101"})
    connector().write_acceptances(
        [
            Acceptance(
                handoff_id="hubspot:101:2",
                deal_id="101",
                ops_owner_email="ops-anna@example.com",
                ops_link="https://app.example.test/contacts/4242/record/0-5/55",
                expected_kickoff=dt.date(2026, 12, 4),
            )
        ]
    )
    assert sent(mocked.calls[0]) == {
        "properties": {
            "fullkit_status": "accepted",
            "fullkit_ops_owner": "ops-anna@example.com",
            "fullkit_ops_link": "https://app.example.test/contacts/4242/record/0-5/55",
            "fullkit_expected_kickoff": "2026-12-04",
            "fullkit_missing": "",
        }
    }


def test_write_failure_is_translated(mocked: responses.RequestsMock) -> None:
    mocked.patch(
        f"{BASE}/crm/v3/objects/deals/101",
        status=400,
        json={
            "status": "error",
            "message": "Property values were not valid: fullkit_status",
            "category": "VALIDATION_ERROR",
        },
    )
    with pytest.raises(PermanentError, match="VALIDATION_ERROR"):
        connector().write_returns([_push()])
