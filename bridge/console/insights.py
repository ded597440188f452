"""The console's insights page: what breaks hand-offs, and how long deals sit with sales.

The figures are `fullkit report`'s (bridge.report defines them), read once per request
and drawn as inline SVG next to tables of the same numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from bridge import report
from bridge.console.charts import BarChart, ColumnChart, Point, bar_chart, column_chart
from bridge.deal_ids import CRMS
from bridge.report import BadFilter, Figures, Filters, Journey
from bridge.report_text import duration_text, percent_text

DEFAULT_SINCE = "12w"
TOP_MISSING = 10
YIELD_FILL = ("#2f6f9f",)
# Accepted journeys by how long they sat back with sales: a median alone would read 0
# whenever most deals pass first time, and hide the ones that waited.
SALES_BUCKETS = (
    ("never returned", "#7fb77e"),
    ("up to 1 day", "#e0b84c"),
    ("1 to 7 days", "#d9822b"),
    ("over 7 days", "#b5523b"),
)
DAY = 86400.0


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/insights", "insights", insights, methods=["GET"])


@dataclass(frozen=True)
class Choice:
    """The filters as the form sent them, shown back as typed."""

    since: str
    crm: str
    kit: str

    @classmethod
    def of(cls, args: Mapping[str, str]) -> Choice:
        return cls(
            since=args.get("since", DEFAULT_SINCE).strip()[:40],
            crm=args.get("crm", "").strip()[:40],
            kit=args.get("kit", "").strip()[:200],
        )

    def filters(self, now: dt.datetime) -> Filters:
        if self.crm and self.crm not in CRMS:
            raise BadFilter(f"unknown CRM {self.crm!r}: one of {', '.join(CRMS)}")
        if not self.kit.isprintable():
            # PostgreSQL refuses a NUL in a query outright: a 503 for a typo otherwise.
            raise BadFilter("the kit holds a control character")
        since = report.parse_since(self.since, now) if self.since else None
        return Filters(since=since, crm=self.crm or None, kit=self.kit or None)


def insights() -> tuple[str, int]:
    state = current_app.config["FULLKIT"]
    choice = Choice.of(request.args)
    kits = sorted({kit.id for kit in state.rules.kits} | ({choice.kit} - {""}))
    now = dt.datetime.now(dt.UTC)
    try:
        filters = choice.filters(now)
    except BadFilter as exc:
        return _page(choice, kits, error=str(exc)), 400
    try:
        with state.sessions() as session:
            found = list(report.journeys(session, filters, now))
    except SQLAlchemyError:
        error = "The ledger cannot be reached right now; try again in a moment."
        return _page(choice, kits, error=error), 503
    return _page(choice, kits, view=_view(found, filters, now)), 200


def _page(choice: Choice, kits: list[str], **context: Any) -> str:
    return render_template(
        "console/insights.html",
        choice=choice,
        kits=kits,
        crms=CRMS,
        percent=percent_text,
        duration=duration_text,
        **context,
    )


@dataclass(frozen=True)
class WeekRow:
    week: str
    figures: Figures
    buckets: tuple[int, ...]


@dataclass(frozen=True)
class View:
    overall: Figures
    weeks: tuple[WeekRow, ...]
    kits: tuple[report.Group, ...]
    owners: tuple[report.Group, ...]
    yield_chart: ColumnChart
    missing_chart: BarChart
    sales_chart: ColumnChart
    buckets: tuple[tuple[str, str], ...]  # (name, fill) for the legend


def _view(found: list[Journey], filters: Filters, now: dt.datetime) -> View:
    weeks = tuple(
        WeekRow(week, report.figures(members), _bucketed(members))
        for week, members in report.grouped(found, "week", filters, now)
    )
    overall = report.figures(found)
    return View(
        overall=overall,
        weeks=weeks,
        kits=report.summarize(found, filters, "kit", now).groups,
        owners=report.summarize(found, filters, "owner", now).groups,
        yield_chart=_yield_chart(weeks),
        missing_chart=bar_chart(
            [
                (f"{m.message} ({m.id})", m.attempts, f"{m.attempts} · {m.deals} deal(s)")
                for m in overall.missing[:TOP_MISSING]
            ]
        ),
        sales_chart=_sales_chart(weeks),
        buckets=SALES_BUCKETS,
    )


def _bucketed(members: list[Journey]) -> tuple[int, ...]:
    counts = [0] * len(SALES_BUCKETS)
    for journey in members:
        if journey.accepted_at is not None:
            counts[_bucket(journey)] += 1
    return tuple(counts)


def _bucket(journey: Journey) -> int:
    if not journey.returns:
        return 0
    if journey.sales_seconds <= DAY:
        return 1
    return 2 if journey.sales_seconds <= 7 * DAY else 3


def _yield_chart(weeks: tuple[WeekRow, ...]) -> ColumnChart:
    points = [
        Point(
            label=row.week.partition("-")[2],
            parts=() if row.figures.first_pass_yield is None else (row.figures.first_pass_yield,),
            text=_whole_percent(row.figures.first_pass_yield),
            title=f"{row.week}: {percent_text(row.figures.first_pass_yield)} first-pass yield "
            f"({row.figures.first_pass} of {row.figures.judged} judged)",
        )
        for row in weeks
    ]
    return column_chart(points, 1.0, lambda share: f"{share * 100:.0f}%", YIELD_FILL)


def _whole_percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def _sales_chart(weeks: tuple[WeekRow, ...]) -> ColumnChart:
    points = [
        Point(
            label=row.week.partition("-")[2],
            parts=tuple(float(count) for count in row.buckets),
            text=duration_text(row.figures.with_sales.median),
            title=_sales_title(row),
        )
        for row in weeks
    ]
    top = max((sum(row.buckets) for row in weeks), default=0)
    top += top % 2  # an even top puts a whole number on the middle tick
    fills = tuple(fill for _, fill in SALES_BUCKETS)
    return column_chart(points, float(max(top, 2)), lambda count: f"{count:.0f}", fills)


def _sales_title(row: WeekRow) -> str:
    counts = ", ".join(
        f"{name} {count}" for (name, _), count in zip(SALES_BUCKETS, row.buckets, strict=True)
    )
    median = duration_text(row.figures.with_sales.median)
    return f"{row.week}: {sum(row.buckets)} accepted ({counts}); median time with sales {median}"
