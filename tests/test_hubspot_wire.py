"""What real HubSpot answers at real sizes, through the sandbox over real HTTP: paged
associations, history batches of 50, locked and migrating portals, the daily limit, EU
UI domains and files attached to notes and emails."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from bridge.rules import load_rules
from bridge.settings import Settings
from connectors.hubspot import HubSpotConnector
from connectors.hubspot_client import daily_reset
from connectors.hubspot_ticket import HubSpotTicketTarget
from kernel.connector import OpsRequest, PushBack
from kernel.errors import QuotaError, RetryableError
from kernel.mapping import FieldSpec, Mapping
from sandbox import RunningSandbox
from sandbox.hubspot import WriteSource
from tests.conftest import ROOT, sandbox_settings
from tests.e2e import ORDER_FORM

MAPPING = Mapping(
    crm="hubspot",
    stages={"contractsent": "contractsent", "closedwon": "closedwon"},
    deal=(FieldSpec("amount", "amount", "number"),),
    company=(FieldSpec("name", "name"),),
    contact=(FieldSpec("email", "email"), FieldSpec("role", "contact_role")),
    line_item=(FieldSpec("name", "name"), FieldSpec("quantity", "quantity", "number")),
)


def hub(running: RunningSandbox) -> HubSpotConnector:
    return HubSpotConnector(sandbox_settings(running), MAPPING)


def big_deal(running: RunningSandbox, contacts: int = 250, line_items: int = 120) -> str:
    box = running.sandbox
    tag = len(box.all("deals"))
    deal_id = box.create_deal(
        {"dealname": f"Big {tag}", "dealstage": "contractsent", "amount": "90000"},
        company={"name": f"Big {tag}"},
        contacts=[{"email": f"person{n}.{tag}@big.test"} for n in range(contacts)],
        line_items=[{"name": f"Item {n}", "quantity": "1"} for n in range(line_items)],
    )
    box.move_deal(deal_id, "closedwon")
    box.reset_calls()
    return deal_id


def paths(running: RunningSandbox, method: str, prefix: str) -> list[str]:
    return [call.path for call in running.sandbox.calls(method, prefix)]


# --- associations are paged ---------------------------------------------------------


def test_a_deal_with_250_contacts_and_120_line_items_is_read_whole(
    running: RunningSandbox,
) -> None:
    deal_id = big_deal(running)

    packet = hub(running).fetch_packets([deal_id])[deal_id]

    assert len(packet.contacts) == 250
    assert all("role" not in contact for contact in packet.contacts)
    assert len({contact["email"] for contact in packet.contacts}) == 250
    assert len(packet.line_items) == 120
    assert packet.company == {"name": packet.name}
    # The read embedded the first 100 of each; the list endpoint gave the rest, once each.
    listed = paths(running, "GET", "/crm/v4/objects/deals/")
    assert sorted(path.rsplit("/", 1)[1] for path in listed) == ["contacts", "line_items"]


def test_many_deals_follow_each_deals_own_association_cursor(running: RunningSandbox) -> None:
    with running.sandbox.lock:
        running.sandbox.association_batch_page = 100  # reach page 3 without 1000 contacts
    try:
        big, small = big_deal(running), big_deal(running, contacts=3, line_items=2)
        packets = hub(running).fetch_packets([big, small])
    finally:
        with running.sandbox.lock:
            running.sandbox.association_batch_page = 500
    assert (len(packets[big].contacts), len(packets[big].line_items)) == (250, 120)
    assert (len(packets[small].contacts), len(packets[small].line_items)) == (3, 2)
    # contacts: pages 1, 2, 3 of the big deal (page 1 with the small one's only page)
    assert len(paths(running, "POST", "/crm/v4/associations/deals/contacts/")) == 3


def test_the_sandbox_embeds_100_associations_with_a_cursor(running: RunningSandbox) -> None:
    deal_id = big_deal(running, contacts=150, line_items=0)
    answer = requests.get(
        f"{running.url}/crm/v3/objects/deals/{deal_id}",
        params={"associations": "contacts"},
        headers={"Authorization": f"Bearer {running.access_token}"},
        timeout=5,
    ).json()
    contacts = answer["associations"]["contacts"]
    assert len(contacts["results"]) == 100
    after = contacts["paging"]["next"]["after"]
    rest = requests.get(
        f"{running.url}/crm/v4/objects/deals/{deal_id}/associations/contacts",
        params={"limit": 500, "after": after},
        headers={"Authorization": f"Bearer {running.access_token}"},
        timeout=5,
    ).json()
    assert len(rest["results"]) == 50 and "paging" not in rest


def _pushback(deal_id: str) -> PushBack:
    return PushBack(
        handoff_id=f"hubspot:{deal_id}:1",
        deal_id=deal_id,
        return_stage_ref="contractsent",
        missing=("Set the requested kickoff date",),
        owner_ref=None,
        returned_at=dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC),
    )


def test_a_return_task_on_page_two_of_the_deals_tasks_is_found_not_made_again(
    running: RunningSandbox,
) -> None:
    box = running.sandbox
    deal_id = big_deal(running, contacts=1, line_items=1)
    # A busy deal: 500 earlier tasks fill the first page of its task associations.
    with box.lock:
        box.create_many(
            "tasks",
            [({"hs_task_subject": f"Call {n}", "hs_timestamp": "1764662400000"},
              [("deals", deal_id, 216)]) for n in range(500)],
            WriteSource.user(None),
        )  # fmt: skip
    connector = hub(running)
    first = connector.create_return_tasks([_pushback(deal_id)])

    again = connector.create_return_tasks([_pushback(deal_id)], may_exist=True)

    assert again == first
    assert len(box.tasks_for_deal(deal_id)) == 501
    assert len(paths(running, "POST", "/crm/v4/associations/deals/tasks/batch/read")) == 2


# --- history batches ----------------------------------------------------------------


def test_reading_120_deals_with_stage_history_takes_three_batches(
    running: RunningSandbox,
) -> None:
    box = running.sandbox
    ids = [box.create_deal({"dealname": f"Quarter end {n}"}) for n in range(120)]
    box.reset_calls()

    packets = hub(running).fetch_packets(ids)

    assert sorted(packets) == sorted(ids)
    assert len(box.calls("POST", "/crm/v3/objects/deals/batch/read")) == 3


def test_the_sandbox_refuses_a_history_batch_over_50(running: RunningSandbox) -> None:
    answer = requests.post(
        f"{running.url}/crm/v3/objects/deals/batch/read",
        json={"inputs": [{"id": str(n)} for n in range(51)], "properties": [],
              "propertiesWithHistory": ["dealstage"]},
        headers={"Authorization": f"Bearer {running.access_token}"},
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 400
    assert answer.json()["category"] == "VALIDATION_ERROR"


# --- try again later ----------------------------------------------------------------


def test_a_locked_portal_is_retried_after_two_seconds(running: RunningSandbox) -> None:
    deal_id = big_deal(running, contacts=1, line_items=1)
    running.sandbox.fail_next(1, status=423, path_prefix="/crm/v3/objects/deals")
    with pytest.raises(RetryableError) as caught:
        hub(running).fetch_packets([deal_id])
    assert caught.value.retry_after == 2.0
    assert deal_id in hub(running).fetch_packets([deal_id])


def test_a_migrating_portal_is_retried_when_hubspot_says(running: RunningSandbox) -> None:
    deal_id = big_deal(running, contacts=1, line_items=1)
    running.sandbox.fail_next(1, 477, "/crm/v3/objects/deals", retry_after=3600)
    with pytest.raises(RetryableError) as caught:
        hub(running).fetch_packets([deal_id])
    assert caught.value.retry_after == 3600.0
    assert "migration" in str(caught.value)


@pytest.fixture
def berlin(running: RunningSandbox) -> Iterator[RunningSandbox]:
    with running.sandbox.lock:
        running.sandbox.time_zone = "Europe/Berlin"
    yield running
    with running.sandbox.lock:
        running.sandbox.time_zone = "UTC"


def test_a_spent_daily_limit_waits_for_midnight_in_the_portal(berlin: RunningSandbox) -> None:
    deal_id = big_deal(berlin, contacts=1, line_items=1)
    berlin.sandbox.exhaust_daily_limit(1, "/crm/v3/objects/deals")
    with pytest.raises(QuotaError) as caught:
        hub(berlin).fetch_packets([deal_id])
    error = caught.value
    assert error.zone == "Europe/Berlin"
    assert error.resets_at > dt.datetime.now(dt.UTC)
    assert error.waiting().startswith("waiting for HubSpot's daily API limit to reset at ")


def test_the_daily_reset_is_the_next_midnight_in_the_portals_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    afternoon = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC)
    assert daily_reset(afternoon, berlin) == dt.datetime(2026, 12, 3, tzinfo=berlin)
    late_evening_utc = dt.datetime(2026, 12, 2, 23, 30, tzinfo=dt.UTC)  # 00:30 in Berlin
    # Just past midnight the reset is late, not a day away: look again in minutes.
    assert daily_reset(late_evening_utc, berlin) - late_evening_utc == dt.timedelta(minutes=5)


# --- links use the portal's uiDomain ------------------------------------------------


@pytest.fixture
def eu_portal(running: RunningSandbox) -> Iterator[Settings]:
    with running.sandbox.lock:
        running.sandbox.ui_domain = "app-eu1.hubspot.com"
    settings = Settings(
        HUBSPOT_ACCESS_TOKEN=running.access_token, HUBSPOT_API_BASE=running.url
    )  # no HUBSPOT_APP_BASE: the portal says where its UI is
    yield settings
    with running.sandbox.lock:
        running.sandbox.ui_domain = None


def test_eu_portal_links_point_at_the_eu_ui(running: RunningSandbox, eu_portal: Settings) -> None:
    deal_id = big_deal(running, contacts=1, line_items=1)
    portal = running.sandbox.portal_id
    packet = HubSpotConnector(eu_portal, MAPPING).fetch_packets([deal_id])[deal_id]
    assert packet.url == f"https://app-eu1.hubspot.com/contacts/{portal}/record/0-3/{deal_id}"

    request = OpsRequest(
        handoff_id=f"hubspot:{deal_id}:1", crm="hubspot", deal_id=deal_id, kit_id="k",
        kit_title="Kit", options={}, owner_email=None, subject="Onboard", summary="All there",
        expected_kickoff=dt.date(2026, 12, 9), packet=packet,
    )  # fmt: skip
    result = HubSpotTicketTarget(eu_portal).create([request])[request.handoff_id]
    assert result.link == f"https://app-eu1.hubspot.com/contacts/{portal}/record/0-5/{result.ref}"


# --- attachments --------------------------------------------------------------------


def test_attachments_come_from_the_deals_notes_and_emails(running: RunningSandbox) -> None:
    box = running.sandbox
    deal_id = big_deal(running, contacts=1, line_items=1)
    file_ids = [
        box.attach_file(deal_id, "Signed order form - Big", "pdf"),
        box.attach_file(deal_id, "Security questionnaire", "docx", via="emails"),
    ]
    box.reset_calls()

    packet = hub(running).fetch_packets([deal_id], with_attachments=True)[deal_id]

    assert [(a["name"], a["extension"], a["source"]) for a in packet.attachments] == [
        ("Signed order form - Big", "pdf", "note"),
        ("Security questionnaire", "docx", "email"),
    ]
    assert all(a["type"] == "DOCUMENT" and a["size"] > 0 for a in packet.attachments)
    files = [c for c in box.calls() if c.path.startswith("/files/")]
    # Hidden files: read by id, since HubSpot's files search never lists them.
    assert sorted(c.path for c in files) == [f"/files/v3/files/{i}" for i in sorted(file_ids)]


def test_attachments_are_not_read_unless_asked_for(running: RunningSandbox) -> None:
    deal_id = big_deal(running, contacts=1, line_items=1)
    running.sandbox.attach_file(deal_id, "Signed order form", "pdf")
    running.sandbox.reset_calls()
    packet = hub(running).fetch_packets([deal_id])[deal_id]
    assert packet.attachments == []
    touched: list[Any] = running.sandbox.calls(path_prefix="/files/")
    assert touched == [] and running.sandbox.calls(path_prefix="/crm/v3/objects/notes") == []


def test_a_daily_limit_before_the_time_zone_is_known_is_checked_hourly(
    running: RunningSandbox,
) -> None:
    deal_id = big_deal(running, contacts=1, line_items=1)
    running.sandbox.exhaust_daily_limit(2)  # the deal read, then the account details
    with pytest.raises(QuotaError) as caught:
        hub(running).fetch_packets([deal_id])
    assert "time zone is unknown" in caught.value.zone
    assert caught.value.resets_at - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    assert deal_id in hub(running).fetch_packets([deal_id])


def test_only_kits_that_check_attachments_ask_for_them(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    (kit,) = [k for k in load_rules(rules).kits if k.crm == "hubspot"]
    assert kit.uses("attachments")  # the shipped kit's signed order form for enterprise deals
    path = rules / "kits" / "10-new-customer.yaml"
    shipped = path.read_text()
    path.write_text(shipped[: shipped.index("\n  - id: signed-order-form")] + "\n")
    (kit,) = [k for k in load_rules(rules).kits if k.crm == "hubspot"]
    assert not kit.uses("attachments")
    path.write_text(path.read_text() + ORDER_FORM)
    (kit,) = [k for k in load_rules(rules).kits if k.crm == "hubspot"]
    assert kit.uses("attachments")
