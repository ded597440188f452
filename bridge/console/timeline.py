"""`/console/handoffs/<crm>/<deal_id>`: a deal's owners over time and each attempt, with a
replay button on a failed one (the same code as `fullkit replay crm:deal`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from bridge.container import Container
from bridge.deal_ids import InvalidDealId, canonical_deal_id
from bridge.models import Attempt, StageChange
from bridge.queue import QueueUnavailable
from bridge.replay import replay_failed


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/handoffs/<crm>/<deal_id>", "timeline", timeline)
    bp.add_url_rule("/handoffs/<crm>/<deal_id>/replay", "replay", replay, methods=["POST"])


@dataclass(frozen=True)
class Ownership:
    owner: str
    since: dt.datetime
    attempt: int
    why: str  # the state that moved the deal to this owner


@dataclass
class Timeline:
    crm: str
    deal_id: str
    attempts: list[Attempt]
    owners: list[Ownership]
    changes: list[StageChange]
    deal_url: str | None


def _state() -> Container:
    state: Container = current_app.config["FULLKIT"]
    return state


def _message(text: str, status: int) -> ResponseReturnValue:
    return render_template("console/message.html", message=text), status


def timeline(crm: str, deal_id: str) -> ResponseReturnValue:
    try:
        deal_id = canonical_deal_id(crm, deal_id)
    except InvalidDealId as exc:
        return _message(str(exc), 404)
    try:
        with _state().sessions() as session:
            found = load_timeline(session, crm, deal_id)
            if found is None:
                return _message(f"No hand-off recorded for {crm}:{deal_id}.", 404)
            return render_template("console/timeline.html", deal=found)
    except SQLAlchemyError:
        return _message("The ledger cannot be reached right now; /healthz says more.", 503)


def load_timeline(session: Session, crm: str, deal_id: str) -> Timeline | None:
    attempts = list(
        session.scalars(
            select(Attempt)
            .where(Attempt.crm == crm, Attempt.deal_id == deal_id)
            .options(selectinload(Attempt.transitions), selectinload(Attempt.decision))
            .order_by(Attempt.number)
        )
    )
    if not attempts:
        return None
    changes = session.scalars(
        select(StageChange)
        .where(StageChange.crm == crm, StageChange.deal_id == deal_id)
        .order_by(StageChange.occurred_at)
    )
    urls = [a.decision.deal_url for a in attempts if a.decision and a.decision.deal_url]
    deal_url = urls[-1] if urls else None
    return Timeline(crm, deal_id, attempts, owners(attempts), list(changes), deal_url)


def owners(attempts: list[Attempt]) -> list[Ownership]:
    """Who owned the deal from when: sales from the first attempt, then each change."""
    first = attempts[0]
    periods = [Ownership("sales", first.created_at, first.number, "handed off")]
    for attempt in attempts:
        for transition in attempt.transitions:
            if transition.owner != periods[-1].owner:
                periods.append(
                    Ownership(transition.owner, transition.at, attempt.number, transition.state)
                )
    return periods


def replay(crm: str, deal_id: str) -> ResponseReturnValue:
    """Re-queue the deal's failed attempt; POST, then back to the timeline (PRG)."""
    try:
        deal_id = canonical_deal_id(crm, deal_id)
    except InvalidDealId as exc:
        return _message(str(exc), 404)
    back = redirect(url_for("console.timeline", crm=crm, deal_id=deal_id))
    state = _state()
    try:
        # Before the ledger is touched: a reopened attempt needs its job queued.
        state.ping_queue()
    except (redis.RedisError, QueueUnavailable):
        flash("The queue cannot be reached: nothing was replayed. Try again shortly.", "error")
        return back
    try:
        queued = replay_failed(state, [(crm, deal_id)])
    except SQLAlchemyError:
        flash("The ledger cannot be reached: nothing was replayed.", "error")
        return back
    except (redis.RedisError, QueueUnavailable):
        flash("Reopened, but the queue stopped answering: a worker resumes it within a minute.")
        return back
    if queued:
        flash(f"Replay queued for {', '.join(queued)}: it resumes where it stopped.")
    else:
        number = request.form.get("attempt", "")
        attempt = f"attempt {number}" if number.isdigit() and len(number) < 6 else "its attempt"
        flash(f"Nothing to replay: {attempt} is no longer failed (replayed already?).", "info")
    return back
