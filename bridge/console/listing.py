"""The hand-off list: one row per deal (its latest attempt), filtered, failed ones first.

One row per deal because that is what an ops lead asks of the list: where does each
deal stand now. Earlier attempts are one click away on the deal's timeline.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from bridge.deal_ids import CRMS
from bridge.models import Attempt, DecisionRecord

PAGE_SIZE = 50
# In the order a hand-off moves through them; failed and no_kit step out of the flow.
STATES = ("failed", "received", "evaluating", "accepted", "ops_created", "returned", "no_kit")
ERROR_EXCERPT = 140
_SINCE = re.compile(r"(\d{1,4})([dh])")
_LIMITS = {"kit": 200, "sales": 320, "ops": 320}


class BadFilter(ValueError):
    """Filter values that name nothing; each message says what would."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Filters:
    state: str = ""
    crm: str = ""
    kit: str = ""
    sales: str = ""  # the deal's owner in the CRM: their email or CRM id, any case
    ops: str = ""  # the ops owner's email
    since: str = ""  # as typed: 7d, 12h or a date
    since_at: dt.datetime | None = None
    page: int = 1

    def query_args(self, **changes: object) -> dict[str, object]:
        """The filters as query parameters (empty ones left out), with `changes` applied."""
        values: dict[str, object] = {
            "state": self.state, "crm": self.crm, "kit": self.kit, "sales": self.sales,
            "ops": self.ops, "since": self.since, "page": self.page if self.page > 1 else "",
        }  # fmt: skip
        values.update(changes)
        return {name: value for name, value in values.items() if value not in ("", None)}


def parse_filters(args: Mapping[str, str], now: dt.datetime) -> Filters:
    """The list's query parameters, checked; BadFilter names every bad one."""
    problems: list[str] = []
    state = args.get("state", "").strip()
    if state and state not in STATES:
        problems.append(f"state {state!r} is not one of {', '.join(STATES)}")
    crm = args.get("crm", "").strip()
    if crm and crm not in CRMS:
        problems.append(f"CRM {crm!r} is not one of {', '.join(CRMS)}")
    texts = {name: args.get(name, "").strip() for name in _LIMITS}
    for name, limit in _LIMITS.items():
        if len(texts[name]) > limit:
            problems.append(f"{name} is longer than {limit} characters")
        elif not texts[name].isprintable():
            # PostgreSQL refuses a NUL in a query outright: a 503 for a typo otherwise.
            problems.append(f"{name} holds a control character")
    since = args.get("since", "").strip()
    since_at = _since(since, now, problems)
    page = _page(args.get("page", "").strip(), problems)
    if problems:
        raise BadFilter(problems)
    return Filters(state, crm, texts["kit"], texts["sales"], texts["ops"], since, since_at, page)


def _since(value: str, now: dt.datetime, problems: list[str]) -> dt.datetime | None:
    if not value:
        return None
    relative = _SINCE.fullmatch(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return now - (dt.timedelta(days=amount) if unit == "d" else dt.timedelta(hours=amount))
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        problems.append(f"since {value!r} is not a number of days or hours (7d, 12h) or a date")
        return None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _page(value: str, problems: list[str]) -> int:
    if not value:
        return 1
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 100_000:
        problems.append(f"page {value!r} is not a page number")
        return 1
    return int(value)


@dataclass(frozen=True)
class Row:
    crm: str
    deal_id: str
    attempt: int
    kit: str | None
    state: str
    owner: str
    owner_since: dt.datetime
    ops_owner: str | None
    sales_owner: str | None  # the CRM id
    sales_email: str | None
    sales_name: str | None
    deal_url: str | None
    error: str | None
    missing: int
    updated_at: dt.datetime


@dataclass
class Listing:
    rows: list[Row]
    counts: dict[str, int]  # per state, under every filter but the state
    total: int  # rows under every filter
    pages: int
    kits: list[str] = field(default_factory=list)


def handoffs(session: Session, filters: Filters) -> Listing:
    latest = (
        select(Attempt.crm, Attempt.deal_id, func.max(Attempt.number).label("number"))
        .group_by(Attempt.crm, Attempt.deal_id)
        .subquery()
    )
    conditions = _conditions(filters)

    def scoped(query: Select) -> Select:
        return (
            query.join(
                latest,
                and_(
                    Attempt.crm == latest.c.crm,
                    Attempt.deal_id == latest.c.deal_id,
                    Attempt.number == latest.c.number,
                ),
            )
            .outerjoin(DecisionRecord, DecisionRecord.attempt_id == Attempt.id)
            .where(*conditions)
        )

    counted = scoped(select(Attempt.state, func.count()).select_from(Attempt))
    counts: dict[str, int] = {
        state: count for state, count in session.execute(counted.group_by(Attempt.state))
    }
    total = counts.get(filters.state, 0) if filters.state else sum(counts.values())
    # The decision's narrow columns only: its snapshot can be a deal's hundreds of contacts.
    rows_query = scoped(
        select(
            Attempt,
            DecisionRecord.owner_ref,
            DecisionRecord.owner_email,
            DecisionRecord.owner_name,
            DecisionRecord.deal_url,
        )
    )
    if filters.state:
        rows_query = rows_query.where(Attempt.state == filters.state)
    rows_query = (
        rows_query.order_by(
            case((Attempt.state == "failed", 0), else_=1),
            Attempt.updated_at.desc(),
            Attempt.id.desc(),
        )
        .limit(PAGE_SIZE)
        .offset((filters.page - 1) * PAGE_SIZE)
    )
    rows = [_row(attempt, *decided) for attempt, *decided in session.execute(rows_query)]
    kits = session.scalars(select(Attempt.kit_id).where(Attempt.kit_id.is_not(None)).distinct())
    return Listing(
        rows=rows,
        counts=counts,
        total=total,
        pages=max(1, -(-total // PAGE_SIZE)),
        kits=sorted(k for k in kits if k),
    )


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.crm:
        conditions.append(Attempt.crm == filters.crm)
    if filters.kit:
        conditions.append(Attempt.kit_id == filters.kit)
    if filters.sales:
        # People know a salesperson by email; the id still works, as links carry it.
        wanted = filters.sales.lower()
        conditions.append(
            or_(
                func.lower(DecisionRecord.owner_email) == wanted,
                func.lower(DecisionRecord.owner_ref) == wanted,
            )
        )
    if filters.ops:
        conditions.append(func.lower(Attempt.ops_owner) == filters.ops.lower())
    if filters.since_at is not None:
        conditions.append(Attempt.updated_at >= filters.since_at)
    return conditions


def _row(
    attempt: Attempt,
    owner_ref: str | None,
    owner_email: str | None,
    owner_name: str | None,
    deal_url: str | None,
) -> Row:
    error = attempt.error
    if error and len(error) > ERROR_EXCERPT:
        error = error[: ERROR_EXCERPT - 1] + "…"
    return Row(
        crm=attempt.crm,
        deal_id=attempt.deal_id,
        attempt=attempt.number,
        kit=attempt.kit_id,
        state=attempt.state,
        owner=attempt.owner,
        owner_since=attempt.owner_since,
        ops_owner=attempt.ops_owner,
        sales_owner=owner_ref,
        sales_email=owner_email,
        sales_name=owner_name,
        deal_url=deal_url,
        error=error,
        missing=len(attempt.findings or []),
        updated_at=attempt.updated_at,
    )
