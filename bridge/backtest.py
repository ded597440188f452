"""`fullkit kit backtest`: the stored decisions judged again by a changed rules folder.

Every judged attempt keeps the packet it judged (its decision's snapshot). For each deal's
latest judged attempt, the candidate rules pick a kit and evaluate it exactly as the
hand-off does (`Rules.kits_entered`, `select_kit`, `evaluate`), with `today` the day it was
judged, so date checks compare as they did then. What differs from the stored decision is
reported; nothing is written: the ledger is read through a read-only transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, and_, func, select

from bridge.evaluator import LimitExceeded, evaluate, select_kit
from bridge.models import Attempt, DecisionRecord
from bridge.rules import Kit, Rules, schema_for
from kernel.decision import ACCEPTED, NO_KIT, RETURNED

# Rows fetched from the database at a time: the ledger may hold years of decisions, and
# each snapshot may carry hundreds of contacts.
BATCH_ROWS = 500
UNREADABLE = "unreadable"
FINDINGS_CHANGED = "findings changed"
KIT_CHANGED = "kit changed"
_PACKET_LISTS = {"contacts": "contact", "line_items": "line_item", "attachments": "attachment"}


@dataclass(frozen=True)
class Verdict:
    kit_id: str | None  # None: no kit applies
    findings: tuple[tuple[str, str], ...]  # (requirement id, message), kit order

    @property
    def outcome(self) -> str:
        if self.kit_id is None:
            return NO_KIT
        return RETURNED if self.findings else ACCEPTED

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "kit": self.kit_id,
            "findings": [{"id": rid, "message": message} for rid, message in self.findings],
        }


@dataclass(frozen=True)
class Stored:
    """One deal's latest judged attempt, as the ledger keeps it."""

    crm: str
    deal_id: str
    attempt: int
    trigger_stage: str
    judged_on: dt.date
    verdict: Verdict


@dataclass(frozen=True)
class Change:
    """How the candidate rules would judge a deal differently from the stored decision."""

    stored: Stored
    kind: str  # "before→after" for a flip, else KIT_CHANGED, FINDINGS_CHANGED, UNREADABLE
    after: Verdict | None  # None when the packet could not be judged again
    problem: str | None = None  # why not (UNREADABLE)
    # Judged from a snapshot that never held attachments, by a kit that reads them.
    attachments_unread: bool = False

    @property
    def flip(self) -> bool:
        return self.after is not None and self.after.outcome != self.stored.verdict.outcome

    @property
    def added(self) -> tuple[tuple[str, str], ...]:
        before = {rid for rid, _ in self.stored.verdict.findings}
        return tuple(f for f in self.after.findings if f[0] not in before) if self.after else ()

    @property
    def removed(self) -> tuple[tuple[str, str], ...]:
        if self.after is None:
            return ()
        after = {rid for rid, _ in self.after.findings}
        return tuple(f for f in self.stored.verdict.findings if f[0] not in after)

    def why(self) -> list[str]:
        """The reasons in the kits' own words: a requirement per line."""
        if self.after is None:
            return [f"cannot judge the stored packet: {self.problem}"]
        before, after = self.stored.verdict, self.after
        lines: list[str] = []
        if after.kit_id is None:
            lines.append("no kit applies any more")
        elif before.kit_id is None:
            lines.append(f"kit {after.kit_id} now applies")
        elif before.kit_id != after.kit_id:
            lines.append(f"judged by kit {after.kit_id} instead of {before.kit_id}")
        lines += [f"+ {message}" for _, message in self.added]
        if after.kit_id is not None:
            lines += [f"- {message}" for _, message in self.removed]
        if self.attachments_unread:
            lines.append("(attachments were not read when it was judged: this may be wrong)")
        return lines

    def as_json(self) -> dict[str, Any]:
        stored = self.stored
        return {
            "crm": stored.crm,
            "deal_id": stored.deal_id,
            "attempt": stored.attempt,
            "judged_on": stored.judged_on.isoformat(),
            "change": self.kind,
            "flip": self.flip,
            "before": stored.verdict.as_json(),
            "after": self.after.as_json() if self.after else None,
            "added": [{"id": rid, "message": message} for rid, message in self.added],
            "removed": [{"id": rid, "message": message} for rid, message in self.removed],
            "problem": self.problem,
            "attachments_unread": self.attachments_unread,
            "why": self.why(),
        }


@dataclass
class Report:
    rejudged: int = 0  # deals whose latest decision was judged again (or tried)
    unchanged: int = 0
    changes: list[Change] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # by Change.kind

    @property
    def flips(self) -> int:
        return sum(1 for change in self.changes if change.flip)


def run(connection: Connection, rules: Rules, since: dt.datetime) -> Report:
    """Judge again, with `rules`, each deal's latest decision stored since `since`."""
    report = Report()
    with read_only(connection):
        for stored, snapshot in stored_decisions(connection, since):
            report.rejudged += 1
            change = compare(rules, stored, snapshot)
            if change is None:
                report.unchanged += 1
                continue
            report.changes.append(change)
            report.counts[change.kind] += 1
    return report


@contextmanager
def read_only(connection: Connection) -> Iterator[Connection]:
    """A transaction that cannot write, rolled back at the end, on SQLite and PostgreSQL."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA query_only = ON")
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
    try:
        yield connection
    finally:
        connection.rollback()
        if sqlite:
            # The connection goes back to its pool: whoever takes it next may write.
            connection.exec_driver_sql("PRAGMA query_only = OFF")


def stored_decisions(
    connection: Connection, since: dt.datetime
) -> Iterator[tuple[Stored, dict[str, Any]]]:
    """Each deal's latest attempt with a decision stored since `since`, and the packet it
    judged, streamed in batches (a change keeps no packet: thousands of flips may hold
    hundreds of contacts each); decisions made before Fullkit kept the packet are left out."""
    judged = and_(DecisionRecord.created_at >= since, DecisionRecord.snapshot.is_not(None))
    latest = (
        select(Attempt.crm, Attempt.deal_id, func.max(Attempt.number).label("number"))
        .join(DecisionRecord, DecisionRecord.attempt_id == Attempt.id)
        .where(judged)
        .group_by(Attempt.crm, Attempt.deal_id)
        .subquery()
    )
    query = (
        select(
            Attempt.crm,
            Attempt.deal_id,
            Attempt.number,
            Attempt.trigger_stage,
            DecisionRecord.kit_id,
            DecisionRecord.outcome,
            DecisionRecord.findings,
            DecisionRecord.judged_on,
            DecisionRecord.snapshot,
        )
        .join(DecisionRecord, DecisionRecord.attempt_id == Attempt.id)
        .join(
            latest,
            and_(
                latest.c.crm == Attempt.crm,
                latest.c.deal_id == Attempt.deal_id,
                latest.c.number == Attempt.number,
            ),
        )
        .order_by(Attempt.crm, Attempt.deal_id)
    )
    for row in connection.execute(query.execution_options(yield_per=BATCH_ROWS)):
        if not isinstance(row.snapshot, dict):
            # Revision 0003 stored "no packet" as JSON null, which IS NOT NULL lets by.
            continue
        stored = Stored(
            crm=row.crm,
            deal_id=row.deal_id,
            attempt=row.number,
            trigger_stage=row.trigger_stage,
            judged_on=row.judged_on,
            verdict=Verdict(
                None if row.outcome == NO_KIT else row.kit_id,
                tuple((f["id"], f["message"]) for f in row.findings or []),
            ),
        )
        yield stored, row.snapshot


def compare(rules: Rules, stored: Stored, snapshot: dict[str, Any]) -> Change | None:
    """The change the candidate rules make to this decision; None when they agree."""
    try:
        packet = rules.packet_from_json(readable_part(rules, snapshot))
    except ValueError as exc:
        return Change(stored, UNREADABLE, None, problem=str(exc))
    kits = rules.kits_entered(stored.crm, stored.trigger_stage)
    try:
        kit = select_kit(kits, packet, stored.judged_on)
        findings = evaluate(kit, packet, stored.judged_on) if kit is not None else []
    except LimitExceeded as exc:
        return Change(stored, UNREADABLE, None, problem=str(exc))
    after = Verdict(
        kit.id if kit is not None else None,
        tuple((f.requirement_id, f.message) for f in findings),
    )
    before = stored.verdict
    if after == before:
        return None
    if after.outcome != before.outcome:
        kind = f"{before.outcome}→{after.outcome}"
    elif after.kit_id != before.kit_id:
        kind = KIT_CHANGED
    elif {rid for rid, _ in after.findings} != {rid for rid, _ in before.findings}:
        kind = FINDINGS_CHANGED
    else:
        return None  # only a message's wording changed: the same requirements fail
    change = Change(stored, kind, after)
    if not packet.attachments and _rests_on_attachments(change, kit, kits):
        # The hand-off reads attachments only for deals whose kit needs them
        # (`evaluator.needs`): an empty list may mean "not read", not "none".
        change = replace(change, attachments_unread=True)
    return change


def _rests_on_attachments(change: Change, kit: Kit | None, kits: list[Kit]) -> bool:
    """Whether the change comes from reading attachments: the choice of kit, or a new
    finding of a requirement that reads them."""
    if any(candidate.chooser_uses("attachments") for candidate in kits):
        return True
    readers = {req.id for req in kit.requirements if req.uses("attachments")} if kit else set()
    return any(rid in readers for rid, _ in change.added)


def readable_part(rules: Rules, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without the fields the candidate mapping no longer maps: no kit of a
    valid folder can read them, and the hand-off would not have fetched them. A field whose
    type changed stays, and fails to read if its stored value does not fit."""
    mapping = rules.mappings.get(snapshot.get("crm", ""))
    if mapping is None:
        return snapshot
    schema = schema_for(mapping)

    def known(kind: str, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        fields = schema.known(kind)
        return {name: value for name, value in values.items() if name in fields}

    part = dict(snapshot)
    for key in ("deal", "company"):
        if key in part:
            part[key] = known(key, part[key])
    for key, kind in _PACKET_LISTS.items():
        if isinstance(part.get(key), list):
            part[key] = [known(kind, item) for item in part[key]]
    return part


def summary(report: Report) -> str:
    """`N deals re-judged, X would flip: a accepted→returned, ...; K kit changed, ...`."""
    flips = [(kind, n) for kind, n in sorted(report.counts.items()) if "→" in kind]
    others = [(kind, n) for kind, n in sorted(report.counts.items()) if "→" not in kind]
    deals = f"{report.rejudged} deal{'s' if report.rejudged != 1 else ''} re-judged"
    line = f"{deals}, {report.flips} would flip"
    if flips:
        line += ": " + ", ".join(f"{n} {kind}" for kind, n in flips)
    if others:
        line += "; " + ", ".join(f"{n} {kind}" for kind, n in others)
    return line


def ordered(report: Report) -> list[Change]:
    """Flips first, then kit changes, changed findings and unreadable packets; by deal."""
    rank = {KIT_CHANGED: 1, FINDINGS_CHANGED: 2, UNREADABLE: 3}
    return sorted(
        report.changes,
        key=lambda c: (rank.get(c.kind, 0), c.kind, c.stored.crm, c.stored.deal_id),
    )


def table(changes: list[Change]) -> list[str]:
    """A fixed-width table: deal, kit, before → after, and why, a reason per line."""
    rows = [
        (
            f"{c.stored.crm}:{c.stored.deal_id}",
            _kits(c),
            f"{c.stored.verdict.outcome} → {c.after.outcome if c.after else '?'}",
            c.why(),
        )
        for c in changes
    ]
    header = ("DEAL", "KIT", "BEFORE → AFTER")
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(3)]

    def line(cells: tuple[str, str, str], why: str) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + (
            f"  {why}"
        )

    lines = [line(header, "WHY")]
    for deal, kits, outcomes, why in rows:
        first, *rest = why or [""]
        lines.append(line((deal, kits, outcomes), first))
        lines += [line(("", "", ""), more) for more in rest]
    return [text.rstrip() for text in lines]


def _kits(change: Change) -> str:
    before = change.stored.verdict.kit_id or "(none)"
    if change.after is None or change.after.kit_id == change.stored.verdict.kit_id:
        return before
    return f"{before} → {change.after.kit_id or '(none)'}"
