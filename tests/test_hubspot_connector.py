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

from bridge.settings import Settings
from connectors.hubspot import (
    HubSpotConnector,
    marker_of,
    previous_stage,
    task_body,
    task_subject,
)
from connectors.hubspot_client import DISABLED_MESSAGE, HubSpotApi
from connectors.hubspot_setup import SetupError, run_setup, setup_properties
from connectors.hubspot_ticket import HubSpotTicketTarget
from kernel.cache import LocalCache
from kernel.connector import Acceptance, OpsRequest, PushBack
from kernel.errors import AuthError, PartialFailure, PermanentError, RetryableError
from kernel.mapping import FieldSpec, Mapping
from sandbox.hubspot import HubSpotSandbox
from sandbox.server import RunningSandbox, start_sandbox
from tests.conftest import APP, sandbox_settings

BASE = "http://127.0.0.1:9"
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


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{BASE}/account-info/v3/details", json={"portalId": 4242, "uiDomain": "x"})
        mock.get(f"{BASE}/crm/v3/owners/77", json=OWNER_77)
        yield mock


OWNER_77 = {"id": "77", "email": "sam@acme.example", "firstName": "Sam", "lastName": "Sales"}


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
        "returned_at": dt.datetime(2026, 11, 27, 15, 30, tzinfo=dt.UTC),
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


def test_fetch_one_deal_in_four_calls_and_its_owner_in_one(mocked: responses.RequestsMock) -> None:
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
        "GET /crm/v3/owners/77",
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
    assert (packet.owner_email, packet.owner_name) == ("sam@acme.example", "Sam Sales")
    assert packet.url == f"{APP}/contacts/4242/record/0-3/101"


def test_fetch_one_deal_without_associations_is_one_call(mocked: responses.RequestsMock) -> None:
    mocked.get(f"{BASE}/crm/v3/objects/deals/101", json=DEAL_101)
    packet = connector().fetch_packets(["101"])["101"]
    assert api_calls(mocked) == ["GET /crm/v3/objects/deals/101", "GET /crm/v3/owners/77"]
    assert packet.company == {} and packet.company_ref is None
    assert packet.contacts == [] and packet.line_items == []


def test_fetch_unknown_deal_is_absent(mocked: responses.RequestsMock) -> None:
    mocked.get(
        f"{BASE}/crm/v3/objects/deals/999",
        status=404,
        json={"status": "error", "message": "Object not found", "category": "OBJECT_NOT_FOUND"},
    )
    assert connector().fetch_packets(["999"]) == {}


def test_fetch_many_deals_in_seven_calls_and_one_per_owner(mocked: responses.RequestsMock) -> None:
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
        "GET /crm/v3/owners/77",  # deal 102 has no owner
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


def test_fetch_many_chunks_at_fifty_because_it_reads_stage_history(
    mocked: responses.RequestsMock,
) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/deals/batch/read", json={"results": []})
    assert connector().fetch_packets([str(n) for n in range(1, 151)]) == {}
    sizes = [len(sent(call)["inputs"]) for call in mocked.calls]
    assert sizes == [50, 50, 50]


# --- push-back -----------------------------------------------------------------------


def test_create_one_task_with_deal_association(mocked: responses.RequestsMock) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/tasks", status=201, json={"id": "9001", "properties": {}})
    result = connector().create_return_tasks([_push()])
    assert result == {"hubspot:101:1": "9001"}
    body = sent(next(c for c in mocked.calls if c.request.path_url == "/crm/v3/objects/tasks"))
    props = body["properties"]
    assert props["hs_task_subject"] == "Hand-off returned: 2 items missing"
    assert props["hs_task_status"] == "NOT_STARTED"
    assert props["hubspot_owner_id"] == "77"
    # Due at the end of the day it was returned, in the portal's zone (UTC if unnamed).
    assert props["hs_timestamp"] == str(
        int(dt.datetime(2026, 11, 27, 23, 59, tzinfo=dt.UTC).timestamp() * 1000)
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
    batch = next(c for c in mocked.calls if c.request.path_url.endswith("/batch/create"))
    subjects = [i["properties"]["hs_task_subject"] for i in sent(batch)["inputs"]]
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
    with pytest.raises(PartialFailure) as caught:
        connector().write_returns([_push()])
    assert isinstance(caught.value.failed["101"], PermanentError)
    assert "VALIDATION_ERROR" in str(caught.value.failed["101"])


# --- against the loopback sandbox (real HTTP, HubSpot's wire shapes) -----------------


def calls(served: RunningSandbox) -> list[str]:
    return [f"{call.method} {call.path}" for call in served.sandbox.calls()]


def make_deal(served: RunningSandbox, **overrides: Any) -> str:
    box = served.sandbox
    props = {
        "dealname": "Acme onboarding",
        "dealstage": "contractsent",
        "amount": "1500",
        "kickoff_date": "2026-12-01",
        "plan_tier": "enterprise",
        "sso_provider": "",
    }
    props.update(overrides)
    tag = len(box.all("deals"))  # contact emails are unique per portal
    deal_id = box.create_deal(
        props,
        company={"name": "Acme", "domain": "acme.test"},
        contacts=[
            {"email": f"bill{tag}@acme.test", "contact_role": "billing"},
            {"email": f"cto{tag}@acme.test"},
        ],
        line_items=[{"name": "Seats", "quantity": "12"}],
        owner_email="sales-sam@example.com",
    )
    box.move_deal(deal_id, "closedwon")
    box.reset_calls()
    return deal_id


FETCH_ONE = [
    "GET /crm/v3/objects/deals/{deal}",
    "POST /crm/v3/objects/companies/batch/read",
    "POST /crm/v3/objects/contacts/batch/read",
    "POST /crm/v3/objects/line_items/batch/read",
]


def test_sandbox_fetch_packet(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)

    packet = hub.fetch_packets([deal_id])[deal_id]

    assert packet.deal == {
        "amount": 1500.0,
        "plan": "enterprise",
        "kickoff_date": dt.date(2026, 12, 1),
    }
    assert packet.company == {"name": "Acme", "domain": "acme.test"}
    billing, other = packet.contacts
    assert billing["role"] == "billing" and billing["email"].startswith("bill")
    assert set(other) == {"email"}
    assert packet.line_items == [{"name": "Seats", "quantity": 12.0}]
    assert (packet.stage_ref, packet.previous_stage_ref) == ("closedwon", "contractsent")
    assert (
        packet.owner_ref == running.sandbox.get("deals", deal_id)["properties"]["hubspot_owner_id"]
    )
    assert (
        packet.company_ref == running.sandbox.get("deals", deal_id)["associations"]["companies"][0]
    )
    assert packet.url == f"{APP}/contacts/{running.sandbox.portal_id}/record/0-3/{deal_id}"
    # 4 calls for the deal, 1 for the portal id and 1 for the owner's name (each asked
    # once per process and token).
    owner = packet.owner_ref
    assert calls(running) == [c.format(deal=deal_id) for c in FETCH_ONE] + [
        "GET /account-info/v3/details",
        f"GET /crm/v3/owners/{owner}",
    ]
    assert (packet.owner_email, packet.owner_name) == ("sales-sam@example.com", "Sam Sales")
    running.sandbox.reset_calls()
    hub.fetch_packets([deal_id])
    assert len(calls(running)) == 4


def test_sandbox_fetch_many_is_seven_calls(running: RunningSandbox) -> None:
    ids = [make_deal(running, dealname=f"Deal {n}") for n in range(3)]
    bare = running.sandbox.create_deal({"dealname": "Bare", "dealstage": "closedwon"})
    running.sandbox.reset_calls()
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)

    packets = hub.fetch_packets([*ids, bare, "999999"])

    assert sorted(packets) == sorted([*ids, bare])
    assert packets[bare].company == {} and packets[bare].contacts == []
    assert all(packets[i].previous_stage_ref == "contractsent" for i in ids)
    assert all(len(packets[i].contacts) == 2 for i in ids)
    api = [c for c in calls(running) if "account-info" not in c]
    # The three deals share one owner: one read of their name ("Bare" has none).
    assert len(api) == 8 and api[-1].startswith("GET /crm/v3/owners/")


def _pushback(deal_id: str, owner: str | None, attempt: int = 1) -> PushBack:
    return PushBack(
        handoff_id=f"hubspot:{deal_id}:{attempt}",
        deal_id=deal_id,
        return_stage_ref="contractsent",
        missing=("Add a billing contact with an email address",),
        owner_ref=owner,
        returned_at=dt.datetime(2026, 11, 27, 15, 30, tzinfo=dt.UTC),
    )


def test_sandbox_push_back_makes_exactly_one_task(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    packet = hub.fetch_packets([deal_id])[deal_id]
    item = _pushback(deal_id, packet.owner_ref)
    running.sandbox.reset_calls()

    first = hub.create_return_tasks([item])
    hub.write_returns([item])
    assert calls(running) == [
        "POST /crm/v3/objects/tasks",
        f"PATCH /crm/v3/objects/deals/{deal_id}",
    ]
    # A worker crashed after the create and the job runs again, twice.
    again = hub.create_return_tasks([item], may_exist=True)
    third = HubSpotConnector(sandbox_settings(running), MAPPING).create_return_tasks(
        [item], may_exist=True
    )
    hub.write_returns([item])

    assert first == again == third
    tasks = running.sandbox.tasks_for_deal(deal_id)
    assert [task["id"] for task in tasks] == [first[item.handoff_id]]
    task = tasks[0]["properties"]
    assert task["hs_task_subject"] == "Hand-off returned: 1 item missing"
    assert "Add a billing contact with an email address" in task["hs_task_body"]
    assert task["hs_task_status"] == "NOT_STARTED"
    assert task["hubspot_owner_id"] == packet.owner_ref
    assert task["hs_timestamp"].startswith("2026-11-27T23:59:00")
    deal = running.sandbox.get("deals", deal_id)["properties"]
    assert deal["dealstage"] == "contractsent"
    assert deal["fullkit_status"] == "returned"
    assert deal["fullkit_missing"] == "Add a billing contact with an email address"


def test_sandbox_may_exist_on_first_run_creates(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    made = hub.create_return_tasks([_pushback(deal_id, None)], may_exist=True)
    assert len(running.sandbox.tasks_for_deal(deal_id)) == 1
    # A later attempt on the same deal gets its own task, not the first one.
    later = hub.create_return_tasks([_pushback(deal_id, None, attempt=2)], may_exist=True)
    assert later != made
    assert len(running.sandbox.tasks_for_deal(deal_id)) == 2


def test_sandbox_push_back_call_count(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    packet = hub.fetch_packets([deal_id])[deal_id]
    item = _pushback(deal_id, packet.owner_ref)
    hub.create_return_tasks([item])
    hub.write_returns([item])
    # fetch 4 + portal id 1 + owner's name 1 + task 1 + deal update 1
    assert running.sandbox.request_count == 8


def test_sandbox_accepted_handoff_call_count(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    settings_ = sandbox_settings(running)
    hub = HubSpotConnector(settings_, MAPPING)
    ops = HubSpotTicketTarget(settings_)
    hub.cache = ops.cache = LocalCache()  # as the runtime shares one between them
    packet = hub.fetch_packets([deal_id])[deal_id]
    request = OpsRequest(
        handoff_id=f"hubspot:{deal_id}:1",
        crm="hubspot",
        deal_id=deal_id,
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options={"pipeline": "0", "stage": "1"},
        owner_email="ops-anna@example.com",
        subject="Onboard Acme",
        summary="everything ops needs",
        expected_kickoff=dt.date(2026, 12, 4),
        packet=packet,
    )
    result = ops.create([request])[request.handoff_id]
    hub.write_acceptances(
        [
            Acceptance(
                handoff_id=request.handoff_id,
                deal_id=deal_id,
                ops_owner_email="ops-anna@example.com",
                ops_link=result.link,
                expected_kickoff=dt.date(2026, 12, 4),
            )
        ]
    )
    # fetch 4 + portal id 1 (shared by connector and target) + sales owner's name 1
    # + ops owner 1 + ticket 1 + deal 1
    assert calls(running) == [
        *[c.format(deal=deal_id) for c in FETCH_ONE],
        "GET /account-info/v3/details",
        f"GET /crm/v3/owners/{packet.owner_ref}",
        "GET /crm/v3/owners/",
        "POST /crm/v3/objects/tickets",
        f"PATCH /crm/v3/objects/deals/{deal_id}",
    ]
    deal = running.sandbox.get("deals", deal_id)["properties"]
    assert deal["fullkit_status"] == "accepted"
    assert deal["fullkit_ops_owner"] == "ops-anna@example.com"
    assert deal["fullkit_ops_link"] == result.link
    assert deal["fullkit_expected_kickoff"] == "2026-12-04"
    assert "fullkit_missing" not in deal  # emptied


def test_sandbox_acceptance_empties_missing_items(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    hub.write_returns([_pushback(deal_id, None)])
    assert running.sandbox.get("deals", deal_id)["properties"]["fullkit_missing"]
    hub.write_acceptances(
        [Acceptance("hubspot:x:2", deal_id, None, "https://ops/1", dt.date(2026, 12, 4))]
    )
    assert "fullkit_missing" not in running.sandbox.get("deals", deal_id)["properties"]


def test_sandbox_batch_writes(running: RunningSandbox) -> None:
    ids = [make_deal(running, dealname=f"Deal {n}") for n in range(2)]
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    items = [_pushback(deal_id, None) for deal_id in ids]
    made = hub.create_return_tasks(items)
    hub.write_returns(items)
    assert calls(running) == [
        "GET /account-info/v3/details",  # the portal's time zone, once per process
        "POST /crm/v3/objects/tasks/batch/create",
        "POST /crm/v3/objects/deals/batch/update",
    ]
    for deal_id in ids:
        (task,) = running.sandbox.tasks_for_deal(deal_id)
        assert made[f"hubspot:{deal_id}:1"] == task["id"]
        assert running.sandbox.get("deals", deal_id)["properties"]["fullkit_status"] == "returned"
    assert hub.create_return_tasks(items, may_exist=True) == made


def test_sandbox_5xx_then_recovery(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    running.sandbox.fail_next(1, 503)
    with pytest.raises(RetryableError):
        hub.fetch_packets([deal_id])
    assert deal_id in hub.fetch_packets([deal_id])


def test_sandbox_rate_limit_gives_retry_after() -> None:
    with start_sandbox(sandbox=HubSpotSandbox(rate_limit=(2, 10.0))) as served:
        served.sandbox.seed_default_portal()
        hub = HubSpotConnector(sandbox_settings(served), MAPPING)
        with pytest.raises(RetryableError) as caught:
            for _ in range(3):
                hub.fetch_packets(["1"])
    assert caught.value.retry_after == 10.0
    assert "TEN_SECONDLY_ROLLING" in str(caught.value)


def test_sandbox_wrong_token_is_auth_error(running: RunningSandbox) -> None:
    hub = HubSpotConnector(sandbox_settings(running, token="pat-wrong"), MAPPING)
    with pytest.raises(AuthError) as caught:
        hub.fetch_packets(["1"])
    assert "pat-wrong" not in str(caught.value)


def test_sandbox_writing_before_setup_is_permanent() -> None:
    with start_sandbox() as served:
        hub = HubSpotConnector(sandbox_settings(served), MAPPING)
        deal_id = served.sandbox.create_deal({"dealname": "x", "dealstage": "closedwon"})
        with pytest.raises(PartialFailure) as caught:
            hub.write_returns([_pushback(deal_id, None)])
        assert isinstance(caught.value.failed[deal_id], PermanentError)
        assert "VALIDATION_ERROR" in str(caught.value.failed[deal_id])


# --- fullkit hubspot setup -------------------------------------------------------------


def test_setup_is_idempotent() -> None:
    with start_sandbox() as served:
        first = run_setup(sandbox_settings(served))
        assert first.ok
        # Groups on deals, tickets and tasks; five deal properties and the two unique ids.
        assert sum("created" in line for line in first.lines) == 10
        served.sandbox.reset_calls()
        second = run_setup(sandbox_settings(served))
        assert second.ok
        assert all("already present" in line for line in second.lines)
        assert {c.split()[0] for c in calls(served)} == {"GET"}
        props = served.sandbox.properties
        assert props["tickets"]["fullkit_handoff_id"].has_unique_value
        assert props["tasks"]["fullkit_handoff_id"].has_unique_value
        assert props["deals"]["fullkit_status"].option_values() == ["accepted", "returned"]
        assert props["deals"]["fullkit_expected_kickoff"].type == "date"
        assert props["deals"]["fullkit_missing"].field_type == "textarea"


def test_setup_reports_a_property_of_the_wrong_type() -> None:
    with start_sandbox() as served:
        served.sandbox.define_property("deals", "fullkit_expected_kickoff", "string", "text")
        served.sandbox.define_property("tickets", "fullkit_handoff_id", "string", "text")
        with pytest.raises(SetupError) as caught:
            setup_properties(sandbox_settings(served))
        problems = caught.value.result.problems
        assert len(problems) == 2
        assert "fullkit_expected_kickoff exists with type string, Fullkit needs date" in problems[0]
        assert "fullkit_handoff_id exists without unique values" in problems[1]
        # Everything else was still set up.
        assert "fullkit_status" in served.sandbox.properties["deals"]


def test_setup_adds_a_missing_status_option() -> None:
    with start_sandbox() as served:
        served.sandbox.define_property(
            "deals", "fullkit_status", "enumeration", "select", ["accepted"]
        )
        lines = setup_properties(sandbox_settings(served))
        assert any("added options returned" in line for line in lines)
        assert served.sandbox.properties["deals"]["fullkit_status"].option_values() == [
            "accepted",
            "returned",
        ]


def test_batch_create_refusal_is_permanent(mocked: responses.RequestsMock) -> None:
    mocked.post(
        f"{BASE}/crm/v3/objects/tasks/batch/create",
        status=207,
        json={
            "status": "COMPLETE",
            "results": [],
            "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "owner"}],
        },
    )
    with pytest.raises(PartialFailure) as caught:
        connector().create_return_tasks([_push(), _push(handoff="hubspot:102:1", deal="102")])
    failed = caught.value.failed
    assert sorted(failed) == ["hubspot:101:1", "hubspot:102:1"]
    assert all(isinstance(error, PermanentError) for error in failed.values())
    assert "VALIDATION_ERROR: owner" in str(failed["hubspot:101:1"])


def test_batch_create_without_ids_asks_for_a_may_exist_retry(
    mocked: responses.RequestsMock,
) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/tasks/batch/create", status=201, json={"results": []})
    with pytest.raises(PartialFailure) as caught:
        connector().create_return_tasks([_push(), _push(handoff="hubspot:102:1", deal="102")])
    assert isinstance(caught.value.failed["hubspot:101:1"], RetryableError)
    assert "hubspot:101:1" in str(caught.value.failed["hubspot:101:1"])


def test_batch_update_error_naming_no_deal_is_found_deal_by_deal(
    mocked: responses.RequestsMock,
) -> None:
    mocked.post(
        f"{BASE}/crm/v3/objects/deals/batch/update",
        status=207,
        json={"results": [], "errors": [{"category": "OBJECT_NOT_FOUND", "message": "gone"}]},
    )
    mocked.patch(f"{BASE}/crm/v3/objects/deals/101", json={"id": "101"})
    mocked.patch(
        f"{BASE}/crm/v3/objects/deals/102",
        status=404,
        json={"status": "error", "category": "OBJECT_NOT_FOUND", "message": "gone"},
    )
    mocked.patch(f"{BASE}/crm/v3/objects/deals/103", status=503, json={})
    items = [_push(), *(_push(handoff=f"hubspot:{d}:1", deal=d) for d in ("102", "103"))]
    with pytest.raises(PartialFailure) as caught:
        connector().write_returns(items)
    # 101 is written; 102 is gone for good; 103 met a passing failure and retries alone.
    assert sorted(caught.value.failed) == ["102", "103"]
    assert isinstance(caught.value.failed["102"], PermanentError)
    assert isinstance(caught.value.failed["103"], RetryableError)
    assert api_calls(mocked)[1:] == [
        "PATCH /crm/v3/objects/deals/101",
        "PATCH /crm/v3/objects/deals/102",
        "PATCH /crm/v3/objects/deals/103",
    ]


def test_task_is_due_today_in_the_portals_time_zone(mocked: responses.RequestsMock) -> None:
    mocked.replace(
        responses.GET, f"{BASE}/account-info/v3/details",
        json={"portalId": 4242, "timeZone": "Asia/Tokyo"},
    )  # fmt: skip
    mocked.post(f"{BASE}/crm/v3/objects/tasks", status=201, json={"id": "9002", "properties": {}})
    # 23:30 UTC on the 27th is already the 28th in Tokyo: the task is due the 28th there.
    late = _push(returned_at=dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC))
    connector().create_return_tasks([late])
    body = sent(next(c for c in mocked.calls if c.request.path_url == "/crm/v3/objects/tasks"))
    tokyo_end = dt.datetime(2026, 11, 28, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert body["properties"]["hs_timestamp"] == str(int(tokyo_end.timestamp() * 1000))


# --- the task guard: one task per hand-off, whatever HubSpot does late ----------------


def test_sandbox_a_second_create_of_a_task_finds_the_first(running: RunningSandbox) -> None:
    deal_id = make_deal(running)
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    item = _pushback(deal_id, None)
    first = hub.create_return_tasks([item])
    running.sandbox.reset_calls()

    # No association scan (may_exist=False): only HubSpot's unique property stands guard.
    again = hub.create_return_tasks([item])

    assert again == first
    assert len(running.sandbox.tasks_for_deal(deal_id)) == 1
    assert calls(running) == [
        "POST /crm/v3/objects/tasks",  # refused: the hand-off id is taken
        f"GET /crm/v3/objects/tasks/{item.handoff_id}",  # the task that holds it
    ]


def test_sandbox_batch_task_errors_belong_to_their_hand_offs(running: RunningSandbox) -> None:
    deals = [make_deal(running, dealname=f"Batch {n}") for n in range(3)]
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    done_before = hub.create_return_tasks([_pushback(deals[0], None)])
    gone_owner = running.sandbox.add_owner("left-company@example.com")
    del running.sandbox.owners[gone_owner]
    items = [_pushback(deals[0], None), _pushback(deals[1], gone_owner), _pushback(deals[2], None)]
    running.sandbox.reset_calls()

    with pytest.raises(PartialFailure) as caught:
        hub.create_return_tasks(items)

    # The task made before is found again, the refused owner fails its own hand-off only.
    assert list(caught.value.failed) == [items[1].handoff_id]
    assert isinstance(caught.value.failed[items[1].handoff_id], PermanentError)
    assert "hubspot_owner_id" in str(caught.value.failed[items[1].handoff_id])
    done = caught.value.done
    assert isinstance(done, dict)
    assert done[items[0].handoff_id] == done_before[items[0].handoff_id]
    assert items[2].handoff_id in done
    assert [len(running.sandbox.tasks_for_deal(d)) for d in deals] == [1, 0, 1]
    assert calls(running) == [
        "POST /crm/v3/objects/tasks/batch/create",  # one call, a multi-status answer
        f"GET /crm/v3/objects/tasks/{items[0].handoff_id}",
    ]


def test_sandbox_a_task_hubspot_cannot_take_now_retries_alone(running: RunningSandbox) -> None:
    deals = [make_deal(running, dealname=f"Alone {n}") for n in range(3)]
    hub = HubSpotConnector(sandbox_settings(running), MAPPING)
    items = [_pushback(deal_id, None) for deal_id in deals]
    # HubSpot refuses the batch as a whole, then is briefly down for the first task alone.
    running.sandbox.fail_next(1, 400, "/crm/v3/objects/tasks/batch/create")
    running.sandbox.fail_next(1, 503, "/crm/v3/objects/tasks")

    with pytest.raises(PartialFailure) as caught:
        hub.create_return_tasks(items)

    assert list(caught.value.failed) == [items[0].handoff_id]
    assert isinstance(caught.value.failed[items[0].handoff_id], RetryableError)
    assert sorted(caught.value.done) == sorted(item.handoff_id for item in items[1:])
