"""Who owns each deal, since when and why: the ledger's rules over the models."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from bridge.intake import StageChange as Change
from bridge.models import Attempt, DecisionRecord, RoundRobin, StageChange, Transition
from kernel.decision import NO_KIT, Decision, packet_snapshot, snapshot_digest
from kernel.packet import Finding, Packet

SALES, OPS = "sales", "ops"
IN_PROGRESS = ("received", "evaluating", "accepted")
TERMINAL = ("returned", "ops_created", "failed", "no_kit")
# Outcomes after which the deal is back with sales and a new hand-off may start.
REOPENING = ("returned", "no_kit")
OWNER_OF_STATE = {
    "received": SALES,
    "evaluating": SALES,
    "returned": SALES,
    "no_kit": SALES,
    "accepted": OPS,
    "ops_created": OPS,
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ChangeOutcome:
    outcome: str  # started | duplicate | in_progress | ops_owns | stale | failed_attempt
    attempt_id: int | None


# What the history shows of a decision: its snapshot can be a deal's hundreds of contacts.
_OWNER_COLUMNS = (DecisionRecord.owner_ref, DecisionRecord.owner_email, DecisionRecord.owner_name)


def record_stage_change(sessions: sessionmaker, change: Change) -> ChangeOutcome:
    """Record one hand-off-stage change once; start an attempt when ownership allows.

    Concurrent deliveries race on unique constraints, not on reads: the loser rolls
    back and looks again, so one change never starts two attempts.
    """
    for _ in range(5):
        with sessions() as session:
            try:
                result = _record(session, change)
                session.commit()
                return result
            except IntegrityError:
                session.rollback()
                if _change_exists(session, change):
                    return ChangeOutcome("duplicate", None)
    raise RuntimeError(f"could not record the stage change of {change.crm}:{change.deal_id}")


def record_stage_changes(sessions: sessionmaker, changes: list[Change]) -> list[ChangeOutcome]:
    """Record a delivery's changes in one transaction: two reads, one commit.

    Changes of the same deal are judged in order, each seeing the attempt an earlier one
    started. If a concurrent delivery takes one of their keys meanwhile, the transaction
    rolls back and each change is recorded alone, as `record_stage_change`.
    """
    if len(changes) > 1:
        with sessions() as session:
            try:
                results = _record_all(session, changes)
                session.commit()
                return results
            except IntegrityError:
                session.rollback()
    return [record_stage_change(sessions, change) for change in changes]


def _record_all(session: Session, changes: list[Change]) -> list[ChangeOutcome]:
    """`_record` for many changes, reading what they need up front instead of per change."""
    seen: set[tuple[str, str]] = set()
    latest: dict[tuple[str, str], Attempt] = {}
    for crm in {change.crm for change in changes}:
        of_crm = [change for change in changes if change.crm == crm]
        keys = [change.change_key for change in of_crm]
        known = select(StageChange.change_key).where(
            StageChange.crm == crm, StageChange.change_key.in_(keys)
        )
        seen.update((crm, key) for key in session.scalars(known))
        attempts = select(Attempt).where(
            Attempt.crm == crm, Attempt.deal_id.in_({change.deal_id for change in of_crm})
        )
        for row in session.scalars(attempts.options(selectinload(Attempt.transitions))):
            found = latest.get((crm, row.deal_id))
            if found is None or row.number > found.number:
                latest[(crm, row.deal_id)] = row
    now = utcnow()
    judged: list[tuple[Change, str, Attempt | None]] = []
    started: list[Attempt] = []
    for change in changes:
        if (change.crm, change.change_key) in seen:
            judged.append((change, "duplicate", None))
            continue
        seen.add((change.crm, change.change_key))
        before = latest.get((change.crm, change.deal_id))
        attempt: Attempt | None
        outcome, attempt = _decide(before, change.occurred_at)
        if outcome == "started":
            attempt = new_attempt(change, (before.number + 1) if before else 1, now)
            latest[(change.crm, change.deal_id)] = attempt
            started.append(attempt)
        judged.append((change, outcome, attempt))
    session.add_all(started)
    session.flush()  # the new attempts' ids, for their stage changes
    for change, outcome, attempt in judged:
        if outcome != "duplicate":
            session.add(_stage_change(change, outcome, attempt, now))
    session.flush()
    return [
        ChangeOutcome(outcome, None if outcome == "duplicate" or not a else a.id)
        for _, outcome, a in judged
    ]


def would_start(session: Session, change: Change) -> bool:
    """Whether recording this change now would start an attempt (the rules of `_record`)."""
    if _change_exists(session, change):
        return False
    outcome, _ = _decide(latest_attempt(session, change.crm, change.deal_id), change.occurred_at)
    return outcome == "started"


def _change_exists(session: Session, change: Change) -> bool:
    query = select(StageChange.id).where(
        StageChange.crm == change.crm, StageChange.change_key == change.change_key
    )
    return session.scalar(query) is not None


def _record(session: Session, change: Change) -> ChangeOutcome:
    if _change_exists(session, change):
        return ChangeOutcome("duplicate", None)
    now = utcnow()
    latest = latest_attempt(session, change.crm, change.deal_id)
    outcome, attempt = _decide(latest, change.occurred_at)
    if outcome == "started":
        number = (latest.number + 1) if latest else 1
        attempt = new_attempt(change, number, now)
        session.add(attempt)
        session.flush()
    session.add(_stage_change(change, outcome, attempt, now))
    session.flush()
    return ChangeOutcome(outcome, attempt.id if attempt else None)


def _stage_change(
    change: Change, outcome: str, attempt: Attempt | None, now: dt.datetime
) -> StageChange:
    return StageChange(
        crm=change.crm,
        change_key=change.change_key,
        deal_id=change.deal_id,
        stage_ref=change.stage_ref,
        occurred_at=change.occurred_at,
        received_at=now,
        event_ref=change.event_ref,
        outcome=outcome,
        attempt_id=attempt.id if attempt else None,
    )


def _decide(latest: Attempt | None, occurred_at: dt.datetime) -> tuple[str, Attempt | None]:
    if latest is None:
        return "started", None
    if latest.state in REOPENING:
        if occurred_at > latest.transitions[-1].at:
            return "started", None
        return "stale", latest
    if latest.state == "failed":
        return "failed_attempt", latest
    if latest.owner == OPS:
        return "ops_owns", latest
    return "in_progress", latest


def new_attempt(change: Change, number: int, now: dt.datetime) -> Attempt:
    attempt = Attempt(
        crm=change.crm,
        deal_id=change.deal_id,
        number=number,
        state="received",
        owner=SALES,
        owner_since=now,
        findings=[],
        trigger_stage=change.stage_ref,
        trigger_at=change.occurred_at,
        task_started=False,
        ops_started=False,
        retries=0,
        created_at=now,
        updated_at=now,
    )
    attempt.transitions.append(Transition(state="received", owner=SALES, at=now))
    return attempt


def latest_attempt(session: Session, crm: str, deal_id: str) -> Attempt | None:
    query = (
        select(Attempt)
        .where(Attempt.crm == crm, Attempt.deal_id == deal_id)
        .order_by(Attempt.number.desc())
        .limit(1)
    )
    return session.scalar(query)


def ready_attempt_ids(session: Session, crm: str, now: dt.datetime, limit: int) -> list[int]:
    """Attempts of a CRM in progress with no retry pending (oldest first), leased or not."""
    query = (
        select(Attempt.id)
        .where(
            Attempt.crm == crm,
            Attempt.state.in_(IN_PROGRESS),
            or_(Attempt.next_run_at.is_(None), Attempt.next_run_at <= now),
        )
        .order_by(Attempt.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def claimed_attempts(session: Session, ids: list[int], named: set[int]) -> list[Attempt]:
    """The leased attempts still ready now that they are ours (another worker may have
    advanced or rescheduled one between the look and the lease); named ones even early."""
    now = utcnow()
    query = (
        select(Attempt)
        .where(Attempt.id.in_(ids))
        .options(selectinload(Attempt.transitions))
        .order_by(Attempt.id)
    )
    return [
        attempt
        for attempt in session.scalars(query)
        if attempt.state in IN_PROGRESS
        and (attempt.next_run_at is None or attempt.next_run_at <= now or attempt.id in named)
    ]


def move(attempt: Attempt, state: str, detail: str | None = None) -> None:
    """Write a transition; ownership follows the state (a failure keeps the owner)."""
    now = utcnow()
    owner = OWNER_OF_STATE.get(state, attempt.owner)
    if owner != attempt.owner:
        attempt.owner_since = now
    attempt.owner = owner
    attempt.state = state
    attempt.updated_at = now
    attempt.transitions.append(Transition(state=state, owner=owner, at=now, detail=detail))


def next_ops_owner(session: Session, kit_id: str, owners: tuple[str, ...]) -> str | None:
    """The kit's next owner in round-robin, claimed atomically across workers."""
    return next_ops_owners(session, kit_id, owners, 1)[0]


def next_ops_owners(
    session: Session, kit_id: str, owners: tuple[str, ...], count: int
) -> list[str | None]:
    """The kit's next `count` owners in round-robin, claimed with one atomic update.

    A batch accepts many deals of a kit at once; claiming them one by one cost a read,
    an update and a flush of the whole batch's session per deal.
    """
    if not owners or count < 1:
        return [None] * count
    for _ in range(5):
        row = session.get(RoundRobin, kit_id)
        if row is None:
            try:
                with session.begin_nested():
                    session.add(RoundRobin(kit_id=kit_id, next_index=count))
                return [owners[i % len(owners)] for i in range(count)]
            except IntegrityError:
                continue
        index = row.next_index
        claimed = session.execute(
            update(RoundRobin)
            .where(RoundRobin.kit_id == kit_id, RoundRobin.next_index == index)
            .values(next_index=index + count)
        )
        session.expire(row)
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return [owners[(index + i) % len(owners)] for i in range(count)]
    raise RuntimeError(f"could not claim the next ops owner of kit {kit_id}")


def iso(moment: dt.datetime | None) -> str | None:
    """UTC with milliseconds and a trailing Z, as HubSpot writes its own timestamps.

    Whole seconds would hide how long each step took and make steps of one second
    look simultaneous; a fixed width keeps the strings sortable as text.
    """
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt": attempt.number,
        "kit": attempt.kit_id,
        "state": attempt.state,
        "owner": attempt.owner,
        "findings": [{"id": f["id"], "message": f["message"]} for f in attempt.findings],
        "ops_link": attempt.ops_link,
        "ops_owner": attempt.ops_owner,
        "error": attempt.error,
        "transitions": [{"state": t.state, "at": iso(t.at)} for t in attempt.transitions],
        "sales_owner": _sales_owner(attempt.decision),
    }


def _sales_owner(decision: DecisionRecord | None) -> dict[str, str | None] | None:
    """The deal owner when judged (an extension of the SPEC's shape): the CRM id, and
    the email and name the CRM gave for them (null on decisions kept before Fullkit
    asked); null before the deal was judged."""
    if decision is None or not (decision.owner_ref or decision.owner_email):
        return None
    return {"id": decision.owner_ref, "email": decision.owner_email, "name": decision.owner_name}


def deal_history(session: Session, crm: str, deal_id: str) -> dict[str, Any] | None:
    """The SPEC's `GET /api/handoffs/<crm>/<deal_id>` answer, or None for an unknown deal."""
    attempts = list(
        session.scalars(
            select(Attempt)
            .where(Attempt.crm == crm, Attempt.deal_id == deal_id)
            .options(selectinload(Attempt.decision).load_only(*_OWNER_COLUMNS))
            .order_by(Attempt.number)
        )
    )
    if not attempts:
        return None
    owner, since = _deal_owner(attempts)
    return {
        "crm": crm,
        "deal_id": deal_id,
        "owner": owner,
        "owner_since": iso(since),
        "attempts": [attempt_json(a) for a in attempts],
    }


def _deal_owner(attempts: list[Attempt]) -> tuple[str, dt.datetime]:
    """The deal's owner now and since when, across all its attempts."""
    owner, since = SALES, attempts[0].created_at
    for transition in (t for a in attempts for t in a.transitions):
        if transition.owner != owner:
            owner, since = transition.owner, transition.at
    return owner, since


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Attempt.state, func.count()).group_by(Attempt.state))
    return {state: count for state, count in rows}


def record_decision(attempt: Attempt, decision: Decision) -> None:
    """Store what evaluation decided; the ledger's kit and findings say the same."""
    findings = [
        {"id": f.requirement_id, "path": f.path, "message": f.message} for f in decision.findings
    ]
    attempt.kit_id = decision.kit_id
    attempt.findings = findings
    attempt.decision = DecisionRecord(
        kit_id=decision.kit_id,
        outcome=decision.outcome,
        findings=findings,
        judged_on=decision.judged_on,
        owner_ref=decision.owner_ref,
        owner_email=_cut(decision.owner_email, EMAIL_LENGTH),
        owner_name=_cut(decision.owner_name, NAME_LENGTH),
        company_ref=decision.company_ref,
        deal_url=decision.deal_url,
        return_stage_ref=decision.return_stage_ref,
        applied=list(decision.applied) if decision.applied is not None else None,
        snapshot=decision.snapshot,
        digest=decision.digest,
        created_at=utcnow(),
    )


def record_no_kit(attempt: Attempt, packet: Packet, judged_on: dt.date) -> None:
    """Keep the packet no kit applied to (for `fullkit kit backtest`); the attempt's own
    kit stays unset, as the API shows it."""
    snapshot = packet_snapshot(packet)
    attempt.decision = DecisionRecord(
        kit_id="",
        outcome=NO_KIT,
        findings=[],
        judged_on=judged_on,
        owner_ref=packet.owner_ref,
        owner_email=_cut(packet.owner_email, EMAIL_LENGTH),
        owner_name=_cut(packet.owner_name, NAME_LENGTH),
        company_ref=packet.company_ref,
        deal_url=packet.url,
        return_stage_ref=None,
        applied=[],
        snapshot=snapshot,
        digest=snapshot_digest(snapshot),
        created_at=utcnow(),
    )


# The columns' sizes: PostgreSQL refuses a longer value, and a cosmetic name must never
# fail the decision it rides with.
EMAIL_LENGTH, NAME_LENGTH = 320, 255


def _cut(text: str | None, length: int) -> str | None:
    return text[:length] if text else None


def decision_of(attempt: Attempt) -> Decision | None:
    """The attempt's stored decision; None until evaluation has judged the deal, and for a
    deal no kit applied to (nothing is acted on)."""
    record = attempt.decision
    if record is None or record.outcome == NO_KIT:
        return None
    return Decision(
        kit_id=record.kit_id,
        outcome=record.outcome,
        findings=tuple(Finding(f["id"], f.get("path", ""), f["message"]) for f in record.findings),
        judged_on=record.judged_on,
        owner_ref=record.owner_ref,
        company_ref=record.company_ref,
        deal_url=record.deal_url,
        return_stage_ref=record.return_stage_ref,
        applied=tuple(record.applied) if record.applied is not None else None,
        snapshot=record.snapshot,
        digest=record.digest,
        owner_email=record.owner_email,
        owner_name=record.owner_name,
    )
