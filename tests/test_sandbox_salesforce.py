"""The Salesforce sandbox, driven by simple-salesforce itself and by raw requests for
the wire shapes a connector must parse."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from defusedxml import ElementTree
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.salesforce import SalesforceSandbox
from sandbox.server import RunningSalesforceSandbox, start_salesforce_sandbox

API = "/services/data/v59.0"
SOAPENV = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUT = "{http://soap.sforce.com/2005/09/outbound}"
SF = "{urn:sobject.enterprise.soap.sforce.com}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
ACK = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


@pytest.fixture(scope="module")
def served() -> Iterator[RunningSalesforceSandbox]:
    running = start_salesforce_sandbox()
    running.sandbox.seed_default_org()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def org() -> Iterator[RunningSalesforceSandbox]:
    """An org of its own, for tests that spend its limit or expire its sessions."""
    running = start_salesforce_sandbox()
    running.sandbox.seed_default_org()
    try:
        yield running
    finally:
        running.stop()


def raw(served: RunningSalesforceSandbox, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {served.access_token}"}
    return requests.request(method, f"{served.url}{path}", headers=headers, timeout=10, **kwargs)


def make_opportunity(served: RunningSalesforceSandbox, **fields: Any) -> str:
    return served.sandbox.create_opportunity(
        {"Name": "Acme renewal", "StageName": "Negotiation/Review", "Amount": 1500, **fields},
        account={"Name": "Acme", "Website": "https://acme.example"},
        contacts=[
            {"LastName": "Nobody", "Email": "nobody@acme.example"},
            {"LastName": "Bill", "Email": "bill@acme.example", "Role": "Billing"},
        ],
        line_items=[{"Name": "Pro plan", "Quantity": 3, "UnitPrice": 500}],
        files=[("Signed order form", "pdf")],
        owner_email="sales-sam@example.com",
    )


PACKET_QUERY = (
    "SELECT Id, Name, StageName, Amount, CloseDate, OwnerId, Owner.Email, AccountId, "
    "Account.Name, Account.Website, Fullkit_Status__c, "
    "(SELECT Role, IsPrimary, Contact.Email, Contact.Name FROM OpportunityContactRoles "
    "ORDER BY Contact.Name), "
    "(SELECT Quantity, UnitPrice, Product2.Name FROM OpportunityLineItems), "
    "(SELECT ContentDocument.Title, ContentDocument.FileExtension FROM ContentDocumentLinks), "
    "(SELECT Title, FileExtension FROM AttachedContentDocuments) "
    "FROM Opportunity WHERE Id IN ({ids}) ORDER BY Name LIMIT 200"
)


# ------------------------------------------------------------------ OAuth


def test_client_credentials_token_has_salesforce_shape(served: RunningSalesforceSandbox) -> None:
    box = served.sandbox
    box.add_client_app("eca-key", "eca-secret", run_as=box.integration_user)
    answer = requests.post(
        f"{served.url}/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("eca-key", "eca-secret"),
        timeout=10,
    )
    assert answer.status_code == 200
    token = answer.json()
    assert set(token) >= {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    }
    assert token["instance_url"] == served.url
    assert token["id"].endswith(f"/id/{box.org_id}/{box.integration_user}")
    assert token["token_type"] == "Bearer" and token["issued_at"].isdigit()

    wrong = requests.post(
        f"{served.url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "eca-key", "client_secret": "no"},
        timeout=10,
    )
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


def test_simple_salesforce_logs_in_with_client_credentials(
    served: RunningSalesforceSandbox,
) -> None:
    box = served.sandbox
    box.add_client_app("eca-key-2", "eca-secret-2", run_as=box.integration_user)
    sf = Salesforce(
        consumer_key="eca-key-2",
        consumer_secret="eca-secret-2",
        domain="fullkit-sandbox.my",
        session=served.session(),
    )
    assert sf.query("SELECT Id FROM User WHERE Email = 'ops-anna@example.com'")["totalSize"] == 1


def test_password_grant_and_soap_login(served: RunningSalesforceSandbox) -> None:
    box = served.sandbox
    box.add_user("api-user@example.com", "Api", "User", password="pw", security_token="TOK")
    box.add_client_app("pw-key", "pw-secret", run_as=None)
    sf = Salesforce(
        username="api-user@example.com",
        password="pw",
        security_token="TOK",
        domain="test",
        session=served.session(),
    )
    assert sf.query("SELECT Id FROM User LIMIT 1")["done"] is True
    form = {"grant_type": "password", "client_id": "pw-key", "client_secret": "pw-secret"}
    good = requests.post(
        f"{served.url}/services/oauth2/token",
        data={**form, "username": "api-user@example.com", "password": "pwTOK"},
        timeout=10,
    )
    assert good.status_code == 200
    bad = requests.post(
        f"{served.url}/services/oauth2/token",
        data={**form, "username": "api-user@example.com", "password": "pw"},
        timeout=10,
    )
    assert bad.json()["error"] == "invalid_grant"
    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(
            username="api-user@example.com",
            password="wrong",
            security_token="TOK",
            domain="test",
            session=served.session(),
        )


def test_expired_session_is_invalid_session_id_and_client_logs_in_again(
    org: RunningSalesforceSandbox,
) -> None:
    box = org.sandbox
    box.add_client_app("k", "s", run_as=box.integration_user)
    sf = Salesforce(consumer_key="k", consumer_secret="s", domain="x.my", session=org.session())
    first = sf.session_id
    box.expire_session(first)
    answer = requests.get(
        f"{org.url}{API}/limits", headers={"Authorization": f"Bearer {first}"}, timeout=10
    )
    assert answer.status_code == 401
    assert answer.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    # simple-salesforce refreshes a session it logged in itself.
    assert sf.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1
    assert sf.session_id != first


# ------------------------------------------------------------------ query


def test_packet_query_with_parents_subqueries_and_in(served: RunningSalesforceSandbox) -> None:
    complete = make_opportunity(served)
    bare = served.sandbox.create_opportunity({"Name": "Bare", "StageName": "Prospecting"})
    sf = served.client()
    # 15-character ids match like their 18-character forms, as in a real org.
    ids = f"'{complete[:15]}', '{bare}'"
    result = sf.query(PACKET_QUERY.format(ids=ids))
    assert result["totalSize"] == 2 and result["done"] is True
    first, second = result["records"]
    assert [first["Name"], second["Name"]] == ["Acme renewal", "Bare"]
    assert first["attributes"] == {
        "type": "Opportunity",
        "url": f"{API}/sobjects/Opportunity/{complete}",
    }
    assert first["Amount"] == 1500.0 and first["Owner"]["Email"] == "sales-sam@example.com"
    assert first["Account"]["Name"] == "Acme"
    roles = first["OpportunityContactRoles"]["records"]
    assert [(r["Role"], r["Contact"]["Email"]) for r in roles] == [
        ("Billing", "bill@acme.example"),
        (None, "nobody@acme.example"),
    ]
    item = first["OpportunityLineItems"]["records"][0]
    assert (item["Quantity"], item["Product2"]["Name"]) == (3.0, "Pro plan")
    link = first["ContentDocumentLinks"]["records"][0]["ContentDocument"]
    assert (link["Title"], link["FileExtension"]) == ("Signed order form", "pdf")
    assert first["AttachedContentDocuments"]["records"][0]["Title"] == "Signed order form"
    # No children is null, not an empty list; no account is a null parent.
    assert second["OpportunityContactRoles"] is None and second["Account"] is None


def test_where_and_order(served: RunningSalesforceSandbox) -> None:
    for name, amount in (("W-b", 10), ("W-a", 20), ("W-c", 30)):
        served.sandbox.create_opportunity(
            {"Name": name, "StageName": "Prospecting", "Amount": amount}
        )
    sf = served.client()
    rows = sf.query(
        "SELECT Name FROM Opportunity WHERE Name LIKE 'W-%' AND Amount >= 20 "
        "AND StageName = 'prospecting' ORDER BY Amount DESC"
    )["records"]
    assert [r["Name"] for r in rows] == ["W-c", "W-a"]


def test_previous_stage_from_field_history(served: RunningSalesforceSandbox) -> None:
    opportunity = make_opportunity(served)
    served.sandbox.move_opportunity(opportunity, "Closed Won")
    history = served.client().query(
        "SELECT OldValue, NewValue, CreatedDate FROM OpportunityFieldHistory "
        f"WHERE OpportunityId = '{opportunity}' AND Field = 'StageName' ORDER BY CreatedDate DESC"
    )["records"]
    assert (history[0]["OldValue"], history[0]["NewValue"]) == ("Negotiation/Review", "Closed Won")


def test_query_pages_at_2000_rows(org: RunningSalesforceSandbox) -> None:
    box = org.sandbox
    for n in range(2001):
        box.store.create(box.store.object("Account"), {"Name": f"A{n:04d}"}, box.integration_user)
    sf = org.client()
    first = sf.query("SELECT Id, Name FROM Account")
    assert (first["totalSize"], first["done"], len(first["records"])) == (2001, False, 2000)
    assert first["nextRecordsUrl"].startswith(f"{API}/query/")
    rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] is True and [r["Name"] for r in rest["records"]] == ["A2000"]
    assert len(sf.query_all("SELECT Id FROM Account")["records"]) == 2001


def test_query_errors_name_what_the_org_lacks(served: RunningSalesforceSandbox) -> None:
    unknown_field = raw(
        served, "GET", f"{API}/query", params={"q": "SELECT Id, Plan_Tier__c FROM Opportunity"}
    )
    assert unknown_field.status_code == 400
    [error] = unknown_field.json()
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Plan_Tier__c' on entity 'Opportunity'" in error["message"]
    cases = {
        "SELECT Id FROM Deal": "INVALID_TYPE",
        "SELECT Id, (SELECT Id FROM Roles) FROM Opportunity": "INVALID_TYPE",
        "SELECT Id, Acount.Name FROM Opportunity": "INVALID_FIELD",
        "SELECT Id FROM Opportunity WHERE": "MALFORMED_QUERY",
        "SELECT FROM Opportunity": "MALFORMED_QUERY",
        # A filter value of the wrong kind is refused, not silently unmatched.
        "SELECT Id FROM Opportunity WHERE CloseDate = '2026-12-31'": "INVALID_FIELD",
        "SELECT Id FROM Opportunity WHERE Name = 12": "INVALID_FIELD",
        "SELECT Id FROM Opportunity WHERE Id IN ('hubspot-123')": "INVALID_QUERY_FILTER_OPERATOR",
    }
    for query, code in cases.items():
        answer = raw(served, "GET", f"{API}/query", params={"q": query})
        assert (answer.status_code, answer.json()[0]["errorCode"]) == (400, code), query


def test_a_query_longer_than_a_uri_may_be_is_refused(served: RunningSalesforceSandbox) -> None:
    # About 580 ids fit in the 16,384 bytes Salesforce takes for a URI; a connector must
    # cut its IN lists (or send the query inside a composite request).
    ids = ", ".join(f"'0065g{n:010d}AAA'" for n in range(800))
    query = f"SELECT Id FROM Opportunity WHERE Id IN ({ids})"
    assert raw(served, "GET", f"{API}/query", params={"q": query}).status_code == 414
    inside = served.client().restful(
        "composite",
        method="POST",
        json={
            "compositeRequest": [
                {"method": "GET", "url": f"{API}/query?q={query}", "referenceId": "q"}
            ]
        },
    )
    assert inside["compositeResponse"][0]["httpStatusCode"] == 200


# ---------------------------------------------------------------- sObjects


def test_sobject_crud_and_field_checks(served: RunningSalesforceSandbox) -> None:
    sf = served.client()
    opportunity = make_opportunity(served)
    assert sf.Opportunity.get(opportunity)["StageName"] == "Negotiation/Review"
    assert sf.Opportunity.update(opportunity, {"Fullkit_Status__c": "returned"}) == 204
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Opportunity.update(opportunity, {"Fullkit_Stat__c": "returned"})
    assert unknown.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as stage:
        sf.Opportunity.update(opportunity, {"StageName": "Won-ish"})
    assert stage.value.content == [
        {
            "message": "Stage: bad value for restricted picklist field: Won-ish",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "fields": ["StageName"],
        }
    ]
    with pytest.raises(SalesforceMalformedRequest) as missing:
        sf.Task.create({"Subject": "x", "WhatId": opportunity, "ActivityDate": "tomorrow"})
    assert missing.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"
    with pytest.raises(SalesforceMalformedRequest) as required:
        sf.Opportunity.create({"Name": "No stage"})
    assert required.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert required.value.content[0]["fields"] == ["StageName", "CloseDate"]
    gone = raw(served, "GET", f"{API}/sobjects/Opportunity/006{'0' * 12}")
    assert (gone.status_code, gone.json()[0]["errorCode"]) == (404, "NOT_FOUND")
    no_type = raw(served, "GET", f"{API}/sobjects/Deal/describe")
    assert (no_type.status_code, no_type.json()[0]["errorCode"]) == (404, "NOT_FOUND")
    # Nothing above changed the opportunity but the one valid write.
    row = served.sandbox.get("Opportunity", opportunity)
    assert (row["StageName"], row["Fullkit_Status__c"]) == ("Negotiation/Review", "returned")


def test_a_field_not_deployed_or_not_writable(org: RunningSalesforceSandbox) -> None:
    box, sf = org.sandbox, org.client()
    opportunity = make_opportunity(org)
    box.remove_field("Opportunity", "Fullkit_Ops_Link__c")
    box.restrict_field("Opportunity", "Fullkit_Ops_Owner__c")
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert "Fullkit_Ops_Link__c" not in fields
    assert fields["Fullkit_Ops_Owner__c"]["updateable"] is False
    assert (fields["Fullkit_Expected_Kickoff__c"]["type"], fields["Fullkit_Status__c"]["type"]) == (
        "date",
        "picklist",
    )
    with pytest.raises(SalesforceMalformedRequest) as link:
        sf.Opportunity.update(opportunity, {"Fullkit_Ops_Link__c": "https://ops.example/1"})
    assert link.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as owner:
        sf.Opportunity.update(opportunity, {"Fullkit_Ops_Owner__c": "ops-anna@example.com"})
    assert owner.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_upsert_twice_is_one_case(served: RunningSalesforceSandbox) -> None:
    sf = served.client()
    opportunity = make_opportunity(served)
    case = {"Subject": "Onboard Acme", "Fullkit_Opportunity__c": opportunity}
    key = "Fullkit_Handoff_Id__c/salesforce:" + opportunity + ":1"
    assert sf.Case.upsert(key, case) == 201
    assert sf.Case.upsert(key, {**case, "Subject": "Onboard Acme (retry)"}) == 200
    found = sf.query(
        f"SELECT Id, Subject FROM Case WHERE Fullkit_Opportunity__c = '{opportunity}'"
    )["records"]
    assert [c["Subject"] for c in found] == ["Onboard Acme (retry)"]
    answer = raw(served, "PATCH", f"{API}/sobjects/Case/{key}", json={"Subject": "again"})
    assert answer.status_code == 200
    assert answer.json() == {"id": found[0]["Id"], "success": True, "errors": [], "created": False}
    # A plain create with the same external id is refused by the org itself.
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        sf.Case.create({**case, "Fullkit_Handoff_Id__c": f"salesforce:{opportunity}:1"})
    assert duplicate.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    assert found[0]["Id"] in duplicate.value.content[0]["message"]


def test_collections_all_or_none_rolls_back(served: RunningSalesforceSandbox) -> None:
    opportunity = make_opportunity(served)
    records = [
        {"attributes": {"type": "Opportunity"}, "id": opportunity, "Fullkit_Status__c": "returned"},
        {"attributes": {"type": "Opportunity"}, "id": opportunity, "StageName": "Nope"},
    ]
    body = {"allOrNone": True, "records": records}
    answer = raw(served, "PATCH", f"{API}/composite/sobjects", json=body)
    assert answer.status_code == 200
    first, second = answer.json()
    assert first["success"] is False
    assert first["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert second["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert served.sandbox.get("Opportunity", opportunity).get("Fullkit_Status__c") is None

    tasks = [
        {"attributes": {"type": "Task"}, "Subject": "ok", "WhatId": opportunity},
        {"attributes": {"type": "Task"}, "Subject": "bad", "WhatId": opportunity, "Bogus__c": 1},
    ]
    partial = served.client().restful(
        "composite/sobjects", method="POST", json={"allOrNone": False, "records": tasks}
    )
    assert [r["success"] for r in partial] == [True, False]
    assert partial[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    subjects = [t["Subject"] for t in served.sandbox.all("Task") if t["WhatId"] == opportunity]
    assert subjects == ["ok"]


def test_composite_references_and_rollback(served: RunningSalesforceSandbox) -> None:
    sf = served.client()
    ok = sf.restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": f"{API}/sobjects/Account",
                    "referenceId": "acct",
                    "body": {"Name": "Composite Co"},
                },
                {
                    "method": "POST",
                    "url": f"{API}/sobjects/Opportunity",
                    "referenceId": "opp",
                    "body": {
                        "Name": "Composite deal",
                        "StageName": "Prospecting",
                        "CloseDate": "2026-12-31",
                        "AccountId": "@{acct.id}",
                    },
                },
            ],
        },
    )
    statuses = [r["httpStatusCode"] for r in ok["compositeResponse"]]
    assert statuses == [201, 201]
    opp_id = ok["compositeResponse"][1]["body"]["id"]
    assert (
        served.sandbox.get("Opportunity", opp_id)["AccountId"]
        == ok["compositeResponse"][0]["body"]["id"]
    )

    before = len(served.sandbox.all("Account"))
    failed = sf.restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": f"{API}/sobjects/Account",
                    "referenceId": "a",
                    "body": {"Name": "Rolled back"},
                },
                {
                    "method": "PATCH",
                    "url": f"{API}/sobjects/Opportunity/{opp_id}",
                    "referenceId": "b",
                    "body": {"StageName": "Nope"},
                },
            ],
        },
    )
    first, second = failed["compositeResponse"]
    assert first["httpStatusCode"] == 400 and first["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert second["body"][0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert len(served.sandbox.all("Account")) == before


# ------------------------------------------------------------------ limits


def test_daily_limit_and_limit_info(org: RunningSalesforceSandbox) -> None:
    box, sf = org.sandbox, org.client()
    box.set_daily_api_limit(5, used=3)
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 5, "Remaining": 1}
    assert sf.api_usage["api-usage"].used == 4 and sf.api_usage["api-usage"].total == 5
    sf.query("SELECT Id FROM User LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM User LIMIT 1")
    assert refused.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    answer = raw(org, "GET", f"{API}/limits")
    assert (answer.status_code, answer.headers["Sforce-Limit-Info"]) == (403, "api-usage=5/5")
    assert [c.status for c in box.calls(path_prefix=f"{API}/")][-3:] == [200, 403, 403]


# -------------------------------------------------------- outbound messages


@dataclass
class Receiver:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    failing: int = 0  # answer the next N deliveries with a 500 (no Ack)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        state.bodies.append(request.get_data())
        state.content_types.append(request.content_type or "")
        if state.failing:
            state.failing -= 1
            return Response("down", 500)(environ, start_response)
        return Response(ACK, 200, content_type="text/xml")(environ, start_response)

    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    state.url = f"http://127.0.0.1:{server.port}/webhooks/salesforce/outbound"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def notifications(body: bytes) -> tuple[Any, list[Any]]:
    root = ElementTree.fromstring(body)
    element = root.find(f"{SOAPENV}Body/{OUT}notifications")
    assert element is not None
    return element, element.findall(f"{OUT}Notification")


def test_outbound_message_envelope(org: RunningSalesforceSandbox, receiver: Receiver) -> None:
    box = org.sandbox
    action = box.add_outbound_message(receiver.url, stages=["Closed Won"])
    opportunity = make_opportunity(org)
    box.move_opportunity(opportunity, "Closed Won")
    [delivery] = box.deliver_outbound()
    assert delivery.acked and not box.pending_notifications()
    assert receiver.content_types == ["text/xml; charset=utf-8"]
    envelope, [item] = notifications(receiver.bodies[0])
    assert envelope.findtext(f"{OUT}OrganizationId") == box.org_id
    assert envelope.findtext(f"{OUT}ActionId") == action
    session = envelope.find(f"{OUT}SessionId")
    assert session is not None and session.get(f"{XSI}nil") == "true"
    assert (
        envelope.findtext(f"{OUT}EnterpriseUrl")
        == f"{org.url}/services/Soap/c/59.0/{box.org_id[:15]}"
    )
    assert (
        envelope.findtext(f"{OUT}PartnerUrl") == f"{org.url}/services/Soap/u/59.0/{box.org_id[:15]}"
    )
    assert (item.findtext(f"{OUT}Id") or "").startswith("04l")
    sobject = item.find(f"{OUT}sObject")
    assert sobject is not None and sobject.get(f"{XSI}type") == "sf:Opportunity"
    assert sobject.findtext(f"{SF}Id") == opportunity
    assert sobject.findtext(f"{SF}StageName") == "Closed Won"
    modified = box.get("Opportunity", opportunity)["LastModifiedDate"]
    assert sobject.findtext(f"{SF}LastModifiedDate") == modified.replace("+0000", "Z")


def test_outbound_retries_until_acked_and_redelivers(
    org: RunningSalesforceSandbox, receiver: Receiver
) -> None:
    box = org.sandbox
    box.add_outbound_message(receiver.url, stages=["Closed Won"])
    opportunity = make_opportunity(org)
    box.move_opportunity(opportunity, "Closed Won")
    receiver.failing = 1
    assert [d.acked for d in box.deliver_outbound()] == [False]
    assert len(box.pending_notifications()) == 1
    assert [d.acked for d in box.deliver_outbound()] == [True]
    assert box.deliver_outbound() == []  # acked: nothing left to send
    [pending] = [n for n in box.store.data.notifications]
    box.redeliver(pending.id, times=5)
    ids = [notifications(b)[1][0].findtext(f"{OUT}Id") for b in receiver.bodies]
    assert ids == [pending.id] * 7


def test_outbound_batches_and_flow_criteria(
    org: RunningSalesforceSandbox, receiver: Receiver
) -> None:
    box = org.sandbox
    box.add_outbound_message(receiver.url, stages=["Closed Won"])
    deals = [
        box.create_opportunity({"Name": f"Burst {n}", "StageName": "Negotiation/Review"})
        for n in range(150)
    ]
    for deal in deals:
        box.move_opportunity(deal, "Closed Won")
    # Other stages, and saves that leave the stage alone, meet no entry criteria.
    box.update("Opportunity", deals[0], {"Fullkit_Status__c": "accepted"})
    box.update("Opportunity", deals[1], {"StageName": "Negotiation/Review"})
    sizes = [len(notifications(b)[1]) for b in (d.body.encode() for d in box.deliver_outbound())]
    assert sizes == [100, 50]
    # Any save that sets the stage fires the Flow again, an API write included.
    org.client().Opportunity.update(deals[1], {"StageName": "Closed Won"})
    [again] = box.deliver_outbound()
    assert len(notifications(again.body.encode())[1]) == 1


def test_flow_may_skip_saves_by_the_integration_user(
    org: RunningSalesforceSandbox, receiver: Receiver
) -> None:
    box = org.sandbox
    box.add_outbound_message(
        receiver.url, stages=["Closed Won"], skip_saves_by=["fullkit-integration@example.com"]
    )
    deal = box.create_opportunity({"Name": "Skip", "StageName": "Negotiation/Review"})
    org.client().Opportunity.update(deal, {"StageName": "Closed Won"})
    assert box.pending_notifications() == []
    box.move_opportunity(deal, "Negotiation/Review")
    box.move_opportunity(deal, "Closed Won", by="sales-sam@example.com")
    assert len(box.pending_notifications()) == 1


def test_every_api_call_is_counted(served: RunningSalesforceSandbox) -> None:
    served.sandbox.reset_calls()
    sf = served.client()
    sf.query("SELECT Id FROM User LIMIT 1")
    sf.Opportunity.describe()
    assert [(c.method, c.path) for c in served.sandbox.calls()] == [
        ("GET", f"{API}/query/"),
        ("GET", f"{API}/sobjects/Opportunity/describe"),
    ]


def test_sandbox_refuses_writes_it_would_not_accept_from_helpers() -> None:
    box = SalesforceSandbox()
    with pytest.raises(Exception, match="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"):
        box.create_opportunity({"Name": "x", "StageName": "closedwon"})


def test_many_children_page_on_their_own(org: RunningSalesforceSandbox) -> None:
    big = org.sandbox.create_opportunity(
        {"Name": "Big account", "StageName": "Negotiation/Review"},
        line_items=[{"Name": f"Seat {n:03d}", "Quantity": 1, "UnitPrice": 10} for n in range(250)],
    )
    sf = org.client()
    query = (
        "SELECT Id, (SELECT Product2.Name FROM OpportunityLineItems ORDER BY Product2.Name) "
        f"FROM Opportunity WHERE Id = '{big}'"
    )
    items = sf.query(query)["records"][0]["OpportunityLineItems"]
    assert (items["totalSize"], items["done"], len(items["records"])) == (250, False, 200)
    rest = sf.query_more(items["nextRecordsUrl"], identifier_is_url=True)
    names = [r["Product2"]["Name"] for r in items["records"] + rest["records"]]
    assert rest["done"] is True and names == [f"Seat {n:03d}" for n in range(250)]


def test_children_count_toward_the_batch_size(org: RunningSalesforceSandbox) -> None:
    box = org.sandbox
    for n in range(11):
        box.create_opportunity(
            {"Name": f"Batch {n:02d}", "StageName": "Prospecting"},
            line_items=[{"Name": "Seat", "Quantity": 1, "UnitPrice": 10}] * 190,
        )
    sf = org.client()
    query = (
        "SELECT Name, (SELECT Quantity FROM OpportunityLineItems) FROM Opportunity "
        "WHERE Name LIKE 'Batch%' ORDER BY Name"
    )
    first = sf.query(query)
    # 10 parents with 190 children each fill 1,910 of the 2,000 records a batch holds.
    assert (first["totalSize"], len(first["records"]), first["done"]) == (11, 10, False)
    assert [r["Name"] for r in sf.query_all(query)["records"]] == [
        f"Batch {n:02d}" for n in range(11)
    ]
