"""Replay: failed attempts go back to work where they stopped, and their batch is queued.

Shared by `fullkit replay` and the console's replay button. It touches only the ledger and
the queue (the job by name), so the web process may run it without the worker's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis
from sqlalchemy import select, tuple_
from sqlalchemy.orm import sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from bridge import batches, ledger
from bridge.models import Attempt
from bridge.queue import HandoffQueue

REPLAYED = "replayed by an operator"


class QueueAndLedger(Protocol):
    """What replay needs of a process's container (web or worker)."""

    @property
    def sessions(self) -> sessionmaker: ...

    @property
    def redis(self) -> redis.Redis: ...

    @property
    def queue(self) -> HandoffQueue: ...


def replay_failed(
    state: QueueAndLedger, deals: Sequence[tuple[str, str]] | None = None
) -> list[str]:
    """Re-queue failed attempts (all, or those of the given deals) where they stopped.

    Returns the hand-off ids queued. The operator fixed what failed them (a token, an
    ops owner's HubSpot user, an outage); each resumes at its last step, with a fresh
    retry window, and finishes without repeating what it had done.
    """
    reopened = reopen_failed(state.sessions, deals)
    for crm in sorted({handoff_id.split(":", 1)[0] for handoff_id in reopened}):
        batches.kick(state.redis, state.queue, crm)
    return reopened


def reopen_failed(
    sessions: sessionmaker, deals: Sequence[tuple[str, str]] | None = None
) -> list[str]:
    """Move failed attempts back to the step they failed in; their hand-off ids.

    Two replays at once (a double click, two operators) reopen each attempt once: the
    attempt's version makes the later commit fail, and that one skips it.
    """
    query = select(Attempt).where(Attempt.state == "failed")
    if deals:
        query = query.where(tuple_(Attempt.crm, Attempt.deal_id).in_(list(deals)))
    reopened: list[str] = []
    with sessions() as session:
        for attempt in list(session.scalars(query.order_by(Attempt.id))):
            resume_at = next(
                (t.state for t in reversed(attempt.transitions) if t.state in ledger.IN_PROGRESS),
                "received",
            )
            handoff_id = attempt.handoff_id
            ledger.move(attempt, resume_at, REPLAYED)
            attempt.error, attempt.retries = None, 0
            attempt.first_retry_at = attempt.next_run_at = None
            try:
                session.commit()
            except StaleDataError:
                session.rollback()  # another replay (or a worker) moved it meanwhile
                continue
            reopened.append(handoff_id)
    return reopened
