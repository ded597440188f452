"""`fullkit kit backtest`: a changed rules folder judged against the stored decisions says
which deals would flip and why, as the hand-off would have judged them, writing nothing."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Blueprint, Flask
from flask_wtf.csrf import CSRFProtect
from jinja2 import DictLoader

from bridge import backtest, db, ledger
from bridge.cli import cli
from bridge.console import backtest as backtest_page
from bridge.container import Container
from bridge.evaluator import applicable, evaluate, select_kit
from bridge.models import Attempt, Base
from bridge.rules import Rules, load_rules
from bridge.settings import Settings
from kernel.decision import Decision
from tests.conftest import ROOT, Backend
from tests.e2e import start_stack

TODAY = dt.datetime.now(dt.UTC).date()
DAY = dt.timedelta(days=1)


def deal(deal_id: str, **deal_fields: Any) -> dict[str, Any]:
    """A deal file for the shipped new-customer kit, complete unless told otherwise."""
    fields = {"name": f"Deal {deal_id}", "pipeline": "default", "amount": 12000, "plan": "pro"}
    fields["kickoff_date"] = (TODAY + 10 * DAY).isoformat()
    fields.update(deal_fields)
    return {
        "crm": "hubspot",
        "deal_id": deal_id,
        "name": f"Deal {deal_id}",
        "deal": {k: v for k, v in fields.items() if v is not None},
        "company": {"name": f"Company {deal_id}", "domain": f"c{deal_id}.example"},
        "contacts": [{"email": f"bill@c{deal_id}.example", "role": "billing"}],
        "line_items": [{"name": "Seat", "quantity": 10, "price": 1200}],
    }


class Ledger:
    """Decisions stored the way the hand-off stores them (`Handoffs._judge`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = db.make_engine(settings)
        db.prepare(self.engine, settings)
        self.rules = load_rules(settings.rules_dir)

    def judge(
        self,
        data: dict[str, Any],
        *,
        judged_on: dt.date = TODAY,
        number: int = 1,
        stage: str = "closedwon",
    ) -> str:
        packet = self.rules.packet_from_json(data)
        at = dt.datetime.combine(judged_on, dt.time(9), dt.UTC)
        attempt = Attempt(
            crm=packet.crm, deal_id=packet.deal_id, number=number, state="received",
            owner="sales", owner_since=at, findings=[], trigger_stage=stage, trigger_at=at,
            task_started=False, ops_started=False, retries=0, created_at=at, updated_at=at,
        )  # fmt: skip
        kit = select_kit(self.rules.kits_entered(packet.crm, stage), packet, judged_on)
        if kit is None:
            attempt.state = "no_kit"
            ledger.record_no_kit(attempt, packet, judged_on)
        else:
            findings = evaluate(kit, packet, judged_on)
            applied = [req.id for req in applicable(kit, packet, judged_on)]
            return_to = "contractsent" if findings else None
            decision = Decision.judged(kit.id, packet, findings, applied, judged_on, return_to)
            ledger.record_decision(attempt, decision)
            attempt.state = "returned" if findings else "ops_created"
        assert attempt.decision is not None
        attempt.decision.created_at = at
        with db.session_factory(self.engine)() as session:
            session.add(attempt)
            session.commit()
        return packet.deal_id

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, in order: what `nothing written` is checked against."""
        with self.engine.connect() as connection:
            return {
                table.name: [tuple(row) for row in connection.execute(sa.select(table))]
                for table in Base.metadata.sorted_tables
            }

    def backtest(self, rules: Rules, since: dt.timedelta = 30 * DAY) -> backtest.Report:
        with self.engine.connect() as connection:
            return backtest.run(connection, rules, dt.datetime.now(dt.UTC) - since)


@pytest.fixture
def shipped(make_settings: Any) -> Iterator[Ledger]:
    store = Ledger(make_settings())
    yield store
    store.engine.dispose()


def changed_rules(tmp_path: Path, *, edit: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of the shipped rules with text replaced, file by file (a kit or a mapping)."""
    folder = tmp_path / "candidate"
    if not folder.exists():
        shutil.copytree(ROOT / "kit_rules", folder)
    for name, replacements in edit.items():
        path = folder / name
        text = path.read_text()
        for old, new in replacements:
            assert old in text, f"{old!r} not in {name}"
            text = text.replace(old, new)
        path.write_text(text)
    return folder


KIT = "kits/10-new-customer.yaml"
PAST_KICKOFF = """
  - id: kickoff-not-past
    check: 'deal.kickoff_date >= today'
    message: 'The requested kickoff date has passed'
"""
AMOUNT = """  - id: amount
    check: 'deal.amount > 0'
    message: 'Deal amount must be above zero'
"""
APPLIES = """applies_when: 'deal.pipeline == "default"'"""
APPLIES_RENEWALS = """applies_when: 'deal.pipeline in ["default", "renewals"]'"""


def three_edits(tmp_path: Path) -> Path:
    """A new requirement, a removed one, and a kit that now also applies to renewals."""
    return changed_rules(
        tmp_path,
        edit={KIT: [("requirements:\n", "requirements:\n" + PAST_KICKOFF), (AMOUNT, ""),
                    (APPLIES, APPLIES_RENEWALS)]},
    )  # fmt: skip


def seed_story(store: Ledger) -> None:
    store.judge(deal("1"))  # complete: stays accepted
    store.judge(deal("2", amount=0))  # returned for its amount only
    store.judge(deal("3", pipeline="renewals"))  # no kit applied
    store.judge(deal("4", kickoff_date=None))  # returned: no kickoff date
    # Judged ten days ago with a kickoff then still ahead (now past): as it was judged,
    # the date check passes, so the deal does not flip.
    store.judge(deal("5", kickoff_date=(TODAY - 5 * DAY).isoformat()), judged_on=TODAY - 10 * DAY)
    # Accepted although its kickoff had already passed on the day it was judged.
    store.judge(deal("6", kickoff_date=(TODAY - 9 * DAY).isoformat()), judged_on=TODAY - 5 * DAY)


def by_deal(report: backtest.Report) -> dict[str, backtest.Change]:
    return {change.stored.deal_id: change for change in report.changes}


def test_changed_rules_flip_exactly_the_deals_they_should_with_the_reasons(
    shipped: Ledger, tmp_path: Path
) -> None:
    seed_story(shipped)
    report = shipped.backtest(load_rules(three_edits(tmp_path)))

    assert report.rejudged == 6 and report.unchanged == 2  # deals 1 and 5
    changes = by_deal(report)
    assert {deal_id: change.kind for deal_id, change in changes.items()} == {
        "2": "returned→accepted",
        "3": "no_kit→accepted",
        "4": "findings changed",
        "6": "accepted→returned",
    }
    assert changes["2"].why() == ["- Deal amount must be above zero"]
    assert changes["3"].why() == ["kit new-customer now applies"]
    assert changes["4"].why() == ["+ The requested kickoff date has passed"]
    assert [rid for rid, _ in changes["4"].after.findings] == ["kickoff-not-past", "kickoff-date"]
    assert changes["6"].why() == ["+ The requested kickoff date has passed"]
    assert report.flips == 3
    assert backtest.summary(report) == (
        "6 deals re-judged, 3 would flip: 1 accepted→returned, 1 no_kit→accepted, "
        "1 returned→accepted; 1 findings changed"
    )


def test_unchanged_rules_change_nothing(shipped: Ledger) -> None:
    seed_story(shipped)
    report = shipped.backtest(shipped.rules)
    assert (report.rejudged, report.unchanged, report.changes) == (6, 6, [])
    assert backtest.summary(report) == "6 deals re-judged, 0 would flip"


def test_a_new_kit_and_a_narrower_one_change_kit_and_leave_deals_with_none(
    shipped: Ledger, tmp_path: Path
) -> None:
    shipped.judge(deal("1", plan="enterprise", sso_provider="okta"))  # no order form: returned
    shipped.judge(deal("2"))  # pro
    enterprise = (ROOT / "kit_rules" / KIT).read_text()
    enterprise = enterprise.replace("kit: new-customer", "kit: enterprise")
    enterprise = enterprise.replace(APPLIES, """applies_when: 'deal.plan == "enterprise"'""")
    folder = changed_rules(tmp_path, edit={KIT: [(APPLIES, """applies_when: 'false'""")]})
    (folder / "kits" / "05-enterprise.yaml").write_text(enterprise)

    changes = by_deal(shipped.backtest(load_rules(folder)))
    assert changes["1"].kind == "kit changed"
    assert changes["1"].why() == ["judged by kit enterprise instead of new-customer"]
    assert backtest.table([changes["1"]])[1].split()[:4] == [
        "hubspot:1", "new-customer", "→", "enterprise",
    ]  # fmt: skip
    assert changes["2"].kind == "accepted→no_kit"
    assert changes["2"].why() == ["no kit applies any more"]


def test_a_packet_the_new_mapping_cannot_read_is_reported_not_a_crash(
    shipped: Ledger, tmp_path: Path
) -> None:
    shipped.judge(deal("1"))
    shipped.judge(deal("2", plan=None))
    kickoff = "kickoff_date: {property: kickoff_date, type: "
    folder = changed_rules(
        tmp_path,
        edit={
            "mappings/hubspot.yaml": [
                (kickoff + "date}", kickoff + "number}"),
                ("  plan: plan_tier\n", ""),  # unmapped now: no kit can read it
            ],
            KIT: [("when: 'deal.plan == \"enterprise\"'", "when: 'false'")],
        },
    )
    report = shipped.backtest(load_rules(folder))
    assert report.rejudged == 2 and report.counts == {"unreadable": 2}
    change = by_deal(report)["1"]
    assert change.after is None and not change.flip
    kickoff_date = (TODAY + 10 * DAY).isoformat()
    assert change.why() == [
        f"cannot judge the stored packet: deal.kickoff_date: {kickoff_date!r} is not a valid number"
    ]


def test_only_each_deals_latest_decision_within_since_counts(
    shipped: Ledger, tmp_path: Path
) -> None:
    shipped.judge(deal("1", amount=0), judged_on=TODAY - 3 * DAY)  # returned, then fixed:
    shipped.judge(deal("1"), number=2)  # its latest decision is the acceptance
    shipped.judge(deal("2", amount=0), judged_on=TODAY - 40 * DAY)  # before --since
    shipped.judge(deal("3", amount=0), judged_on=TODAY - 20 * DAY)
    rules = load_rules(changed_rules(tmp_path, edit={KIT: [(AMOUNT, "")]}))

    within = by_deal(shipped.backtest(rules))
    assert set(within) == {"3"}
    longer = by_deal(shipped.backtest(rules, since=60 * DAY))
    assert {deal_id: c.kind for deal_id, c in longer.items()} == {
        "2": "returned→accepted",
        "3": "returned→accepted",
    }


def test_a_kit_that_now_reads_attachments_never_read_says_its_verdict_may_be_wrong(
    shipped: Ledger, tmp_path: Path
) -> None:
    shipped.judge(deal("1"))
    order_form = "  - id: signed-order-form\n    when: 'deal.plan == \"enterprise\"'\n"
    folder = changed_rules(tmp_path, edit={KIT: [(order_form, "  - id: signed-order-form\n")]})
    change = by_deal(shipped.backtest(load_rules(folder)))["1"]
    assert change.kind == "accepted→returned" and change.attachments_unread
    assert change.why()[-1].startswith("(attachments were not read when it was judged")


def test_salesforce_deals_are_judged_by_the_kits_of_the_stage_they_entered(
    shipped: Ledger, tmp_path: Path
) -> None:
    opportunity = deal("0065g00000AbCdEAAV", amount=0)
    opportunity["crm"] = "salesforce"
    opportunity["deal"].pop("pipeline")
    opportunity["contacts"][0]["role"] = "Billing Contact"
    shipped.judge(opportunity, stage="Closed Won")
    shipped.judge(deal("1", amount=0))
    salesforce_amount = "  - id: amount\n    check: 'deal.amount > 0'\n"
    folder = changed_rules(
        tmp_path,
        edit={"kits/20-salesforce-new-customer.yaml": [(salesforce_amount, "  - id: amount\n"
              "    check: 'deal.amount >= 0'\n")]},
    )  # fmt: skip
    changes = by_deal(shipped.backtest(load_rules(folder)))
    assert list(changes) == ["0065g00000AbCdEAAV"]
    assert changes["0065g00000AbCdEAAV"].kind == "returned→accepted"
    assert changes["0065g00000AbCdEAAV"].why() == ["- Opportunity amount must be above zero"]


def test_the_backtest_transaction_cannot_write(shipped: Ledger) -> None:
    with shipped.engine.connect() as connection, backtest.read_only(connection):
        with pytest.raises(sa.exc.DBAPIError):
            connection.execute(sa.delete(Attempt))


def queue_keys(backend: Backend) -> list[bytes]:
    return sorted(redis.Redis.from_url(backend.redis_url).keys("*"))


def env_of(settings: Settings, backend: Backend, tmp_path: Path) -> dict[str, str]:
    env = {k: str(v) for k, v in backend.env(settings.home).items()}
    return {**env, "FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}


def backtest_cli(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli, ["kit", "backtest", *args], env=env, catch_exceptions=False)


def test_cli_prints_the_summary_and_a_table_and_writes_nothing(
    shipped: Ledger, backend: Backend, tmp_path: Path
) -> None:
    seed_story(shipped)
    before, keys = shipped.rows(), queue_keys(backend)
    env = env_of(shipped.settings, backend, tmp_path)

    result = backtest_cli(["--rules", str(three_edits(tmp_path))], env)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "6 deals re-judged, 3 would flip: 1 accepted→returned, 1 no_kit→accepted, "
        "1 returned→accepted; 1 findings changed"
    )
    assert lines[2].split() == ["DEAL", "KIT", "BEFORE", "→", "AFTER", "WHY"]
    assert lines[3].split()[:5] == ["hubspot:6", "new-customer", "accepted", "→", "returned"]
    assert lines[3].endswith("+ The requested kickoff date has passed")
    assert any(line.endswith("- Deal amount must be above zero") for line in lines)
    assert shipped.rows() == before  # row for row
    assert queue_keys(backend) == keys


def test_cli_json_lists_every_change_and_limit_bounds_it(
    shipped: Ledger, backend: Backend, tmp_path: Path
) -> None:
    seed_story(shipped)
    env = env_of(shipped.settings, backend, tmp_path)
    rules = str(three_edits(tmp_path))

    answer = json.loads(backtest_cli(["--rules", rules, "--format", "json"], env).output)
    assert (answer["rejudged"], answer["flips"], answer["truncated"]) == (6, 3, False)
    assert answer["since"] == "30d" and answer["rules"] == rules
    first = answer["changes"][0]
    assert first["crm"] == "hubspot" and first["deal_id"] == "6"
    assert first["before"] == {"outcome": "accepted", "kit": "new-customer", "findings": []}
    assert first["added"] == [
        {"id": "kickoff-not-past", "message": "The requested kickoff date has passed"}
    ]
    limited = backtest_cli(["--rules", rules, "--format", "json", "--limit", "1"], env)
    assert len(json.loads(limited.output)["changes"]) == 1
    assert json.loads(limited.output)["truncated"] is True
    assert json.loads(limited.output)["flips"] == 3  # every change still counts


def test_cli_without_rules_compares_the_current_rules_and_since_filters(
    shipped: Ledger, backend: Backend, tmp_path: Path
) -> None:
    shipped.judge(deal("1", amount=0), judged_on=TODAY - 2 * DAY)
    env = env_of(shipped.settings, backend, tmp_path)
    env["FULLKIT_RULES_DIR"] = str(changed_rules(tmp_path, edit={KIT: [(AMOUNT, "")]}))

    assert backtest_cli([], env).output.startswith("1 deal re-judged, 1 would flip")
    assert backtest_cli(["--since", "1d"], env).output == "0 deals re-judged, 0 would flip\n"


def test_cli_an_invalid_folder_lists_its_problems_and_exits_1(
    shipped: Ledger, backend: Backend, tmp_path: Path
) -> None:
    folder = changed_rules(tmp_path, edit={KIT: [("deal.amount > 0", "deal.amount >")]})
    result = backtest_cli(["--rules", str(folder)], env_of(shipped.settings, backend, tmp_path))
    assert result.exit_code == 1
    assert f"invalid rules folder {folder}" in result.output
    assert "10-new-customer.yaml:" in result.output and "requirements[0].check" in result.output


@pytest.mark.parametrize(
    "args", [["--since", "soon"], ["--format", "yaml"], ["--limit", "-1"], ["--deal", "x"]]
)
def test_cli_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    env = {"FULLKIT_HOME": str(tmp_path / "home"), "FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}
    assert backtest_cli(args, env).exit_code == 2


def test_cli_on_a_home_with_no_ledger_creates_none(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"FULLKIT_HOME": str(home), "FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}
    result = backtest_cli([], env)
    assert (result.exit_code, result.output) == (0, "0 deals re-judged, 0 would flip\n")
    assert not (home / "ledger.sqlite3").exists()


# --- through the real hand-off path --------------------------------------------------


def test_the_hand_off_keeps_the_packets_it_judged_even_when_no_kit_applied(
    make_settings: Any, tmp_path: Path
) -> None:
    small_deals = """applies_when: 'deal.amount < 100000.0'"""
    live = changed_rules(tmp_path / "live", edit={KIT: [(APPLIES, small_deals)]})
    for stack in start_stack(lambda **kw: make_settings(FULLKIT_RULES_DIR=str(live), **kw)):
        complete = stack.complete_deal("Acme Corp")
        big = stack.complete_deal("Globex", amount="250000")
        for deal_id in (complete, big):
            stack.sandbox.move_deal(deal_id, "closedwon")
        stack.work()
        assert stack.history(big)["attempts"][0]["state"] == "no_kit"
        assert stack.history(big)["attempts"][0]["kit"] is None

        # Big deals get the kit too, which also wants the kickoff date not to have passed.
        folder = changed_rules(tmp_path, edit={KIT: [(AMOUNT, AMOUNT + PAST_KICKOFF)]})
        with stack.runtime.engine.connect() as connection:
            report = backtest.run(connection, load_rules(folder), ledger.utcnow() - DAY)
        assert report.rejudged == 2
        assert {c.stored.deal_id: c.kind for c in report.changes} == {big: "no_kit→accepted"}


# --- the console page -----------------------------------------------------------------

BASE = (
    "<!doctype html><title>{% block title %}{% endblock %}</title>"
    "<main>{% block content %}{% endblock %}</main>"
)


def console_app(settings: Settings) -> Flask:
    """The page on a bare blueprint shaped like the console's (its login, CSRF and
    base.html are the console's own), with Flask-WTF's CSRF check on POST."""
    app = Flask("backtest-page")
    app.secret_key = "test-only"
    app.config["FULLKIT"] = Container.build(settings)
    app.jinja_loader = DictLoader({"console/base.html": BASE})  # type: ignore[assignment]
    bp = Blueprint(
        "console", __name__, url_prefix="/console",
        template_folder=str(ROOT / "bridge" / "console" / "templates"),
    )  # fmt: skip
    backtest_page.register(bp)
    app.register_blueprint(bp)
    CSRFProtect(app)
    return app


class Page:
    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def open(self) -> str:
        answer = self.client.get("/console/backtest")
        assert answer.status_code == 200
        return answer.get_data(as_text=True)

    def compare(self, rules: str, since: str = "30d") -> tuple[int, str]:
        token = re.search(r'name="csrf_token" value="([^"]+)"', self.open())
        assert token is not None
        form = {"csrf_token": token.group(1), "rules": rules, "since": since}
        answer = self.client.post("/console/backtest", data=form)
        return answer.status_code, html.unescape(answer.get_data(as_text=True))


@pytest.fixture
def page(shipped: Ledger) -> Page:
    return Page(console_app(shipped.settings))


def test_page_shows_the_comparison_the_cli_makes_and_writes_nothing(
    shipped: Ledger, page: Page, backend: Backend, tmp_path: Path
) -> None:
    seed_story(shipped)
    before, keys = shipped.rows(), queue_keys(backend)
    assert str(ROOT / "kit_rules") in page.open()  # the folder the service runs with

    status, text = page.compare(str(three_edits(tmp_path)))

    assert status == 200, text
    assert (
        "6 deals re-judged, 3 would flip: 1 accepted→returned, 1 no_kit→accepted, "
        "1 returned→accepted; 1 findings changed"
    ) in text
    assert '<a href="/console/handoffs/hubspot/6">hubspot:6</a>' in text
    assert "<li>+ The requested kickoff date has passed</li>" in text
    assert "<li>- Deal amount must be above zero</li>" in text
    assert "<li>kit new-customer now applies</li>" in text
    assert shipped.rows() == before and queue_keys(backend) == keys


def test_page_lists_an_invalid_folders_problems_with_file_and_line(
    page: Page, tmp_path: Path
) -> None:
    folder = changed_rules(tmp_path, edit={KIT: [("deal.amount > 0", "deal.amount >")]})
    status, text = page.compare(str(folder))
    assert status == 422
    assert f"invalid rules folder {folder}" in text
    assert re.search(r"<code>\S*10-new-customer.yaml:\d+: requirements\[0\]\.check: ", text)
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("rules", "since", "said"),
    [
        ("", "30d", "Give the path of a rules folder"),
        ("/no/such/folder", "30d", "/no/such/folder does not exist on the server."),
        (str(ROOT / "kit_rules" / "kits"), "30d", "has no kits or mappings/ in it"),
        (str(ROOT / "README.md"), "30d", "is not a folder"),
        ("a\x00b", "30d", "That is not a path"),
        (str(ROOT / "kit_rules"), "last week", "Judged within: a number"),
    ],
)
def test_page_refuses_what_is_not_a_rules_folder_or_a_period_with_400(
    page: Page, rules: str, since: str, said: str
) -> None:
    status, text = page.compare(rules, since)
    assert status == 400 and said in text


def test_page_refuses_a_post_without_the_csrf_token(page: Page) -> None:
    answer = page.client.post("/console/backtest", data={"rules": str(ROOT / "kit_rules")})
    assert answer.status_code == 400


def test_page_stops_a_comparison_that_takes_too_long(
    page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backtest_page, "TIMEOUT_SECONDS", 0.01)
    status, text = page.compare(str(ROOT / "kit_rules"))
    assert status == 504 and "took longer than 0.01 s and was stopped" in text


def test_page_runs_one_comparison_at_a_time(page: Page) -> None:
    assert backtest_page._running.acquire(blocking=False)
    try:
        status, text = page.compare(str(ROOT / "kit_rules"))
    finally:
        backtest_page._running.release()
    assert status == 429 and "Another comparison is running" in text


def test_the_comparison_reads_this_apps_ledger_and_no_secret_is_on_its_command_line(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone@elsewhere/other")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    database = "postgresql://fullkit:s3cret-password@db.example/fullkit"
    settings = make_settings(DATABASE_URL=database)
    env = backtest_page.child_env(settings)
    assert env["DATABASE_URL"] == database
    assert env["FULLKIT_HOME"] == str(settings.home.absolute())
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
    seen: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> Any:
        seen.append(command)
        raise subprocess.TimeoutExpired(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    outcome = backtest_page.compare(settings, ROOT / "kit_rules", "30d")
    assert outcome.status == 504
    assert not any("s3cret" in part for part in seen[0])
