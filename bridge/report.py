"""Hand-off figures over the ledger: what breaks hand-offs, and how long deals take.

Definitions (the README's "Reports" section says the same):

* A deal's **journey** is its hand-off attempts from the first until acceptance, or until
  now when none was accepted yet. `no_kit` attempts are left out (no kit applied, so
  Fullkit left the deal alone); a deal with nothing else has no journey. A journey
  **starts** when the deal reached the hand-off stage for its first attempt (that
  attempt's `trigger_at`, the CRM's own time of the change).
* A journey is **accepted** once one of its attempts has an `accepted` transition; its
  acceptance time is that transition's. An attempt is **returned** once it has a
  `returned` transition.
* **Outcomes**: every journey is exactly one of `accepted`, `with_sales` (its latest
  attempt was returned and sales has not handed the deal off again), `failed` (its
  latest attempt is `failed`: retries ran out, `fullkit replay` resumes it) or
  `in_progress`.
* **First-pass yield** = journeys whose first attempt was accepted / journeys whose first
  attempt was judged (accepted or returned). A first attempt still being evaluated, or
  failed before the kit was judged, counts in neither.
* **Top missing items**: each (requirement id, message) with the number of returned
  attempts that listed it and the number of deals those attempts belong to; most
  attempts first.
* **Returns per journey**: returned attempts per journey, as a mean over all journeys and
  as a distribution (how many journeys had 0, 1, 2, ... returns).
* **Time to acceptance**: acceptance time minus journey start, over accepted journeys.
* **Time with sales**: the time the deal sat back with sales after a push-back, summed
  over the journey: from each `returned` transition to the next attempt's start (or to
  now, for an open journey). The ledger names sales the owner while Fullkit evaluates an
  attempt too (seconds, or hours when a CRM is down); that time is Fullkit's, not
  sales', so it is left out. Over accepted journeys, like time to acceptance.
* Times are given as median and p90 (nearest rank: the smallest value that at least 90 %
  of the values do not exceed), in seconds.
* **Groups**: overall, and per kit (the kit of the journey's first judged attempt), per
  sales owner (the CRM owner of the deal when it was judged: the decision's owner email,
  or its `owner_ref` id for decisions that kept no email; such an id counts under the
  email another decision of the same CRM names for it, so a person is one group)
  or per ISO week of the journey's start (UTC, e.g. `2026-W48`; from the first journey's
  week to the last one's, or to this week with `since`, empty weeks included).
* **Filters**: `since` keeps journeys that started at or after it; `crm` and `kit` keep
  journeys of that CRM or kit.

Everything is read in one query of narrow rows (no decision snapshots, findings only of
returned attempts), streamed in deal order and folded into journeys in one pass: a ledger
of 100,000 attempts is a few seconds (`python -m bench.bench_report`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from sqlalchemy import Row, Select, and_, case, func, null, select
from sqlalchemy.orm import Session

from bridge.models import Attempt, DecisionRecord, Transition, UTCDateTime

GROUPINGS = ("kit", "owner", "week")
OUTCOMES = ("accepted", "with_sales", "in_progress", "failed")
UNKNOWN = "(unknown)"
_SINCE = re.compile(r"(\d+)([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


class BadFilter(ValueError):
    """A filter that means nothing; the message says what one looks like."""


@dataclass(frozen=True)
class Filters:
    since: dt.datetime | None = None
    crm: str | None = None
    kit: str | None = None


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """`30d`, `12w`, `48h` before now, or a date (`2026-11-01`, midnight UTC) or an ISO
    datetime (UTC unless it names its zone)."""
    text = text.strip()
    relative = _SINCE.fullmatch(text)
    if relative:
        amount, unit = relative.groups()
        try:
            return now - dt.timedelta(**{_UNITS[unit]: int(amount)})
        except OverflowError:
            raise BadFilter(f"{text!r} reaches back before year 1") from None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(
            f"expected a number of hours, days or weeks (48h, 30d, 12w) or a date "
            f"(2026-11-01), got {text!r}"
        ) from None
    try:
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59-05:00 is in year 10000 in UTC
        raise BadFilter(f"{text!r} is out of range: in UTC it falls outside years 1-9999") from None


@dataclass(slots=True)
class Journey:
    crm: str
    deal_id: str
    kit: str
    owner: str  # the sales owner's email (lower case) when known, else the CRM id
    started: dt.datetime
    first_outcome: str | None  # "accepted", "returned", or None while not judged
    outcome: str  # one of OUTCOMES
    accepted_at: dt.datetime | None
    sales_seconds: float
    # Per returned attempt: the (requirement id, message) pairs it listed.
    returns: tuple[frozenset[tuple[str, str]], ...]
    owner_ref: str | None = None  # the CRM id of the sales owner
    owner_email: str | None = None
    owner_name: str | None = None

    @property
    def week(self) -> str:
        return iso_week(self.started.date())

    @property
    def seconds_to_acceptance(self) -> float | None:
        if self.accepted_at is None:
            return None
        return max(0.0, (self.accepted_at - self.started).total_seconds())


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class Spread:
    """Median and p90 of durations in seconds; None when there is nothing to measure."""

    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(0, None, None)
        ordered = sorted(values)
        p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
        return cls(len(ordered), float(statistics.median(ordered)), p90)


@dataclass(frozen=True)
class MissingItem:
    id: str
    message: str
    attempts: int
    deals: int


@dataclass(frozen=True)
class Figures:
    journeys: int
    outcomes: dict[str, int]
    judged: int
    first_pass: int
    returned_attempts: int
    returns: dict[int, int]  # returns in a journey -> how many journeys
    to_acceptance: Spread
    with_sales: Spread
    missing: tuple[MissingItem, ...]

    @property
    def first_pass_yield(self) -> float | None:
        return self.first_pass / self.judged if self.judged else None

    @property
    def returns_per_journey(self) -> float | None:
        return self.returned_attempts / self.journeys if self.journeys else None


@dataclass(frozen=True)
class Group:
    key: str
    figures: Figures
    name: str | None = None  # a sales owner's name, when the key is their email


@dataclass(frozen=True)
class Report:
    generated_at: dt.datetime
    filters: Filters
    by: str | None
    overall: Figures
    groups: tuple[Group, ...] = field(default=())


def build_report(
    session: Session, filters: Filters, by: str | None = None, now: dt.datetime | None = None
) -> Report:
    now = now or dt.datetime.now(dt.UTC)
    return summarize(list(journeys(session, filters, now)), filters, by, now)


def summarize(found: list[Journey], filters: Filters, by: str | None, now: dt.datetime) -> Report:
    """The figures of journeys already read: one read serves several groupings."""
    if by is not None and by not in GROUPINGS:
        raise BadFilter(f"cannot group by {by!r}: one of {', '.join(GROUPINGS)}")
    groups = tuple(
        Group(key, figures(members), _owner_name(members) if by == "owner" else None)
        for key, members in grouped(found, by, filters, now)
    )
    return Report(now, filters, by, figures(found), groups)


def known_kits(session: Session) -> list[str]:
    """Every kit some attempt was judged against, for a --kit that matches none."""
    query = select(Attempt.kit_id).where(Attempt.kit_id.is_not(None)).distinct()
    return sorted(kit for kit in session.scalars(query) if kit)


# --- reading the ledger ---------------------------------------------------------------


def journeys(session: Session, filters: Filters, now: dt.datetime) -> Iterator[Journey]:
    rows = session.execute(_attempt_rows(filters)).yield_per(2000)
    for _, attempts in groupby(rows, key=lambda row: (row.crm, row.deal_id)):
        journey = _journey(list(attempts), now)
        if _kept(journey, filters):
            yield journey


def _kept(journey: Journey, filters: Filters) -> bool:
    if filters.since is not None and journey.started < filters.since:
        return False
    return filters.kit is None or journey.kit == filters.kit


def _attempt_rows(filters: Filters) -> Select[Any]:
    """Each journey attempt once, deal by deal, with the times of its outcomes.

    The outcome times are correlated subqueries on transitions' attempt index, so the
    database reads only the transitions of the attempts that pass the filters. Findings
    are read only where the attempt was returned: decoding the JSON of every accepted
    attempt cost more than the rest of a row.
    """
    in_journey = Attempt.state != "no_kit"
    query = (
        select(
            Attempt.crm,
            Attempt.deal_id,
            Attempt.kit_id,
            Attempt.state,
            Attempt.trigger_at,
            case((Attempt.state == "returned", Attempt.findings), else_=null()).label("findings"),
            DecisionRecord.owner_ref,
            DecisionRecord.owner_email,
            DecisionRecord.owner_name,
            _first_transition("accepted").label("accepted_at"),
            _first_transition("returned").label("returned_at"),
        )
        .outerjoin(DecisionRecord, DecisionRecord.attempt_id == Attempt.id)
        .where(in_journey)
        .order_by(Attempt.crm, Attempt.deal_id, Attempt.number)
    )
    if filters.crm is not None:
        query = query.where(Attempt.crm == filters.crm)
    if filters.since is None:
        return query
    # Whole journeys that started since: a deal's later attempts count only with its first.
    started = (
        select(Attempt.crm, Attempt.deal_id)
        .where(in_journey)
        .group_by(Attempt.crm, Attempt.deal_id)
        .having(func.min(Attempt.trigger_at) >= filters.since)
    )
    if filters.crm is not None:
        started = started.where(Attempt.crm == filters.crm)
    deals = started.subquery()
    return query.join(deals, and_(Attempt.crm == deals.c.crm, Attempt.deal_id == deals.c.deal_id))


def _first_transition(state: str) -> Any:
    return (
        select(func.min(Transition.at, type_=UTCDateTime()))
        .where(Transition.attempt_id == Attempt.id, Transition.state == state)
        .correlate(Attempt)
        .scalar_subquery()
    )


def _journey(rows: list[Row[Any]], now: dt.datetime) -> Journey:
    first = rows[0]
    accepted_at: dt.datetime | None = None
    returns: list[frozenset[tuple[str, str]]] = []
    sales_seconds = 0.0
    back_with_sales: dt.datetime | None = None
    kept: list[Row[Any]] = []
    for row in rows:
        if back_with_sales is not None:
            sales_seconds += max(0.0, (row.trigger_at - back_with_sales).total_seconds())
            back_with_sales = None
        kept.append(row)
        if row.accepted_at is not None:
            accepted_at = row.accepted_at
            break  # ops owns the deal from here: the journey ends
        if row.returned_at is not None:
            returns.append(_findings(row.findings))
            back_with_sales = row.returned_at
    if back_with_sales is not None:
        sales_seconds += max(0.0, (now - back_with_sales).total_seconds())
    latest = kept[-1]
    judged = next((row for row in kept if row.owner_ref or row.owner_email), None)
    email = ((judged.owner_email or "").strip().lower() or None) if judged else None
    owner_ref = judged.owner_ref if judged else None
    return Journey(
        crm=first.crm,
        deal_id=first.deal_id,
        kit=next((row.kit_id for row in kept if row.kit_id), UNKNOWN),
        owner=email or owner_ref or UNKNOWN,
        started=first.trigger_at,
        first_outcome=_outcome_of(first),
        outcome=_journey_outcome(latest),
        accepted_at=accepted_at,
        sales_seconds=sales_seconds,
        returns=tuple(returns),
        owner_ref=owner_ref,
        owner_email=email,
        owner_name=(judged.owner_name or None) if judged else None,
    )


def _outcome_of(row: Row[Any]) -> str | None:
    if row.accepted_at is not None:
        return "accepted"
    if row.returned_at is not None:
        return "returned"
    return None


def _journey_outcome(latest: Row[Any]) -> str:
    if latest.accepted_at is not None:
        return "accepted"
    if latest.state == "failed":
        return "failed"
    if latest.returned_at is not None:
        return "with_sales"
    return "in_progress"


def _findings(findings: Any) -> frozenset[tuple[str, str]]:
    return frozenset(
        (str(item.get("id", "")), str(item.get("message", "")))
        for item in findings or []
        if isinstance(item, dict)
    )


# --- folding journeys into figures ----------------------------------------------------


def figures(journeys: Iterable[Journey]) -> Figures:
    members = list(journeys)
    outcomes = Counter(journey.outcome for journey in members)
    judged = [j for j in members if j.first_outcome is not None]
    accepted = [j for j in members if j.accepted_at is not None]
    return Figures(
        journeys=len(members),
        outcomes={name: outcomes.get(name, 0) for name in OUTCOMES},
        judged=len(judged),
        first_pass=sum(1 for j in judged if j.first_outcome == "accepted"),
        returned_attempts=sum(len(j.returns) for j in members),
        returns=dict(sorted(Counter(len(j.returns) for j in members).items())),
        to_acceptance=Spread.of([j.seconds_to_acceptance or 0.0 for j in accepted]),
        with_sales=Spread.of([j.sales_seconds for j in accepted]),
        missing=_missing(members),
    )


def _missing(journeys: list[Journey]) -> tuple[MissingItem, ...]:
    attempts: Counter[tuple[str, str]] = Counter()
    deals: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for journey in journeys:
        for listed in journey.returns:
            attempts.update(listed)
            for item in listed:
                deals.setdefault(item, set()).add((journey.crm, journey.deal_id))
    items = [
        MissingItem(item[0], item[1], count, len(deals[item])) for item, count in attempts.items()
    ]
    return tuple(sorted(items, key=lambda m: (-m.attempts, -m.deals, m.id, m.message)))


def grouped(
    journeys: list[Journey], by: str | None, filters: Filters, now: dt.datetime
) -> list[tuple[str, list[Journey]]]:
    if by is None:
        return []
    if by == "week":
        return _by_week(journeys, filters, now)
    members: dict[str, list[Journey]] = {}
    owner_of = _owner_keys(journeys) if by == "owner" else None
    for journey in journeys:
        key = journey.kit if owner_of is None else owner_of(journey)
        members.setdefault(key, []).append(journey)
    return sorted(members.items(), key=lambda item: (-len(item[1]), item[0]))


def _owner_keys(journeys: list[Journey]) -> Callable[[Journey], str]:
    """A journey's sales-owner group: its email, or for a decision kept before Fullkit
    stored emails, the email a newer decision gives the same CRM id (one person, one row)."""
    emails: dict[tuple[str, str | None], str] = {
        (j.crm, j.owner_ref): j.owner_email for j in journeys if j.owner_ref and j.owner_email
    }

    def key(journey: Journey) -> str:
        if journey.owner_email:
            return journey.owner_email
        return emails.get((journey.crm, journey.owner_ref)) or journey.owner

    return key


def _owner_name(members: list[Journey]) -> str | None:
    return next((j.owner_name for j in members if j.owner_name), None)


def _by_week(
    journeys: list[Journey], filters: Filters, now: dt.datetime
) -> list[tuple[str, list[Journey]]]:
    """Every week from the first journey's to the last one's, or to now's when `since`
    asks for a period up to now; empty weeks too, or a chart or column with a week left
    out would read as continuous."""
    if not journeys:
        return []
    members: dict[str, list[Journey]] = {}
    for journey in journeys:
        members.setdefault(journey.week, []).append(journey)
    days = [journey.started.date() for journey in journeys]
    last = max(max(days), now.date()) if filters.since is not None else max(days)
    monday = min(days) - dt.timedelta(days=min(days).weekday())
    weeks: list[tuple[str, list[Journey]]] = []
    while monday <= last:
        week = iso_week(monday)
        weeks.append((week, members.get(week, [])))
        monday += dt.timedelta(weeks=1)
    return weeks


# --- the stable JSON shape ------------------------------------------------------------


def report_json(report: Report) -> dict[str, Any]:
    """`fullkit report --format json`; the README documents it. Keys are only added."""
    return {
        "generated_at": _iso(report.generated_at),
        "filters": {
            "since": _iso(report.filters.since),
            "crm": report.filters.crm,
            "kit": report.filters.kit,
        },
        "by": report.by,
        "overall": figures_json(report.overall),
        "groups": [_group_json(g, report.by) for g in report.groups],
    }


def _group_json(group: Group, by: str | None) -> dict[str, Any]:
    named = {"name": group.name} if by == "owner" else {}
    return {"key": group.key, **named, **figures_json(group.figures)}


def figures_json(f: Figures) -> dict[str, Any]:
    return {
        "journeys": f.journeys,
        "outcomes": dict(f.outcomes),
        "first_pass": {
            "judged": f.judged,
            "accepted": f.first_pass,
            "yield": _round(f.first_pass_yield),
        },
        "returns": {
            "returned_attempts": f.returned_attempts,
            "per_journey": _round(f.returns_per_journey),
            "distribution": [{"returns": n, "journeys": c} for n, c in f.returns.items()],
        },
        "time_to_acceptance": _spread_json(f.to_acceptance),
        "time_with_sales": _spread_json(f.with_sales),
        "top_missing": [
            {"id": m.id, "message": m.message, "attempts": m.attempts, "deals": m.deals}
            for m in f.missing
        ],
    }


def _spread_json(spread: Spread) -> dict[str, Any]:
    return {
        "journeys": spread.count,
        "median_seconds": _round(spread.median, 1),
        "p90_seconds": _round(spread.p90, 1),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
