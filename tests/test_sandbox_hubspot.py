"""The HubSpot sandbox, driven through the real hubspot-api-client over real HTTP."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest
from hubspot.crm.deals import (
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.deals.exceptions import ApiException as DealsApiException
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectBatchInputUpsert,
    SimplePublicObjectBatchInputUpsert,
)
from hubspot.crm.objects import SimplePublicObjectInputForCreate as ObjectCreate
from hubspot.crm.objects.exceptions import ApiException as ObjectsApiException
from hubspot.crm.owners.exceptions import ApiException as OwnersApiException
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from hubspot.utils.signature import Signature
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox
from sandbox.hubspot_scopes import ALL_SCOPES

SECRET = "client-secret-for-tests"
# Each generated API package of the client has its own ApiException class.
ApiException = (DealsApiException, ObjectsApiException, OwnersApiException, PropertiesApiException)


@pytest.fixture
def running() -> Iterator[RunningSandbox]:
    box = HubSpotSandbox(scopes=ALL_SCOPES)  # a super admin's token: the wire format is tested
    box.seed_default_portal()
    with start_sandbox(sandbox=box) as served:
        yield served


@pytest.fixture
def box(running: RunningSandbox) -> HubSpotSandbox:
    return running.sandbox


@pytest.fixture
def client(running: RunningSandbox) -> Any:
    return HubSpot(access_token=running.sandbox.access_token, host=running.url)


def _error(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


def _create(client: Any, object_type: str, properties: dict[str, str], **kw: Any) -> Any:
    return client.crm.objects.basic_api.create(
        object_type, ObjectCreate(properties=properties, associations=kw.get("associations", []))
    )


def _assoc(to_id: str, type_id: int) -> dict[str, Any]:
    spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
    return {"to": {"id": to_id}, "types": [spec]}


# ------------------------------------------------------------------ receiver


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Receiver:
    """A tiny webhook endpoint answering statuses from a script (then 204)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: BaseWSGIServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.server.host}:{self.server.port}/hooks/hubspot"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append(
            {"headers": dict(request.headers), "body": request.get_data(as_text=True)}
        )
        status = self.statuses.pop(0) if self.statuses else 204
        return Response(status=status)(environ, start_response)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.server = make_server("127.0.0.1", 0, hook, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(
        target=hook.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


# --------------------------------------------------------------------- objects


def test_deal_created_with_associations_reads_back_with_history(client: Any, box: HubSpotSandbox):
    company = _create(client, "companies", {"name": "Acme", "domain": "acme.example"})
    contact = _create(client, "contacts", {"email": "bill@acme.example", "contact_role": "billing"})
    deal = client.crm.deals.basic_api.create(
        SimplePublicObjectInputForCreate(
            properties={"dealname": "Acme", "amount": "1500", "dealstage": "contractsent"},
            associations=[_assoc(company.id, 5), _assoc(contact.id, 3)],
        )
    )
    line_item_deal = box.create_deal({"dealname": "other"}, line_items=[{"name": "Pro"}])
    client.crm.deals.basic_api.update(deal.id, SimplePublicObjectInput({"dealstage": "closedwon"}))

    read = client.crm.deals.basic_api.get_by_id(
        deal.id,
        properties=["amount", "dealstage", "plan_tier"],
        properties_with_history=["dealstage"],
        associations=["companies", "contacts", "line_items"],
    )

    assert read.properties["amount"] == "1500"
    assert read.properties["plan_tier"] is None
    history = read.properties_with_history["dealstage"]
    assert [h.value for h in history] == ["closedwon", "contractsent"]
    assert {(h.source_type, h.source_id) for h in history} == {("INTEGRATION", str(box.app_id))}
    companies = read.associations["companies"].results
    assert {(a.id, a.type) for a in companies} == {
        (company.id, "deal_to_company"),
        (company.id, "deal_to_company_unlabeled"),
    }
    assert [a.id for a in read.associations["contacts"].results] == [contact.id]
    items = client.crm.deals.basic_api.get_by_id(line_item_deal, associations=["line_items"])
    assert list(items.associations) == ["line items"]


def test_batch_read_with_a_missing_id_answers_207(client: Any, box: HubSpotSandbox):
    deal_id = box.create_deal({"dealname": "Known"})

    answer = client.crm.deals.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": deal_id}, {"id": "424242"}],
            properties=["dealname"],
            properties_with_history=[],
        )
    )

    assert [r.id for r in answer.results] == [deal_id]
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"ids": ["424242"]}
    assert box.calls("POST", "/crm/v3/objects/deals/batch/read")[-1].status == 207


def test_unknown_id_is_404(client: Any):
    with pytest.raises(ApiException) as exc:
        client.crm.deals.basic_api.get_by_id("999999")
    assert exc.value.status == 404
    assert _error(exc)["category"] == "OBJECT_NOT_FOUND"


@pytest.mark.parametrize(
    ("properties", "code"),
    [
        ({"dealname": "x", "fullkit_status": "returned"}, "PROPERTY_DOESNT_EXIST"),
        ({"plan_tier": "gold"}, "INVALID_OPTION"),
        ({"dealstage": "nosuchstage"}, "INVALID_OPTION"),
        ({"amount": "lots"}, "INVALID_FLOAT"),
        ({"kickoff_date": "1767225600001"}, "INVALID_DATE"),
        ({"hubspot_owner_id": "1"}, "INVALID_OWNER_ID"),
    ],
)
def test_invalid_property_values_are_refused_like_hubspot(
    client: Any, box: HubSpotSandbox, properties: dict[str, str], code: str
):
    with pytest.raises(ApiException) as exc:
        client.crm.deals.basic_api.create(SimplePublicObjectInputForCreate(properties=properties))

    assert exc.value.status == 400
    body = _error(exc)
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: ")
    problems = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert problems[0]["error"] == code
    assert box.all("deals") == []


def test_dates_are_stored_as_iso_dates(client: Any):
    deal = client.crm.deals.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"kickoff_date": "1767225600000"})
    )
    assert deal.properties["kickoff_date"] == "2026-01-01"


def test_ticket_and_task_need_their_required_fields(client: Any):
    with pytest.raises(ApiException) as exc:
        _create(client, "tickets", {"content": "no subject"})
    missing = json.loads(_error(exc)["message"].split(": ", 1)[1])
    assert {p["name"] for p in missing} == {"subject", "hs_pipeline_stage"}

    with pytest.raises(ApiException) as exc:
        _create(client, "tasks", {"hs_task_subject": "call"})
    assert "hs_timestamp" in _error(exc)["message"]

    ticket = _create(client, "tickets", {"subject": "Onboard", "hs_pipeline_stage": "1"})
    assert ticket.properties["hs_pipeline"] == "0"


def test_unique_value_conflict_and_upsert(client: Any, box: HubSpotSandbox):
    box.define_property("tickets", "fullkit_handoff_id", "string", "text", has_unique_value=True)
    first = _create(
        client,
        "tickets",
        {"subject": "A", "hs_pipeline_stage": "1", "fullkit_handoff_id": "hubspot:1:1"},
    )

    with pytest.raises(ApiException) as exc:
        _create(
            client,
            "tickets",
            {"subject": "B", "hs_pipeline_stage": "1", "fullkit_handoff_id": "hubspot:1:1"},
        )
    assert exc.value.status == 400
    body = _error(exc)
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].endswith(f"{first.id} already has that value.")

    def upsert(value: str) -> Any:
        return client.crm.objects.batch_api.upsert(
            "tickets",
            BatchInputSimplePublicObjectBatchInputUpsert(
                inputs=[
                    SimplePublicObjectBatchInputUpsert(
                        id=value,
                        id_property="fullkit_handoff_id",
                        properties={"subject": "Upserted", "hs_pipeline_stage": "2"},
                    )
                ]
            ),
        )

    again = upsert("hubspot:1:1").results[0]
    fresh = upsert("hubspot:2:1").results[0]
    assert (again.id, again.new) == (first.id, False)
    assert fresh.new is True and fresh.properties["fullkit_handoff_id"] == "hubspot:2:1"
    assert len(box.tickets()) == 2


def test_upsert_by_a_non_unique_property_is_refused(client: Any):
    with pytest.raises(ApiException) as exc:
        client.crm.objects.batch_api.upsert(
            "deals",
            BatchInputSimplePublicObjectBatchInputUpsert(
                inputs=[
                    SimplePublicObjectBatchInputUpsert(
                        id="x", id_property="dealname", properties={"amount": "1"}
                    )
                ]
            ),
        )
    assert exc.value.status == 400


def test_search_filters_sorts_and_pages(client: Any, box: HubSpotSandbox):
    won = [box.create_deal({"dealname": f"W{i}", "dealstage": "closedwon"}) for i in range(3)]
    box.create_deal({"dealname": "Lost", "dealstage": "closedlost"})

    page = client.crm.deals.search_api.do_search(
        PublicObjectSearchRequest(
            filter_groups=[
                {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]}
            ],
            sorts=["-dealname"],
            properties=["dealname"],
            limit=2,
        )
    )
    assert page.total == 3
    assert [r.properties["dealname"] for r in page.results] == ["W2", "W1"]
    rest = client.crm.deals.search_api.do_search(
        PublicObjectSearchRequest(
            filter_groups=[
                {
                    "filters": [
                        {"propertyName": "dealstage", "operator": "IN", "values": ["closedwon"]}
                    ]
                }
            ],
            sorts=["-dealname"],
            limit=2,
            after=page.paging.next.after,
        )
    )
    assert [r.id for r in rest.results] == [won[0]]
    assert rest.paging is None


def test_search_is_eventually_consistent_when_lagging(client: Any, box: HubSpotSandbox):
    box.search_lag_seconds = 3600
    deal_id = box.create_deal({"dealname": "Fresh"})

    found = client.crm.deals.search_api.do_search(PublicObjectSearchRequest(limit=10))

    assert found.total == 0
    assert client.crm.deals.basic_api.get_by_id(deal_id).id == deal_id


# ----------------------------------------------------------- associations v4


def test_v4_default_association_and_batch_read(client: Any, box: HubSpotSandbox):
    deal_id = box.create_deal({"dealname": "D"}, company={"name": "Co"})
    lonely = box.create_deal({"dealname": "alone"})
    ticket = _create(client, "tickets", {"subject": "T", "hs_pipeline_stage": "1"})
    v4 = client.crm.associations.v4

    v4.basic_api.create_default("tickets", ticket.id, "deals", deal_id)
    v4.basic_api.create_default("tickets", ticket.id, "deals", deal_id)  # idempotent

    page = v4.basic_api.get_page("deals", deal_id, "tickets")
    assert [(r.to_object_id, [t.type_id for t in r.association_types]) for r in page.results] == [
        (ticket.id, [27])
    ]
    answer = v4.batch_api.get_page(
        "deals",
        "companies",
        BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": deal_id}, {"id": lonely}]),
    )
    types = {t.type_id for t in answer.results[0].to[0].association_types}
    assert types == {5, 341}
    assert answer.errors[0].sub_category == "crm.associations.NO_ASSOCIATIONS_FOUND"


# ------------------------------------------------------ owners, properties


def test_owners_by_email(client: Any, box: HubSpotSandbox):
    anna = box.add_owner("ops-anna@example.com")

    page = client.crm.owners.owners_api.get_page(email="OPS-anna@example.com")

    assert [(o.id, o.email) for o in page.results] == [(anna, "ops-anna@example.com")]
    assert client.crm.owners.owners_api.get_by_id(int(anna)).first_name == "Anna"
    paged = client.crm.owners.owners_api.get_page(limit=3)
    assert len(paged.results) == 3 and paged.paging.next.after == "3"


def test_properties_api_creates_and_refuses_duplicates(client: Any):
    props = client.crm.properties
    props.groups_api.create("deals", PropertyGroupCreate(name="fullkit", label="Fullkit"))
    body = PropertyCreate(
        name="fullkit_status",
        label="Fullkit status",
        type="enumeration",
        field_type="select",
        group_name="fullkit",
        options=[{"label": "Accepted", "value": "accepted", "hidden": False}],
    )
    created = props.core_api.create("deals", body)
    assert created.name == "fullkit_status"

    with pytest.raises(ApiException) as exc:
        props.core_api.create("deals", body)
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:
        props.groups_api.create("deals", PropertyGroupCreate(name="fullkit", label="Again"))
    assert exc.value.status == 409
    assert props.core_api.get_by_name("deals", "fullkit_status").options[0].value == "accepted"
    client.crm.deals.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"fullkit_status": "accepted"})
    )


# ------------------------------------------------- auth, limits, faults


def test_wrong_token_is_401(running: RunningSandbox):
    bad = HubSpot(access_token="not-the-token", host=running.url)
    with pytest.raises(ApiException) as exc:
        bad.crm.deals.basic_api.get_page()
    assert exc.value.status == 401
    assert _error(exc)["category"] == "INVALID_AUTHENTICATION"


def test_rate_limit_answers_429_with_hubspot_headers(client: Any, box: HubSpotSandbox):
    box.rate_limit = (3, 60.0)
    owners = client.crm.owners.owners_api
    remaining = [
        owners.get_page_with_http_info()[2]["X-HubSpot-RateLimit-Remaining"] for _ in range(3)
    ]

    with pytest.raises(ApiException) as exc:
        owners.get_page()

    assert remaining == ["2", "1", "0"]
    assert exc.value.status == 429
    headers = exc.value.headers
    assert headers["X-HubSpot-RateLimit-Max"] == "3"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "60000"
    body = json.loads(exc.value.body)
    assert (body["policyName"], body["errorType"]) == ("TEN_SECONDLY_ROLLING", "RATE_LIMIT")


def test_fail_next_injects_server_errors(client: Any, box: HubSpotSandbox):
    deal_id = box.create_deal({"dealname": "D"})
    box.fail_next(1, status=502, path_prefix="/crm/v3/objects/deals")

    with pytest.raises(ApiException) as exc:
        client.crm.deals.basic_api.get_by_id(deal_id)

    assert exc.value.status == 502
    assert client.crm.deals.basic_api.get_by_id(deal_id).id == deal_id
    assert [c.status for c in box.calls("GET")] == [502, 200]


def test_ticket_link_opens_in_a_browser(running: RunningSandbox, client: Any):
    ticket = _create(client, "tickets", {"subject": "Onboard <Acme>", "hs_pipeline_stage": "1"})
    url = running.sandbox.ui_url("tickets", ticket.id)

    with urllib.request.urlopen(url) as page:
        html = page.read().decode()

    assert url.endswith(f"/record/0-5/{ticket.id}")
    assert "Onboard &lt;Acme&gt;" in html


# -------------------------------------------------------------------- webhooks


def _events(delivery: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(delivery["body"])
    return events


def test_stage_change_in_the_ui_sends_a_signed_webhook(box: HubSpotSandbox, receiver: Receiver):
    deal_id = box.create_deal({"dealname": "D"}, owner_email="sales-sam@example.com")
    box.subscribe(receiver.url, SECRET, app_id=box.app_id)

    box.move_deal(deal_id, "closedwon")
    assert box.flush_webhooks(timeout=10)

    [delivery] = receiver.requests
    headers = delivery["headers"]
    assert Signature.is_valid(
        signature=headers["X-Hubspot-Signature-V3"],
        client_secret=SECRET,
        request_body=delivery["body"],
        http_uri=receiver.url,
        signature_version="v3",
        timestamp=headers["X-Hubspot-Request-Timestamp"],
    )
    assert Signature.is_valid(
        signature=headers["X-Hubspot-Signature"],
        client_secret=SECRET,
        request_body=delivery["body"],
        signature_version=headers["X-Hubspot-Signature-Version"],
    )
    [event] = _events(delivery)
    assert event["objectId"] == int(deal_id)
    assert (event["propertyName"], event["propertyValue"]) == ("dealstage", "closedwon")
    assert event["subscriptionType"] == "deal.propertyChange"
    assert event["changeSource"] == "CRM_UI" and event["attemptNumber"] == 0


def test_api_writes_are_marked_as_the_apps_own(
    client: Any, box: HubSpotSandbox, receiver: Receiver
):
    deal_id = box.create_deal({"dealname": "D"})
    box.subscribe(receiver.url, SECRET, app_id=box.app_id)

    client.crm.deals.basic_api.update(deal_id, SimplePublicObjectInput({"dealstage": "closedlost"}))
    client.crm.deals.basic_api.update(deal_id, SimplePublicObjectInput({"amount": "5"}))
    assert box.flush_webhooks(timeout=10)

    events = [e for d in receiver.requests for e in _events(d)]
    assert [(e["changeSource"], e["sourceId"]) for e in events] == [
        ("INTEGRATION", str(box.app_id))
    ]


def test_webhooks_are_batched_and_retried_on_5xx_only(box: HubSpotSandbox, receiver: Receiver):
    deals = [box.create_deal({"dealname": f"D{i}"}) for i in range(3)]
    box.subscribe(receiver.url, SECRET)
    receiver.statuses = [503, 204, 400]

    with box.hold_webhooks():
        for deal_id in deals:
            box.move_deal(deal_id, "closedwon")
    assert box.flush_webhooks(timeout=10)
    box.move_deal(deals[0], "contractsent")
    assert box.flush_webhooks(timeout=10)

    attempts = [[e["attemptNumber"] for e in _events(r)] for r in receiver.requests]
    assert attempts == [[0, 0, 0], [1, 1, 1], [0]]
    assert [d.status for d in box.deliveries] == [503, 204, 400]


def test_send_events_delivers_a_hand_made_duplicate(box: HubSpotSandbox, receiver: Receiver):
    deal_id = box.create_deal({"dealname": "D"})
    box.subscribe(receiver.url, SECRET)
    event = box.deal_event(deal_id, "closedwon")

    assert box.send_events([event]) == 204
    assert box.send_events([event, {**event, "eventId": event["eventId"] + 1}]) == 204
    assert [len(_events(r)) for r in receiver.requests] == [1, 2]


def test_task_created_with_its_deal_association(client: Any, box: HubSpotSandbox):
    deal_id = box.create_deal({"dealname": "D"}, owner_email="sales-sam@example.com")
    owner = box.get("deals", deal_id)["properties"]["hubspot_owner_id"]
    task = _create(
        client,
        "tasks",
        {
            "hs_task_subject": "Hand-off returned: 1 item missing",
            "hs_timestamp": "2026-11-27",
            "hubspot_owner_id": owner,
        },
        associations=[_assoc(deal_id, 216)],
    )

    [found] = box.tasks_for_deal(deal_id)
    assert found["id"] == task.id
    assert found["properties"]["hs_task_status"] == "NOT_STARTED"
    assert found["properties"]["hs_timestamp"] == "2026-11-27T00:00:00.000Z"


def test_raw_requests_reach_the_sandbox_through_base_url(running: RunningSandbox):
    client = running.client()

    details = client.api_request({"method": "GET", "path": "/account-info/v3/details"}).json()

    assert details["portalId"] == running.sandbox.portal_id
    assert running.url.endswith(details["uiDomain"])
