"""`fullkit sweep` on a Salesforce org: an opportunity whose outbound message never came
(Salesforce gives up after 24 hours) is found with one SOQL query and queued once,
through the sandbox over real HTTP."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner, Result

from bridge.cli import cli
from bridge.worker import build_worker
from tests import test_e2e_salesforce
from tests.conftest import secret
from tests.test_e2e_salesforce import SfStack

stack = test_e2e_salesforce.stack  # the org and Fullkit, served as its end-to-end tests have them

FOUND_LINE = "found {} deal(s) in a hand-off stage for over {}: {} already handled, {} queued"


def sweep(org: SfStack, *args: str) -> Result:
    settings = org.runtime.settings
    env = {
        "FULLKIT_HOME": str(settings.home),
        "FULLKIT_RULES_DIR": str(settings.rules_dir),
        "REDIS_URL": secret(settings.redis_url) or "",
        "SALESFORCE_INSTANCE_URL": org.org.url,
        "SALESFORCE_ACCESS_TOKEN": org.org.access_token,
    }
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    return CliRunner().invoke(cli, ["sweep", *args], env=env)


def work(org: SfStack) -> None:
    build_worker(org.runtime).work(burst=True, logging_level="WARNING")


def test_a_stranded_opportunity_is_swept_up_and_gets_one_case(stack: SfStack) -> None:
    delivered = stack.opportunity("Delivered")
    stranded = stack.opportunity("Stranded")
    stack.opportunity("Still Negotiating")
    stack.box.move_opportunity(delivered, "Closed Won")
    stack.work()  # its outbound message arrives and is handled
    stack.box.move_opportunity(stranded, "Closed Won")  # its outbound message never arrives
    work(stack)
    assert len(stack.box.all("Case")) == 1

    result = sweep(stack, "--older-than", "0")

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"queued salesforce:{stranded} (in Closed Won since ")
    assert lines[1:] == [FOUND_LINE.format(2, "0s", 1, 1)]
    work(stack)
    assert stack.state(stranded) == "ops_created"
    assert stack.box.get("Opportunity", stranded)["Fullkit_Status__c"] == "accepted"
    assert sorted(c["Fullkit_Opportunity__c"] for c in stack.box.all("Case")) == sorted(
        [delivered, stranded]
    )

    again = sweep(stack, "--older-than", "0")

    assert again.stdout.strip().splitlines() == [FOUND_LINE.format(2, "0s", 2, 0)]
    work(stack)
    assert len(stack.box.all("Case")) == 2


def test_the_default_sweep_waits_until_an_opportunity_sat_fifteen_minutes(
    stack: SfStack,
) -> None:
    recent = stack.opportunity("Recent")
    waiting = stack.opportunity("Waiting")
    twenty_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    store = stack.box.store
    with stack.box.lock:
        store.now = lambda: twenty_minutes_ago
        try:
            stack.box.move_opportunity(waiting, "Closed Won")
        finally:
            store.now = lambda: dt.datetime.now(dt.UTC)
    stack.box.move_opportunity(recent, "Closed Won")

    result = sweep(stack)

    assert result.exit_code == 0, result.output
    since = twenty_minutes_ago.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert result.stdout.strip().splitlines() == [
        f"queued salesforce:{waiting} (in Closed Won since {since})",
        FOUND_LINE.format(1, "15m", 0, 1),
    ]
    work(stack)
    assert stack.state(waiting) == "ops_created"
    assert [c["Fullkit_Opportunity__c"] for c in stack.box.all("Case")] == [waiting]
    assert stack.box.get("Opportunity", recent).get("Fullkit_Status__c") is None


def test_many_stranded_opportunities_are_read_page_by_page_with_one_query(
    stack: SfStack,
) -> None:
    stack.box.query_batch_size = 4  # Salesforce pages at 2,000 records; the same, scaled down
    stranded = {stack.opportunity(f"Bulk {n}") for n in range(10)}
    for deal_id in stranded:
        stack.box.move_opportunity(deal_id, "Closed Won")
    stack.box.reset_calls()

    result = sweep(stack, "--older-than", "0")

    assert result.exit_code == 0, result.output
    queued = {
        line.split()[1].removeprefix("salesforce:") for line in result.stdout.splitlines()[:-1]
    }
    assert queued == stranded
    queries = [c.path for c in stack.box.calls("GET") if "/query" in c.path]
    assert len(queries) == 3  # the query, then two more pages through nextRecordsUrl
    work(stack)
    assert len(stack.box.all("Case")) == 10
