"""The sandbox's deal search as the sweep relies on it: HubSpot's "Date entered <stage>"
properties, its per-query result cap and its own per-second limit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.deals import PublicObjectSearchRequest, SimplePublicObjectInput
from hubspot.crm.deals.exceptions import ApiException

from sandbox import HubSpotSandbox, RunningSandbox, WriteSource, start_sandbox


@pytest.fixture
def running() -> Iterator[RunningSandbox]:
    box = HubSpotSandbox(rate_limit=None, search_result_cap=300)
    box.seed_default_portal()
    with start_sandbox(sandbox=box) as served:
        yield served


@pytest.fixture
def client(running: RunningSandbox) -> Any:
    return HubSpot(access_token=running.sandbox.access_token, host=running.url)


def entered(box: HubSpotSandbox, deal_id: str, stage: str) -> str | None:
    value: str | None = box.get("deals", deal_id)["properties"].get(f"hs_v2_date_entered_{stage}")
    return value


def won_before(moment: dt.datetime, **extra: Any) -> PublicObjectSearchRequest:
    cutoff = str(int(moment.timestamp() * 1000))
    return PublicObjectSearchRequest(
        filter_groups=[
            {
                "filters": [
                    {"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
                    {
                        "propertyName": "hs_v2_date_entered_closedwon",
                        "operator": "LTE",
                        "value": cutoff,
                    },
                ]
            }
        ],
        properties=["hs_v2_date_entered_closedwon"],
        **extra,
    )


def test_moving_a_deal_stamps_the_date_it_entered_the_stage(
    running: RunningSandbox, client: Any
) -> None:
    box = running.sandbox
    deal_id = box.create_deal({"dealname": "Acme", "dealstage": "contractsent"})
    assert entered(box, deal_id, "contractsent")  # created into it: entered it then
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    box.move_deal(deal_id, "closedwon", at=an_hour_ago)
    stamped = entered(box, deal_id, "closedwon")
    box.update("deals", deal_id, {"dealname": "Acme Inc"}, source=WriteSource.user(None))

    assert stamped == an_hour_ago.strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{an_hour_ago.microsecond // 1000:03d}Z"
    )
    assert entered(box, deal_id, "closedwon") == stamped  # other writes leave it alone
    read = client.crm.deals.basic_api.get_by_id(
        deal_id, properties=["hs_v2_date_entered_closedwon"]
    )
    assert read.properties["hs_v2_date_entered_closedwon"] == stamped
    found = client.crm.deals.search_api.do_search(won_before(an_hour_ago))
    assert [r.id for r in found.results] == [deal_id]
    assert (
        client.crm.deals.search_api.do_search(
            won_before(an_hour_ago - dt.timedelta(seconds=1))
        ).results
        == []
    )


def test_only_hubspot_writes_the_date_entered(running: RunningSandbox, client: Any) -> None:
    deal_id = running.sandbox.create_deal({"dealname": "Acme"})
    with pytest.raises(ApiException) as refused:
        client.crm.deals.basic_api.update(
            deal_id,
            SimplePublicObjectInput(properties={"hs_v2_date_entered_closedwon": "1700000000000"}),
        )
    assert refused.value.status == 400
    assert "read only" in refused.value.body


def test_search_pages_no_further_than_its_result_cap(running: RunningSandbox, client: Any) -> None:
    for i in range(5):
        running.sandbox.create_deal({"dealname": f"D{i}", "dealstage": "closedwon"})
    now = dt.datetime.now(dt.UTC)

    assert len(client.crm.deals.search_api.do_search(won_before(now, limit=200)).results) == 5
    with pytest.raises(ApiException) as capped:
        client.crm.deals.search_api.do_search(won_before(now, limit=200, after="200"))
    assert capped.value.status == 400
    with pytest.raises(ApiException) as too_many:
        client.crm.deals.search_api.do_search(won_before(now, limit=201))
    assert too_many.value.status == 400


def test_search_has_its_own_per_second_limit(running: RunningSandbox, client: Any) -> None:
    running.sandbox.search_rate_limit = (2, 60.0)
    request = PublicObjectSearchRequest(limit=1)
    client.crm.deals.search_api.do_search(request)
    client.crm.deals.search_api.do_search(request)

    with pytest.raises(ApiException) as limited:
        client.crm.deals.search_api.do_search(request)

    assert limited.value.status == 429
    assert '"policyName": "SECONDLY"' in limited.value.body
    client.crm.deals.basic_api.get_page(limit=1)  # other endpoints are not held back
