"""`fullkit report` and the console's insights page on a ledger whose figures are known.

The seeded ledger (times UTC; W45 is the week of Monday 2026-11-02), deal: kit, owner:

* hubspot:1: new-customer, o1: W45 Mon 09:00, accepted 1 h later (first pass).
* hubspot:2: new-customer, o1: W45 Mon 10:00, returned (amount, billing) 5 min later;
  back 24 h later, returned (amount) after 5 min; back 48 h later, accepted after 5 min.
* hubspot:3: expansion, o2: W45 Tue 12:00, returned (sso) after 1 min; back 2 h later,
  accepted after 1 min.
* hubspot:4: new-customer, o2: W46 Mon 09:00, returned (amount) after 1 min; still with sales.
* hubspot:5: no kit or owner yet: W46 Tue 09:00, failed before a kit was chosen.
* hubspot:6: new-customer, no owner yet: W46 Tue 10:00, still evaluating.
* hubspot:7: W45 Mon 08:00, no kit applies: no journey.
* hubspot:8: new-customer, o1: no kit at W45 Mon 08:00; W46 Wed 09:00, accepted 30 min later.
* salesforce:9: sf-kit, o3: W44 Mon 09:00, accepted 2 h later.
* hubspot:10: new-customer, o1: W46 Thu 09:00, accepted 10 min later, then failed creating
  the ticket (ops owns it: accepted).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bridge import db, ledger_figures, report, report_text
from bridge.cli import cli
from bridge.ledger import OWNER_OF_STATE
from bridge.models import Attempt, DecisionRecord, Transition
from bridge.settings import Settings
from tests.conftest import ROOT, secret
from tests.console_client import signed_in_console

H, M = 3600, 60
MON = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # Monday of ISO week 2026-W45
NOW = dt.datetime(2026, 11, 16, 9, 1, tzinfo=dt.UTC)  # Monday of W47
AMOUNT = ("amount", "Deal amount must be above zero")
BILLING = ("billing-contact", "Add a billing contact with an email address")
HOSTILE = '<script>alert("sso")</script> & "SSO" provider'
SSO = ("sso-provider", HOSTILE)


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """Days after Monday 2026-11-02 (negative: the week before)."""
    return MON + dt.timedelta(days=day, hours=hour, minutes=minute)


def returned(moment: dt.datetime, *missing: tuple[str, str]) -> dict[str, Any]:
    return {"steps": [("evaluating", moment), ("returned", moment)], "missing": missing}


def accepted(moment: dt.datetime) -> dict[str, Any]:
    return {"steps": [("evaluating", moment), ("accepted", moment), ("ops_created", moment)]}


def after(minutes: int, trigger: dt.datetime) -> dt.datetime:
    return trigger + dt.timedelta(minutes=minutes)


# (crm, deal, kit, owner, [(trigger, outcome)])
LEDGER: list[tuple[str, str, str | None, str | None, list[tuple[dt.datetime, dict[str, Any]]]]] = [
    ("hubspot", "1", "new-customer", "o1", [(at(0, 9), accepted(at(0, 10)))]),
    ("hubspot", "2", "new-customer", "o1", [
        (at(0, 10), returned(at(0, 10, 5), AMOUNT, BILLING)),
        (at(1, 10, 5), returned(at(1, 10, 10), AMOUNT)),
        (at(3, 10, 10), accepted(at(3, 10, 15))),
    ]),
    ("hubspot", "3", "expansion", "o2", [
        (at(1, 12), returned(at(1, 12, 1), SSO)),
        (at(1, 14, 1), accepted(at(1, 14, 2))),
    ]),
    ("hubspot", "4", "new-customer", "o2", [(at(7, 9), returned(at(7, 9, 1), AMOUNT))]),
    ("hubspot", "5", None, None, [(at(8, 9), {"steps": [("failed", at(8, 9, 30))]})]),
    ("hubspot", "6", "new-customer", None, [(at(8, 10), {"steps": [("evaluating", at(8, 10))]})]),
    ("hubspot", "7", None, None, [(at(0, 8), {"steps": [("no_kit", at(0, 8))]})]),
    ("hubspot", "8", "new-customer", "o1", [
        (at(0, 8), {"steps": [("no_kit", at(0, 8))], "kit": None}),
        (at(9, 9), accepted(at(9, 9, 30))),
    ]),
    ("salesforce", "006000000000009AAA", "sf-kit", "o3", [(at(-7, 9), accepted(at(-7, 11)))]),
    ("hubspot", "10", "new-customer", "o1", [
        (at(10, 9), {"steps": [("evaluating", at(10, 9)), ("accepted", at(10, 9, 10)),
                               ("failed", at(10, 9, 40))], "judged": True}),
    ]),
]  # fmt: skip


def _attempt(
    crm: str, deal: str, number: int, kit: str | None, owner: str | None,
    trigger: dt.datetime, outcome: dict[str, Any],
) -> Attempt:  # fmt: skip
    steps: list[tuple[str, dt.datetime]] = outcome["steps"]
    kit = outcome.get("kit", kit) if steps[-1][0] != "no_kit" else None
    findings = [{"id": i, "path": "", "message": m} for i, m in outcome.get("missing", ())]
    state, last = steps[-1]
    attempt = Attempt(
        crm=crm, deal_id=deal, number=number, kit_id=kit, state=state,
        owner=OWNER_OF_STATE.get(state, "ops" if outcome.get("judged") else "sales"),
        owner_since=last, findings=findings, trigger_stage="closedwon", trigger_at=trigger,
        task_started=False, ops_started=False, retries=0, created_at=trigger, updated_at=last,
    )  # fmt: skip
    attempt.transitions = [Transition(state="received", owner="sales", at=trigger)] + [
        Transition(state=s, owner=OWNER_OF_STATE.get(s, "ops"), at=moment) for s, moment in steps
    ]
    judged = {s for s, _ in steps} & {"returned", "accepted"}
    if kit and judged:
        attempt.decision = DecisionRecord(
            kit_id=kit, outcome=judged.pop(), findings=findings, judged_on=trigger.date(),
            owner_ref=owner, created_at=trigger,
        )  # fmt: skip
    return attempt


def seed(session: Session) -> None:
    for crm, deal, kit, owner, attempts in LEDGER:
        for number, (trigger, outcome) in enumerate(attempts, start=1):
            session.add(_attempt(crm, deal, number, kit, owner, trigger, outcome))
    session.commit()


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker]:
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    made = db.session_factory(engine)
    with made() as session:
        seed(session)
    yield made
    engine.dispose()


def build(sessions: sessionmaker, by: str | None = None, **filters: Any) -> report.Report:
    with sessions() as session:
        return report.build_report(session, report.Filters(**filters), by, NOW)


def groups(result: report.Report) -> dict[str, report.Figures]:
    return {group.key: group.figures for group in result.groups}


# --- the figures --------------------------------------------------------------------------


def test_journeys_count_every_deal_handed_off_with_a_kit_once(sessions: sessionmaker) -> None:
    f = build(sessions).overall
    assert f.journeys == 9  # hubspot:7 had no kit
    assert f.outcomes == {"accepted": 6, "with_sales": 1, "in_progress": 1, "failed": 1}


def test_first_pass_yield_is_over_journeys_whose_first_attempt_was_judged(
    sessions: sessionmaker,
) -> None:
    f = build(sessions).overall
    # Judged: 1, 2, 3, 4, 8, 9, 10; accepted at once: 1, 8, 9, 10.
    assert (f.judged, f.first_pass) == (7, 4)
    assert f.first_pass_yield == pytest.approx(4 / 7)


def test_top_missing_items_count_returned_attempts_and_deals(sessions: sessionmaker) -> None:
    items = [(m.id, m.message, m.attempts, m.deals) for m in build(sessions).overall.missing]
    assert items == [
        ("amount", AMOUNT[1], 3, 2),
        ("billing-contact", BILLING[1], 1, 1),
        ("sso-provider", HOSTILE, 1, 1),
    ]


def test_returns_per_journey_mean_and_distribution(sessions: sessionmaker) -> None:
    f = build(sessions).overall
    assert f.returned_attempts == 4
    assert f.returns_per_journey == pytest.approx(4 / 9)
    assert f.returns == {0: 6, 1: 2, 2: 1}


def test_time_to_acceptance_median_and_p90(sessions: sessionmaker) -> None:
    spread = build(sessions).overall.to_acceptance
    # 10 min, 30 min, 1 h, 2 h, 2 h 02 min, 3 d 15 min
    assert spread.count == 6
    assert spread.median == (1 * H + 2 * H) / 2
    assert spread.p90 == 72 * H + 15 * M


def test_time_with_sales_counts_only_the_time_after_push_backs(sessions: sessionmaker) -> None:
    spread = build(sessions).overall.with_sales
    # Accepted journeys: 0, 24 h + 48 h, 2 h, 0, 0, 0.
    assert (spread.count, spread.median, spread.p90) == (6, 0.0, 72 * H)
    assert groups(build(sessions, "kit"))["expansion"].with_sales.median == 2 * H


def test_per_kit(sessions: sessionmaker) -> None:
    by_kit = build(sessions, "kit")
    assert [group.key for group in by_kit.groups] == [
        "new-customer", "(unknown)", "expansion", "sf-kit",
    ]  # fmt: skip
    kit = groups(by_kit)["new-customer"]
    assert (kit.journeys, kit.judged, kit.first_pass, kit.returned_attempts) == (6, 5, 3, 3)
    assert kit.to_acceptance.median == 45 * M  # 10 min, 30 min, 1 h, 3 d 15 min
    assert [m.id for m in kit.missing] == ["amount", "billing-contact"]


def test_per_sales_owner(sessions: sessionmaker) -> None:
    by_owner = groups(build(sessions, "owner"))
    assert {key: f.journeys for key, f in by_owner.items()} == {
        "o1": 4, "o2": 2, "o3": 1, "(unknown)": 2,
    }  # fmt: skip
    assert by_owner["o1"].first_pass_yield == 0.75
    assert by_owner["o2"].first_pass_yield == 0.0
    assert by_owner["o2"].outcomes["with_sales"] == 1


def test_per_week_of_the_first_attempt(sessions: sessionmaker) -> None:
    weeks = build(sessions, "week")
    assert [group.key for group in weeks.groups] == ["2026-W44", "2026-W45", "2026-W46"]
    yields = {key: (f.judged, f.first_pass) for key, f in groups(weeks).items()}
    # hubspot:8's no-kit attempt in W45 does not start its journey.
    assert yields == {"2026-W44": (1, 1), "2026-W45": (3, 1), "2026-W46": (3, 2)}


def test_since_keeps_journeys_that_started_after_it(sessions: sessionmaker) -> None:
    result = build(sessions, "week", since=MON)
    assert result.overall.journeys == 8  # without salesforce:9 (W44)
    assert result.overall.first_pass_yield == 0.5
    # Up to now, the empty week too.
    assert [group.key for group in result.groups] == ["2026-W45", "2026-W46", "2026-W47"]
    assert groups(result)["2026-W47"].journeys == 0


def test_crm_and_kit_filters(sessions: sessionmaker) -> None:
    assert build(sessions, crm="salesforce").overall.journeys == 1
    expansion = build(sessions, kit="expansion").overall
    assert (expansion.journeys, expansion.returned_attempts) == (1, 1)


def test_since_accepts_durations_and_dates() -> None:
    assert report.parse_since("30d", NOW) == NOW - dt.timedelta(days=30)
    assert report.parse_since("12w", NOW) == NOW - dt.timedelta(weeks=12)
    assert report.parse_since("48h", NOW) == NOW - dt.timedelta(hours=48)
    assert report.parse_since("2026-11-02", NOW) == MON
    assert report.parse_since("2026-11-02T10:00:00+01:00", NOW) == at(0, 9)
    for bad in ("yesterday", "30", "-3d", "2026-13-01", "99999999999w"):
        with pytest.raises(report.BadFilter):
            report.parse_since(bad, NOW)


def test_an_empty_ledger_reports_zeros(settings: Settings) -> None:
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    with db.session_factory(engine)() as session:
        result = report.build_report(session, report.Filters(), "week", NOW)
    engine.dispose()
    assert result.overall.journeys == 0
    assert result.overall.first_pass_yield is None
    assert result.overall.to_acceptance == report.Spread(0, None, None)
    assert result.groups == ()


# --- the command --------------------------------------------------------------------------


@pytest.fixture
def env(sessions: sessionmaker, settings: Settings) -> dict[str, str]:
    values = {"FULLKIT_HOME": str(settings.home), "REDIS_URL": str(secret(settings.redis_url))}
    if settings.database_url:
        values["DATABASE_URL"] = settings.database_url.get_secret_value()
    return values


def run(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli, ["report", *args], env=env, catch_exceptions=False)


def test_report_table_fits_a_terminal(env: dict[str, str]) -> None:
    result = run(["--by", "kit", "--since", "2026-10-01"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0] == "Hand-offs (all CRMs, all kits, since 2026-10-01 00:00 UTC): 9 journey(s)"
    header = next(line for line in lines if line.startswith("kit "))
    assert header.split() == [
        "kit", "journeys", "1st-pass", "returns", "accepted", "in", "p90", "with", "sales",
        "p90", "failed",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith("new-customer "))
    assert row.split() == ["new-customer", "6", "60.0%", "0.50", "45m", "3d", "0s", "3d", "0"]
    total = next(line for line in lines if line.startswith("(all) "))
    assert total.split()[:3] == ["(all)", "9", "57.1%"]
    missing = lines[lines.index("Top missing items (by returned attempts):") + 2]
    assert missing.split() == ["3", "2", "amount", *AMOUNT[1].split()]


def test_report_json_has_the_documented_shape(env: dict[str, str]) -> None:
    result = run(["--format", "json", "--crm", "hubspot", "--by", "owner"], env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"generated_at", "filters", "by", "overall", "groups"}
    assert data["filters"] == {"since": None, "crm": "hubspot", "kit": None}
    overall = data["overall"]
    assert overall["journeys"] == 8
    assert overall["first_pass"] == {"judged": 6, "accepted": 3, "yield": 0.5}
    assert overall["returns"]["distribution"] == [
        {"returns": 0, "journeys": 5}, {"returns": 1, "journeys": 2},
        {"returns": 2, "journeys": 1},
    ]  # fmt: skip
    assert overall["time_to_acceptance"] == {
        "journeys": 5, "median_seconds": 3600.0, "p90_seconds": 72 * H + 15 * M,
    }  # fmt: skip
    assert overall["top_missing"][0] == {
        "id": "amount", "message": AMOUNT[1], "attempts": 3, "deals": 2,
    }  # fmt: skip
    assert [g["key"] for g in data["groups"]] == ["o1", "(unknown)", "o2"]


def test_report_csv_has_one_header_row(env: dict[str, str]) -> None:
    result = run(["--format", "csv", "--by", "week"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("group_by,group,journeys,accepted,")
    assert sum(line.startswith("group_by,") for line in lines) == 1
    assert lines[1].startswith("week,2026-W44,1,1,")
    overall = "week,(all),9,6,1,1,1,7,4,0.5714,4,0.4444,5400.0,260100.0,0.0,259200.0,"
    assert lines[-1].startswith(overall)
    assert lines[-1].endswith(",amount (3); billing-contact (1); sso-provider (1)")


def test_report_of_a_kit_never_seen_is_one_line_exit_1(env: dict[str, str]) -> None:
    result = run(["--kit", "new-custmer"], env)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "fullkit: no hand-off was ever judged against kit 'new-custmer' "
        "(kits seen: expansion, new-customer, sf-kit)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "Invalid value for '--since': expected a number"),
        (["--by", "colour"], "Invalid value for '--by': 'colour' is not one of"),
        (["--format", "xml"], "Invalid value for '--format': 'xml' is not one of"),
        (["--since", "9999-12-31T23:59:59-05:00"], "Invalid value for '--since': '9999-12-31T"),
    ],
)
def test_bad_options_are_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "report", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "FULLKIT_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"fullkit: {message}")
    assert len(done.stderr.splitlines()) == 1


# --- the console's insights page ----------------------------------------------------------


@pytest.fixture
def page(sessions: sessionmaker, settings: Settings) -> Any:
    """The page in the console, signed in: the login itself is tests/test_console.py's."""
    return signed_in_console(sessions, settings)


def test_insights_page_shows_the_figures_and_charts(page: Any) -> None:
    answer = page.get("/console/insights?since=2026-10-26")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert html.count('<svg role="img"') == 3
    assert "First-pass yield per week" in html
    assert "57.1%" in html  # overall, in words as well as bars
    assert "2026-W45" in html and "33.3%" in html  # 1 of 3 judged in W45
    assert "Deal amount must be above zero" in html
    assert 'viewBox="0 0 ' in html and 'width="100%"' in html
    assert "<title>2026-W45: 33.3% first-pass yield (1 of 3 judged)</title>" in html
    assert "2026-W45: 3 accepted (never returned 1, up to 1 day 1, 1 to 7 days 1" in html


def test_insights_page_escapes_requirement_messages(page: Any) -> None:
    html = page.get("/console/insights?since=2026-10-26").get_data(as_text=True)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;sso&#34;)&lt;/script&gt; &amp; &#34;SSO&#34;" in html


def test_insights_page_filters(page: Any) -> None:
    html = page.get("/console/insights?since=2026-10-26&kit=expansion").get_data(as_text=True)
    assert "1 journey" in html
    assert "Deal amount must be above zero" not in html
    empty = page.get("/console/insights?since=2026-11-20&crm=salesforce").get_data(as_text=True)
    assert "No hand-off started in this period for these filters." in empty


def test_insights_page_answers_a_bad_filter_with_400(page: Any) -> None:
    answer = page.get("/console/insights?since=soon")
    assert answer.status_code == 400
    assert "expected a number of hours, days or weeks" in answer.get_data(as_text=True)
    assert page.get("/console/insights?crm=pipedrive").status_code == 400


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_a_since_beyond_the_calendar_in_utc_is_a_bad_filter_not_a_crash(
    page: Any, since: str
) -> None:
    answer = page.get("/console/insights", query_string={"since": since})
    assert answer.status_code == 400
    assert "out of range" in answer.get_data(as_text=True)


def test_insights_page_answers_503_while_the_ledger_is_down(page: Any) -> None:
    def down() -> Any:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    page.application.config["FULLKIT"].sessions = down
    answer = page.get("/console/insights")
    assert answer.status_code == 503
    assert "The ledger cannot be reached right now" in answer.get_data(as_text=True)


def test_terminal_and_csv_output_neutralise_hostile_text() -> None:
    journey = report.Journey(
        crm="hubspot", deal_id="1", kit="=HYPERLINK(\"http://x\")", owner="o1", started=MON,
        first_outcome="returned", outcome="with_sales", accepted_at=None, sales_seconds=0.0,
        returns=(frozenset({("evil", "line one\nline two \x1b[31mred")}),),
    )  # fmt: skip
    result = report.summarize([journey], report.Filters(), "kit", NOW)
    lines = report_text.table(result)
    assert not any("\x1b" in line or "\n" in line for line in lines)
    assert lines[-1].split() == ["1", "1", "evil", "line", "one", "line", "two", "[31mred"]
    rows = list(csv.reader(io.StringIO(report_text.csv_text(result))))
    assert rows[1][:2] == ["kit", '\'=HYPERLINK("http://x")']  # text, not a formula


def test_metrics_time_to_acceptance_starts_where_the_reports_journey_does(
    sessions: sessionmaker,
) -> None:
    """hubspot:8 found no kit a week before a kit judged and accepted it in 30 minutes:
    sales held no hand-off that week, so /metrics counts 30 minutes, as the report does."""
    with sessions() as session:
        seen = ledger_figures.read(session).sales_time[("hubspot", "new-customer")]
    expected = [H, 3 * 24 * H + 15 * M, 30 * M, 10 * M]  # hubspot:1, 2, 8 and 10
    assert seen.count == len(expected)
    assert seen.total == pytest.approx(sum(expected), abs=1)
