"""The ledger's rules: one attempt per ownership cycle, owner defined at every moment."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.orm.exc import StaleDataError

from bridge import db, intake, ledger
from bridge.models import Attempt

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def sessions(settings: Any) -> Any:
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    yield db.session_factory(engine)
    engine.dispose()


def record(sessions: Any, at: dt.datetime, deal: str = "1", stage: str = "closedwon") -> Any:
    change = intake.observed_change("hubspot", deal, stage, at, "test")
    return ledger.record_stage_change(sessions, change)


def finish(sessions: Any, attempt_id: int, state: str) -> None:
    with sessions() as session:
        attempt = session.get(Attempt, attempt_id)
        ledger.move(attempt, state)
        session.commit()


def test_first_change_starts_attempt_one(sessions: Any) -> None:
    result = record(sessions, T0)
    assert result.outcome == "started"
    with sessions() as session:
        history = ledger.deal_history(session, "hubspot", "1")
    assert history["owner"] == "sales"
    assert [a["attempt"] for a in history["attempts"]] == [1]
    assert history["attempts"][0]["transitions"][0]["state"] == "received"


def test_same_change_twice_is_a_duplicate(sessions: Any) -> None:
    record(sessions, T0)
    assert record(sessions, T0).outcome == "duplicate"


def test_a_delivery_is_recorded_as_its_changes_one_by_one(sessions: Any) -> None:
    returned = record(sessions, T0, deal="3")
    finish(sessions, returned.attempt_id, "returned")
    record(sessions, T0, deal="4")

    def change(deal: str, seconds: int, since: dt.datetime = T0) -> intake.StageChange:
        at = since + dt.timedelta(seconds=seconds)
        return intake.observed_change("hubspot", deal, "closedwon", at, "test")

    delivery = [change("1", 0), change("1", 0), change("1", 5), change("2", 0),
                change("3", 1, ledger.utcnow()), change("4", 0)]  # fmt: skip
    results = ledger.record_stage_changes(sessions, delivery)

    outcomes = ["started", "duplicate", "in_progress", "started", "started", "duplicate"]
    assert [r.outcome for r in results] == outcomes
    assert results[2].attempt_id == results[0].attempt_id
    with sessions() as session:
        assert ledger.latest_attempt(session, "hubspot", "3").number == 2
        assert ledger.deal_history(session, "hubspot", "2")["owner"] == "sales"
    assert record(sessions, T0 + dt.timedelta(seconds=5)).outcome == "duplicate"


def test_change_while_in_progress_is_recorded_without_action(sessions: Any) -> None:
    record(sessions, T0)
    result = record(sessions, T0 + dt.timedelta(seconds=5))
    assert (result.outcome, result.attempt_id) == ("in_progress", 1)


def test_after_acceptance_ops_owns_and_changes_do_nothing(sessions: Any) -> None:
    first = record(sessions, T0)
    finish(sessions, first.attempt_id, "accepted")
    assert record(sessions, ledger.utcnow() + dt.timedelta(seconds=1)).outcome == "ops_owns"
    with sessions() as session:
        history = ledger.deal_history(session, "hubspot", "1")
    assert history["owner"] == "ops"
    assert history["attempts"][0]["owner"] == "ops"


def test_after_return_a_later_change_starts_attempt_two(sessions: Any) -> None:
    first = record(sessions, T0)
    finish(sessions, first.attempt_id, "returned")
    later = record(sessions, ledger.utcnow() + dt.timedelta(seconds=1))
    assert later.outcome == "started"
    with sessions() as session:
        assert ledger.latest_attempt(session, "hubspot", "1").number == 2


def test_a_change_older_than_the_return_is_stale(sessions: Any) -> None:
    first = record(sessions, T0)
    finish(sessions, first.attempt_id, "returned")
    # HubSpot delivers out of order: a change from before the push-back starts nothing.
    assert record(sessions, T0 + dt.timedelta(seconds=1)).outcome == "stale"


def test_concurrent_deliveries_start_one_attempt(sessions: Any) -> None:
    moments = [T0 + dt.timedelta(milliseconds=n) for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda at: record(sessions, at).outcome, moments + moments))
    assert outcomes.count("started") == 1
    assert outcomes.count("duplicate") == 8
    with sessions() as session:
        assert ledger.latest_attempt(session, "hubspot", "1").number == 1


def test_round_robin_rotates_ops_owners(sessions: Any) -> None:
    owners = ("anna@example.com", "ben@example.com")
    with sessions() as session:
        picked = [ledger.next_ops_owner(session, "kit", owners) for _ in range(5)]
        session.commit()
    assert picked == ["anna@example.com", "ben@example.com"] * 2 + ["anna@example.com"]


def test_a_batch_of_acceptances_continues_the_rotation(sessions: Any) -> None:
    owners = ("anna@example.com", "ben@example.com")
    with sessions() as session:
        first = ledger.next_ops_owners(session, "kit", owners, 3)
        then = ledger.next_ops_owners(session, "kit", owners, 2)
        session.commit()
    assert first + then == ["anna@example.com", "ben@example.com"] * 2 + ["anna@example.com"]


def test_owner_since_follows_the_handover(sessions: Any) -> None:
    first = record(sessions, T0)
    finish(sessions, first.attempt_id, "accepted")
    with sessions() as session:
        history = ledger.deal_history(session, "hubspot", "1")
        accepted_at = history["attempts"][0]["transitions"][-1]["at"]
    assert history["owner_since"] == accepted_at


def test_unknown_deal_has_no_history(sessions: Any) -> None:
    with sessions() as session:
        assert ledger.deal_history(session, "hubspot", "nope") is None


def test_a_runner_whose_lease_lapsed_cannot_overwrite_a_newer_one(sessions: Any) -> None:
    record(sessions, T0)
    with sessions() as stale, sessions() as current:
        old_view = stale.get(Attempt, 1)
        new_view = current.get(Attempt, 1)
        ledger.move(new_view, "evaluating")
        current.commit()
        old_view.task_started = True
        with pytest.raises(StaleDataError):
            stale.commit()


def test_history_times_keep_milliseconds(sessions: Any) -> None:
    """Steps a fraction of a second apart read as such, not as one moment."""
    at = T0 + dt.timedelta(milliseconds=250)
    first = record(sessions, at)
    with sessions() as session:
        attempt = session.get(Attempt, first.attempt_id)
        attempt.transitions[0].at = at
        ledger.move(attempt, "evaluating")
        attempt.transitions[-1].at = at + dt.timedelta(milliseconds=480)
        session.commit()
    with sessions() as session:
        history = ledger.deal_history(session, "hubspot", "1")
    times = [t["at"] for t in history["attempts"][0]["transitions"]]
    assert times == ["2026-11-27T09:00:00.250Z", "2026-11-27T09:00:00.730Z"]
