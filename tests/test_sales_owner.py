"""Sales owners by name: the decision keeps the deal owner's email and name as the CRM gave
them, reports group by that email and the console shows and filters by it.

A revops lead reads names, not HubSpot owner ids or Salesforce user ids.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import sessionmaker

from bridge import db, ledger
from bridge.cli import cli
from bridge.models import Attempt
from bridge.report import Filters, Group, Report, figures
from bridge.report_text import table
from bridge.settings import Settings
from tests.conftest import secret
from tests.console_client import signed_in_console
from tests.e2e import SALES, Stack, move_together, start_stack
from tests.test_e2e_salesforce import SfStack
from tests.test_e2e_salesforce import stack as sf_stack  # noqa: F401 - a fixture
from tests.test_report import _attempt, accepted, at, returned

AMOUNT = ("amount", "Deal amount must be above zero")


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def owner_reads(stack: Stack) -> list[str]:
    """The owner-by-id reads HubSpot received (the ops owners' lookups by email aside)."""
    return [c.path for c in stack.sandbox.calls("GET", "/crm/v3/owners/") if c.path[15:]]


def sales_owner(stack: Stack, deal_id: str) -> Any:
    history = stack.history(deal_id)
    assert history is not None
    return history["attempts"][-1]["sales_owner"]


# --- through the real stack ---------------------------------------------------------------


def test_a_hubspot_hand_off_keeps_the_owners_email_and_name(stack: Stack) -> None:
    owner_id = stack.sandbox.add_owner(SALES, "Sam", "Sales")
    deal_id = stack.complete_deal("Acme")
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()

    assert stack.history(deal_id)["owner"] == "ops"  # type: ignore[index]
    assert sales_owner(stack, deal_id) == {"id": owner_id, "email": SALES, "name": "Sam Sales"}


def test_a_batch_reads_each_owner_once_and_the_next_batch_none(stack: Stack) -> None:
    owners = [stack.sandbox.add_owner(f"rep-{n}@example.com", "Rep", str(n)) for n in range(3)]
    deals = [stack.complete_deal(f"Deal {n}", hubspot_owner_id=owners[n % 3]) for n in range(100)]
    stack.work()  # the creations' own webhooks: nothing to hand off
    stack.sandbox.reset_calls()
    move_together(stack, deals)
    stack.work()

    assert sorted(owner_reads(stack)) == sorted(f"/crm/v3/owners/{o}" for o in owners)
    assert sales_owner(stack, deals[4]) == {
        "id": owners[1], "email": "rep-1@example.com", "name": "Rep 1",
    }  # fmt: skip
    more = [stack.complete_deal(f"More {n}", hubspot_owner_id=owners[n % 3]) for n in range(6)]
    stack.work()
    stack.sandbox.reset_calls()
    move_together(stack, more)
    stack.work()

    assert owner_reads(stack) == []
    assert all(sales_owner(stack, d)["email"] for d in more)


@pytest.mark.parametrize("trouble", ["500", "404"])
def test_an_owner_that_cannot_be_read_still_hands_off_with_its_id(
    stack: Stack, trouble: str
) -> None:
    deal_id = stack.complete_deal("Acme")
    owner_id = stack.deal(deal_id)["hubspot_owner_id"]
    if trouble == "500":
        stack.sandbox.fail_next(1, status=500, path_prefix=f"/crm/v3/owners/{owner_id}")
    else:  # the user was deactivated: HubSpot answers 404 for the id
        del stack.sandbox.owners[owner_id]
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()

    history = stack.history(deal_id)
    assert history is not None and history["attempts"][-1]["state"] == "ops_created"
    assert sales_owner(stack, deal_id) == {"id": owner_id, "email": None, "name": None}
    assert len(stack.sandbox.tickets()) == 1


def test_a_salesforce_hand_off_keeps_the_owners_email_and_name(sf_stack: SfStack) -> None:  # noqa: F811
    deal_id = sf_stack.opportunity("Acme")
    sf_stack.box.move_opportunity(deal_id, "Closed Won")
    sf_stack.work()

    assert sf_stack.state(deal_id) == "ops_created"
    with sf_stack.runtime.sessions() as session:
        attempt = session.query(Attempt).filter_by(crm="salesforce", deal_id=deal_id).one()
        decision = attempt.decision
        assert decision is not None
        assert decision.owner_ref == sf_stack.box.user_by_email("sales-sam@example.com")
        assert (decision.owner_email, decision.owner_name) == ("sales-sam@example.com", "Sam Sales")


# --- the report and the console -----------------------------------------------------------

# (crm, deal, owner id, email as the CRM spelled it, name, outcome)
LEDGER = [
    ("hubspot", "21", "75310", "Sam.Sales@Example.com", "Sam Sales", accepted(at(0, 10))),
    # Judged before Fullkit kept emails: the same HubSpot id counts under Sam's email.
    ("hubspot", "22", "75310", None, None, returned(at(0, 11), AMOUNT)),
    ("salesforce", "006000000000031AAA", "0055g00000Owner1AAA", "sam.sales@example.com",
     "Sam Sales", accepted(at(1, 9))),
    ("hubspot", "23", "75311", "rita@example.com", "Rita Rep", returned(at(1, 10), AMOUNT)),
    ("hubspot", "24", "75399", None, None, accepted(at(1, 11))),
]  # fmt: skip


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker]:
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    made = db.session_factory(engine)
    with made() as session:
        for crm, deal, owner_id, email, name, outcome in LEDGER:
            attempt = _attempt(crm, deal, 1, "new-customer", owner_id, at(0, 9), outcome)
            assert attempt.decision is not None
            attempt.decision.owner_email, attempt.decision.owner_name = email, name
            session.add(attempt)
        session.commit()
    yield made
    engine.dispose()


def report(settings: Settings, *args: str) -> Any:
    env = {"FULLKIT_HOME": str(settings.home), "REDIS_URL": str(secret(settings.redis_url))}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    result = CliRunner().invoke(cli, ["report", "--by", "owner", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_report_counts_each_sales_owner_once_by_email(
    sessions: sessionmaker, settings: Settings
) -> None:
    data = json.loads(report(settings, "--format", "json"))
    groups = {g["key"]: (g["name"], g["journeys"]) for g in data["groups"]}
    assert groups == {
        "sam.sales@example.com": ("Sam Sales", 3),
        "rita@example.com": ("Rita Rep", 1),
        "75399": (None, 1),
    }
    table = report(settings)
    row = next(line for line in table.splitlines() if line.startswith("Sam Sales"))
    assert row.split()[:3] == ["Sam", "Sales", "3"]
    assert max(len(line) for line in table.splitlines()) <= 100


def test_two_sales_owners_of_one_name_are_told_apart_by_email() -> None:
    none = figures([])
    groups = (
        Group("sam@example.com", none, "Sam Sales"),
        Group("sam@other.example", none, "Sam Sales"),
        Group("rita@example.com", none, "Rita Rep"),
    )
    lines = table(Report(dt.datetime(2026, 12, 2, tzinfo=dt.UTC), Filters(), "owner", none, groups))

    keys = [line[:24].strip() for line in lines if line.startswith(("sam", "Rita"))]
    assert keys == ["sam@example.com", "sam@other.example", "Rita Rep"]


@pytest.fixture
def console(sessions: sessionmaker, settings: Settings) -> Any:
    return signed_in_console(sessions, settings)


def deals_listed(html: str) -> set[str]:
    return {deal for _, deal, *_ in LEDGER if f">{deal}</a>" in html}


def test_the_console_filters_by_a_sales_owners_email_or_id_in_any_case(console: Any) -> None:
    by_email = console.get("/console/?sales=SAM.SALES@example.com")
    assert by_email.status_code == 200
    html = by_email.get_data(as_text=True)
    assert deals_listed(html) == {"21", "006000000000031AAA"}
    assert "Sam Sales" in html and "Sam.Sales@Example.com" in html

    by_id = console.get("/console/?sales=0055G00000OWNER1AAA").get_data(as_text=True)
    assert deals_listed(by_id) == {"006000000000031AAA"}
    everyone = console.get("/console/").get_data(as_text=True)
    assert "Rita Rep" in everyone and ">75399<" in everyone


def test_the_insights_page_and_timeline_name_the_sales_owner(console: Any) -> None:
    insights = console.get("/console/insights?since=2026-10-26").get_data(as_text=True)
    assert "Per sales owner" in insights
    assert "Sam Sales <small>sam.sales@example.com</small>" in insights
    # Each owner's row opens the hand-off list filtered to their deals.
    assert 'href="/console/?sales=sam.sales@example.com"' in insights

    timeline = console.get("/console/handoffs/hubspot/23").get_data(as_text=True)
    assert "Rita Rep &lt;rita@example.com&gt;" in timeline and "HubSpot id 75311" in timeline


def test_status_names_each_attempts_sales_owner_on_one_line(
    sessions: sessionmaker, settings: Settings
) -> None:
    with sessions() as session:
        attempt = ledger.latest_attempt(session, "hubspot", "23")
        assert attempt is not None and attempt.decision is not None
        attempt.decision.owner_name = "Rita\x1b[31m Rep\nsecond line"
        session.commit()
    env = {"FULLKIT_HOME": str(settings.home), "REDIS_URL": str(secret(settings.redis_url))}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()

    named = CliRunner().invoke(cli, ["status", "hubspot:21"], env=env)
    hostile = CliRunner().invoke(cli, ["status", "hubspot:23"], env=env)
    id_only = CliRunner().invoke(cli, ["status", "hubspot:24"], env=env)

    assert "    sales owner: Sam Sales <Sam.Sales@Example.com>\n" in named.output
    line = next(x for x in hostile.output.splitlines() if "sales owner" in x)
    assert "\x1b" not in line and "second line <rita@example.com>" in line
    assert "    sales owner: 75399\n" in id_only.output
