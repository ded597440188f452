"""Hand-off figures for /metrics, read from the ledger with SQL aggregates at scrape time.

Workers run the hand-offs, maybe on other hosts; a web process answers the scrape. The
ledger is what they all share, and it already holds every fact these figures count, each
written once however often a step was retried: an attempt's transitions, its findings,
the stage changes recorded. So counting from it survives restarts of every process and
never counts a retried step twice, with nothing to keep in step beside it. (Counters the
workers kept in Redis would have to be incremented next to each ledger commit, and a crash
between the two would lose or double a count.)

Cost: a handful of GROUP BY queries over attempts and transitions, histogram buckets
summed in SQL with CASE, so no rows come back to Python. `CachedFigures` runs them only
when the ledger changed since the last read (the newest transitions and stage changes and
their numbers: one query over indexes), and then no more often than ten times the last
read's own duration, so the load they put on the ledger stays bounded as it grows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CTE, ColumnElement, Float, case, distinct, func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bridge.models import Attempt, StageChange, Transition

# An attempt's outcome is the first time it reached one of these states.
OUTCOMES = ("accepted", "returned", "failed", "no_kit")
SETTLED = ("returned", "ops_created")
NO_KIT = "none"  # the kit label of attempts no kit was chosen for (yet)
# Stage change occurred -> settled. The SPEC promises seconds, and 20 s at most when quiet.
LATENCY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
# First hand-off -> acceptance: immediate, or sales fixing the kit over hours and days.
HOUR, DAY = 3600.0, 86400.0
SALES_BUCKETS = (60.0, 600.0, HOUR, 4 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY)


@dataclass(frozen=True)
class Histogram:
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # observations <= each bound
    count: int
    total: float  # sum of the observations, seconds


@dataclass
class LedgerFigures:
    attempts_by_state: dict[str, int] = field(default_factory=dict)
    handoffs: dict[tuple[str, str, str], int] = field(default_factory=dict)  # crm, kit, outcome
    findings: dict[tuple[str, str], int] = field(default_factory=dict)  # kit, requirement
    latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # crm, kit
    sales_time: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # crm, kit
    stage_changes: dict[tuple[str, str], int] = field(default_factory=dict)  # crm, outcome


class SecondsBetween(FunctionElement[float]):
    """`later - earlier` in seconds, as each database spells it."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(SecondsBetween)
def _sqlite_seconds(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


@compiles(SecondsBetween, "postgresql")
def _postgresql_seconds(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


def read(session: Session) -> LedgerFigures:
    return LedgerFigures(
        attempts_by_state=_attempts_by_state(session),
        handoffs=_handoffs(session),
        findings=_findings(session),
        latency=_latency(session),
        sales_time=_sales_time(session),
        stage_changes=_stage_changes(session),
    )


def version(session: Session) -> tuple[Any, ...]:
    """Changes whenever a figure can: a transition or a stage change written (findings are
    written with the decision, and a transition follows them within the attempt's step).

    Counts as well as the newest ids: a transaction that took an id before another but
    committed after it leaves the newest id as it was. All four are read from indexes.
    """
    parts = [
        select(func.max(Transition.id)).scalar_subquery(),
        select(func.count()).select_from(Transition).scalar_subquery(),
        select(func.max(StageChange.id)).scalar_subquery(),
        select(func.count()).select_from(StageChange).scalar_subquery(),
    ]
    return tuple(session.execute(select(*parts)).one())


def _kit(kit_id: str | None) -> str:
    return kit_id or NO_KIT


def _attempts_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Attempt.state, func.count()).group_by(Attempt.state))
    return {state: count for state, count in rows}


def _handoffs(session: Session) -> dict[tuple[str, str, str], int]:
    # Distinct attempts: one replayed and failed again is one failed hand-off.
    query = (
        select(Attempt.crm, Attempt.kit_id, Transition.state, func.count(distinct(Attempt.id)))
        .join(Transition, Transition.attempt_id == Attempt.id)
        .where(Transition.state.in_(OUTCOMES))
        .group_by(Attempt.crm, Attempt.kit_id, Transition.state)
    )
    return {(crm, _kit(kit), state): n for crm, kit, state, n in session.execute(query)}


_FINDINGS_SQL = {
    "sqlite": """
        SELECT a.kit_id, json_extract(f.value, '$.id'), count(*)
        FROM attempts AS a, json_each(a.findings) AS f
        WHERE a.kit_id IS NOT NULL GROUP BY 1, 2""",
    "postgresql": """
        SELECT a.kit_id, f.value ->> 'id', count(*)
        FROM attempts AS a, json_array_elements(a.findings) AS f
        WHERE a.kit_id IS NOT NULL GROUP BY 1, 2""",
}


def _findings(session: Session) -> dict[tuple[str, str], int]:
    """How often each requirement was missing when its kit was judged."""
    dialect = session.get_bind().dialect.name
    rows = session.execute(text(_FINDINGS_SQL[dialect]))
    return {(kit, str(requirement)): n for kit, requirement, n in rows if requirement}


def _latency(session: Session) -> dict[tuple[str, str], Histogram]:
    """Stage change occurred -> the attempt settled (returned, or its ops ticket made)."""
    seconds = SecondsBetween(Transition.at, Attempt.trigger_at)
    rows = (
        select(Attempt.crm, Attempt.kit_id, seconds.label("seconds"))
        .join(Transition, Transition.attempt_id == Attempt.id)
        .where(Transition.state.in_(SETTLED))
        .cte("settled")
    )
    return _histograms(session, rows, LATENCY_BUCKETS)


def _sales_time(session: Session) -> dict[tuple[str, str], Histogram]:
    """The deal's first hand-off (its first attempt's stage change) -> ops accepted it.

    Attempts that found no kit are no hand-off (Fullkit left the deal alone, and sales
    held nothing ops could take), so the first is the first a kit judged, as the report's
    journeys start."""
    first = aliased(Attempt)
    earlier = aliased(Attempt)
    first_number = (
        select(func.min(earlier.number))
        .where(
            (earlier.crm == Attempt.crm)
            & (earlier.deal_id == Attempt.deal_id)
            & (earlier.state != "no_kit")
        )
        .scalar_subquery()
    )
    seconds = SecondsBetween(Transition.at, first.trigger_at)
    rows = (
        select(Attempt.crm, Attempt.kit_id, seconds.label("seconds"))
        .join(Transition, Transition.attempt_id == Attempt.id)
        .join(
            first,
            (first.crm == Attempt.crm)
            & (first.deal_id == Attempt.deal_id)
            & (first.number == first_number),
        )
        .where(Transition.state == "accepted")
        .cte("accepted")
    )
    return _histograms(session, rows, SALES_BUCKETS)


def _histograms(
    session: Session, rows: CTE, bounds: Sequence[float]
) -> dict[tuple[str, str], Histogram]:
    # Materialized: each row's seconds computed once, not once per bucket (SQLite would
    # inline the subquery and compute them a dozen times a row).
    rows = rows.prefix_with("MATERIALIZED")
    seconds: ColumnElement[float] = rows.c.seconds
    buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds]
    query = select(rows.c.crm, rows.c.kit_id, func.count(), func.sum(seconds), *buckets).group_by(
        rows.c.crm, rows.c.kit_id
    )
    found = {}
    for crm, kit, count, total, *cumulative in session.execute(query):
        found[(crm, _kit(kit))] = Histogram(
            tuple(bounds), tuple(int(n or 0) for n in cumulative), int(count), float(total or 0)
        )
    return found


def _stage_changes(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(StageChange.crm, StageChange.outcome, func.count()).group_by(
            StageChange.crm, StageChange.outcome
        )
    )
    return {(crm, outcome): n for crm, outcome, n in rows}


class CachedFigures:
    """`read`, run again only once the ledger changed, and no sooner than REUSE_FACTOR
    times as long as the last read took: a small ledger's figures are fresh at every
    scrape, while a big one's (about 2 s on SQLite at 100,000 attempts on a busy 2-core
    machine) are at most that many times 2 s old, and reading them never takes more than
    a tenth of one process's time, however often Prometheus scrapes. Thread-safe."""

    REUSE_FACTOR = 10.0

    def __init__(
        self, sessions: Callable[[], Session], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: tuple[tuple[Any, ...], LedgerFigures] | None = None
        self._fresh_until = float("-inf")

    def __call__(self) -> LedgerFigures:
        with self._lock:
            if self._seen is not None and self._clock() < self._fresh_until:
                return self._seen[1]
            with self._sessions() as session:
                started = self._clock()
                now = version(session)
                if self._seen is None or self._seen[0] != now:
                    self._seen = (now, read(session))
                took = self._clock() - started
            self._fresh_until = self._clock() + took * self.REUSE_FACTOR
            return self._seen[1]
