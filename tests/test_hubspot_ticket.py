"""HubSpot ticket ops target: one ticket per hand-off id, against mocked HTTP (responses)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from responses import matchers

from bridge.settings import Settings
from connectors import load_all
from connectors.hubspot_ticket import HubSpotTicketTarget
from kernel.cache import LocalCache, SharedCache
from kernel.connector import OpsRequest
from kernel.errors import PartialFailure, PermanentError
from kernel.packet import Packet
from sandbox.server import RunningSandbox
from tests.conftest import APP, sandbox_settings

BASE = "http://127.0.0.1:9"


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{BASE}/account-info/v3/details", json={"portalId": 4242})
        mock.get(
            f"{BASE}/crm/v3/owners/",
            match=[
                matchers.query_param_matcher({"email": "ops-anna@example.com"}, strict_match=False)
            ],
            json={"results": [{"id": "501", "email": "ops-anna@example.com", "userId": 9}]},
        )
        mock.get(
            f"{BASE}/crm/v3/owners/",
            match=[
                matchers.query_param_matcher({"email": "nobody@example.com"}, strict_match=False)
            ],
            json={"results": []},
        )
        yield mock


def target() -> HubSpotTicketTarget:
    values: dict[str, Any] = {
        "HUBSPOT_ACCESS_TOKEN": "pat-x",
        "HUBSPOT_API_BASE": BASE,
        "HUBSPOT_APP_BASE": APP,
    }
    return HubSpotTicketTarget(Settings(**values))


def request(
    handoff: str = "hubspot:101:1",
    owner: str | None = "ops-anna@example.com",
    options: dict[str, Any] | None = None,
    company_ref: str | None = "202",
) -> OpsRequest:
    return OpsRequest(
        handoff_id=handoff,
        crm="hubspot",
        deal_id="101",
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options=options if options is not None else {"pipeline": "0", "stage": "1"},
        owner_email=owner,
        subject="Onboard Acme",
        summary="Kit: New customer onboarding\nAmount: 1500",
        expected_kickoff=dt.date(2026, 12, 4),
        packet=Packet(crm="hubspot", deal_id="101", company_ref=company_ref),
    )


def sent(call: Any) -> Any:
    return json.loads(call.request.body)


def paths(mock: responses.RequestsMock) -> list[str]:
    return [f"{call.request.method} {call.request.path_url.split('?')[0]}" for call in mock.calls]


def test_registered_under_its_name() -> None:
    assert load_all().targets["hubspot_ticket"] is HubSpotTicketTarget


def test_validate_options() -> None:
    assert HubSpotTicketTarget.validate_options({}) == []
    assert HubSpotTicketTarget.validate_options({"pipeline": "0", "stage": "1"}) == []
    problems = HubSpotTicketTarget.validate_options({"pipeline": 0, "stage": "", "queue": "x"})
    assert problems[0] == "queue: unknown key for target hubspot_ticket"
    assert any(p.startswith("pipeline: must be a non-empty string") for p in problems)
    assert any(p.startswith("stage: must be a non-empty string") for p in problems)


def test_create_ticket_with_associations_owner_and_handoff_id(
    mocked: responses.RequestsMock,
) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/tickets", status=201, json={"id": "55"})
    result = target().create([request()])
    assert result["hubspot:101:1"].ref == "55"
    assert result["hubspot:101:1"].link == f"{APP}/contacts/4242/record/0-5/55"
    create = next(c for c in mocked.calls if c.request.path_url == "/crm/v3/objects/tickets")
    body = sent(create)
    assert body["properties"] == {
        "subject": "Onboard Acme",
        "content": "Kit: New customer onboarding\nAmount: 1500",
        "hs_pipeline": "0",
        "hs_pipeline_stage": "1",
        "hubspot_owner_id": "501",
        "fullkit_handoff_id": "hubspot:101:1",
    }
    assert body["associations"] == [
        {
            "to": {"id": "101"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 28}],
        },
        {
            "to": {"id": "202"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 26}],
        },
    ]
    assert paths(mocked) == [
        "GET /crm/v3/owners/",
        "POST /crm/v3/objects/tickets",
        "GET /account-info/v3/details",
    ]


def test_defaults_and_no_owner_no_company(mocked: responses.RequestsMock) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/tickets", status=201, json={"id": "56"})
    target().create([request(owner=None, options={}, company_ref=None)])
    body = sent(mocked.calls[0])
    assert body["properties"]["hs_pipeline"] == "0"
    assert body["properties"]["hs_pipeline_stage"] == "1"
    assert "hubspot_owner_id" not in body["properties"]
    assert len(body["associations"]) == 1


def test_duplicate_handoff_id_returns_the_existing_ticket(mocked: responses.RequestsMock) -> None:
    mocked.post(
        f"{BASE}/crm/v3/objects/tickets",
        status=409,
        json={
            "status": "error",
            "message": "A ticket with fullkit_handoff_id hubspot:101:1 already exists",
            "category": "CONFLICT",
        },
    )
    mocked.get(
        f"{BASE}/crm/v3/objects/tickets/hubspot%3A101%3A1",
        match=[
            matchers.query_param_matcher({"idProperty": "fullkit_handoff_id"}, strict_match=False)
        ],
        json={"id": "55", "properties": {"fullkit_handoff_id": "hubspot:101:1"}},
    )
    result = target().create([request()])
    assert result["hubspot:101:1"].ref == "55"


def test_validation_error_naming_the_unique_property_is_checked(
    mocked: responses.RequestsMock,
) -> None:
    mocked.post(
        f"{BASE}/crm/v3/objects/tickets",
        status=400,
        json={
            "status": "error",
            "message": 'Property values were not valid: fullkit_handoff_id "hubspot:101:1" '
            "already has that value",
            "category": "VALIDATION_ERROR",
        },
    )
    mocked.get(f"{BASE}/crm/v3/objects/tickets/hubspot%3A101%3A1", json={"id": "57"})
    assert target().create([request()])["hubspot:101:1"].ref == "57"


def test_unrelated_validation_error_is_permanent(mocked: responses.RequestsMock) -> None:
    mocked.post(
        f"{BASE}/crm/v3/objects/tickets",
        status=400,
        json={"status": "error", "message": "bad stage", "category": "VALIDATION_ERROR"},
    )
    with pytest.raises(PartialFailure) as caught:
        target().create([request()])
    assert_item_failed(caught.value, "hubspot:101:1", "bad stage")
    assert not any("/tickets/hubspot" in c.request.path_url for c in mocked.calls)


def test_unknown_owner_email_is_permanent_and_named(mocked: responses.RequestsMock) -> None:
    with pytest.raises(PartialFailure) as caught:
        target().create([request(owner="nobody@example.com")])
    assert_item_failed(caught.value, "hubspot:101:1", "nobody@example.com")
    assert paths(mocked) == ["GET /crm/v3/owners/"]


def test_owner_lookup_is_cached_per_instance(mocked: responses.RequestsMock) -> None:
    mocked.post(f"{BASE}/crm/v3/objects/tickets", status=201, json={"id": "58"})
    created = [{"id": str(n), "properties": {"fullkit_handoff_id": f"hubspot:{n}:1"}}
               for n in (101, 102)]  # fmt: skip
    mocked.post(
        f"{BASE}/crm/v3/objects/tickets/batch/create", status=201, json={"results": created}
    )
    ops = target()
    ops.create([request(handoff="hubspot:101:1"), request(handoff="hubspot:102:1")])
    ops.create([request(handoff="hubspot:103:1")])
    assert paths(mocked).count("GET /crm/v3/owners/") == 1
    assert paths(mocked).count("GET /account-info/v3/details") == 1


# --- against the loopback sandbox (real HTTP, HubSpot's wire shapes) -----------------


def sandbox_request(
    served: RunningSandbox, owner: str | None = "ops-anna@example.com"
) -> OpsRequest:
    box = served.sandbox
    deal_id = box.create_deal({"dealname": "Acme", "dealstage": "closedwon"}, company={"name": "A"})
    company = box.get("deals", deal_id)["associations"]["companies"][0]
    box.reset_calls()
    return OpsRequest(
        handoff_id=f"hubspot:{deal_id}:1",
        crm="hubspot",
        deal_id=deal_id,
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options={"pipeline": "0", "stage": "1"},
        owner_email=owner,
        subject="Onboard Acme",
        summary="Kit: New customer onboarding",
        expected_kickoff=dt.date(2026, 12, 4),
        packet=Packet(crm="hubspot", deal_id=deal_id, company_ref=company),
    )


def tickets_for(served: RunningSandbox, handoff_id: str) -> list[dict[str, Any]]:
    return [
        ticket
        for ticket in served.sandbox.tickets()
        if ticket["properties"].get("fullkit_handoff_id") == handoff_id
    ]


def test_sandbox_ticket_created_once_when_create_runs_twice(running: RunningSandbox) -> None:
    request = sandbox_request(running)
    shared = LocalCache()  # what the runtime's Redis cache is to every worker process
    first = target_for(running, shared).create([request])
    calls_first = [f"{c.method} {c.path}" for c in running.sandbox.calls()]
    running.sandbox.reset_calls()
    # The worker died before recording the ticket: a fresh worker runs the job again.
    second = target_for(running, shared).create([request])
    calls_second = [f"{c.method} {c.path}" for c in running.sandbox.calls()]

    assert first == second
    (ticket,) = tickets_for(running, request.handoff_id)
    assert ticket["id"] == first[request.handoff_id].ref
    assert first[request.handoff_id].link == (
        f"{APP}/contacts/{running.sandbox.portal_id}/record/0-5/{ticket['id']}"
    )
    props = ticket["properties"]
    assert props["subject"] == "Onboard Acme"
    assert props["content"] == "Kit: New customer onboarding"
    assert (props["hs_pipeline"], props["hs_pipeline_stage"]) == ("0", "1")
    owners = {o.email: o.id for o in running.sandbox.owners.values()}
    assert props["hubspot_owner_id"] == owners["ops-anna@example.com"]
    assert ticket["associations"] == {
        "deals": [request.deal_id],
        "companies": [request.packet.company_ref],
    }
    assert calls_first == [
        "GET /crm/v3/owners/",
        "POST /crm/v3/objects/tickets",
        "GET /account-info/v3/details",
    ]
    # The refused create, then the consistent read by the unique hand-off id; the portal
    # details and the owner are remembered for every process.
    assert calls_second == [
        "POST /crm/v3/objects/tickets",
        f"GET /crm/v3/objects/tickets/{request.handoff_id}",
    ]


def test_sandbox_concurrent_workers_make_one_ticket(running: RunningSandbox) -> None:
    request = sandbox_request(running)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(target_for(running).create([request])[request.handoff_id].ref)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert len(tickets_for(running, request.handoff_id)) == 1


def test_sandbox_unknown_owner_creates_nothing(running: RunningSandbox) -> None:
    request = sandbox_request(running, owner="nobody@example.com")
    with pytest.raises(PartialFailure) as caught:
        target_for(running).create([request])
    assert_item_failed(caught.value, request.handoff_id, "nobody@example.com")
    assert tickets_for(running, request.handoff_id) == []


def test_sandbox_unassigned_ticket_without_owner(running: RunningSandbox) -> None:
    request = sandbox_request(running, owner=None)
    target_for(running).create([request])
    (ticket,) = tickets_for(running, request.handoff_id)
    assert "hubspot_owner_id" not in ticket["properties"]
    assert not any(c.path.startswith("/crm/v3/owners") for c in running.sandbox.calls())


def target_for(served: RunningSandbox, cache: SharedCache | None = None) -> HubSpotTicketTarget:
    target = HubSpotTicketTarget(sandbox_settings(served))
    target.cache = cache
    return target


def assert_item_failed(partial: PartialFailure, key: str, words: str) -> None:
    """Only that item failed, for good, saying why."""
    assert list(partial.failed) == [key]
    assert isinstance(partial.failed[key], PermanentError)
    assert words in str(partial.failed[key])
