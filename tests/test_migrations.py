"""Ledgers made by earlier revisions upgrade in place, and keep their promises after it.

Runs on SQLite, and on PostgreSQL when FULLKIT_TEST_DATABASE_URL is set (in a database of
its own, created and dropped here: the migration must start from an empty one).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, select

from bridge import backtest, db, intake, ledger
from bridge.models import StageChange
from bridge.rules import load_rules
from bridge.settings import load_settings
from tests.conftest import ROOT

OCCURRED_MS = 1795774800123  # 2026-11-27T10:20:00.123Z, as HubSpot's occurredAt
OCCURRED = dt.datetime(2026, 11, 27, 10, 20, 0, 123000, tzinfo=dt.UTC)


def _databases() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("FULLKIT_TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(params=_databases())
def empty_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = db.make_engine(load_settings(FULLKIT_HOME=str(tmp_path)))
        yield engine
        engine.dispose()
        return
    base = sa.make_url(os.environ["FULLKIT_TEST_DATABASE_URL"])
    base = base.set(drivername="postgresql+psycopg")
    name = f"fullkit_migration_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(base.set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _ledger_at_0001_with_rows(engine: Engine) -> None:
    """What a 0001 ledger holds: deal 1234 handed off once (returned), deal 99 in progress."""
    command.upgrade(db.alembic_config(engine), "0001")
    meta = sa.MetaData()
    meta.reflect(engine)
    attempts, changes = meta.tables["attempts"], meta.tables["stage_changes"]
    transitions = meta.tables["transitions"]
    returned_at = OCCURRED + dt.timedelta(seconds=4)
    with engine.begin() as connection:
        for attempt_id, deal, state in ((1, "1234", "returned"), (2, "99", "received")):
            connection.execute(
                attempts.insert().values(
                    id=attempt_id, crm="hubspot", deal_id=deal, number=1, kit_id="new-customer",
                    state=state, owner="sales", owner_since=OCCURRED, findings=[],
                    trigger_stage="closedwon", trigger_at=OCCURRED, task_started=False,
                    retries=0, created_at=OCCURRED, updated_at=returned_at, version=1,
                )
            )  # fmt: skip
            connection.execute(
                changes.insert().values(
                    id=attempt_id, crm="hubspot", deal_id=deal, stage_ref="closedwon",
                    occurred_at=OCCURRED, received_at=OCCURRED, outcome="started",
                    event_ref=f"hubspot-event:{attempt_id}", attempt_id=attempt_id,
                )
            )  # fmt: skip
        connection.execute(
            transitions.insert(),
            [
                {"attempt_id": 1, "state": "received", "owner": "sales", "at": OCCURRED},
                {"attempt_id": 1, "state": "returned", "owner": "sales", "at": returned_at},
                {"attempt_id": 2, "state": "received", "owner": "sales", "at": OCCURRED},
            ],
        )


def test_upgrade_gives_old_changes_the_key_their_redelivery_carries(empty_ledger: Engine) -> None:
    _ledger_at_0001_with_rows(empty_ledger)

    db.upgrade(empty_ledger)

    assert db.current_revision(empty_ledger) == db.head_revision()
    sessions = db.session_factory(empty_ledger)
    with sessions() as session:
        rows = session.execute(
            select(StageChange.deal_id, StageChange.change_key, StageChange.occurred_at)
            .order_by(StageChange.id)
        ).all()  # fmt: skip
        assert [tuple(row) for row in rows] == [
            ("1234", f"1234:closedwon:{OCCURRED_MS}", OCCURRED),
            ("99", f"99:closedwon:{OCCURRED_MS}", OCCURRED),
        ]
        assert ledger.deal_history(session, "hubspot", "1234")["attempts"][0]["state"] == "returned"
    # HubSpot redelivers the old change (another eventId, from a second subscription, say).
    redelivery = intake.hubspot_change(1234, "closedwon", OCCURRED_MS, event_id=777)
    assert ledger.record_stage_change(sessions, redelivery).outcome == "duplicate"
    # A job queued before the upgrade (occurredAt in milliseconds, no key) is one too.
    old_job = intake.StageChange.from_job_args("hubspot", "99", "closedwon", OCCURRED_MS, "e")
    assert ledger.record_stage_change(sessions, old_job).outcome == "duplicate"
    # A new change after the push-back is a new hand-off, as before.
    later = intake.hubspot_change(1234, "closedwon", OCCURRED_MS + 60_000, event_id=778)
    assert ledger.record_stage_change(sessions, later).outcome == "started"


def test_downgrade_and_upgrade_again_keep_the_changes(empty_ledger: Engine) -> None:
    _ledger_at_0001_with_rows(empty_ledger)
    db.upgrade(empty_ledger)

    command.downgrade(db.alembic_config(empty_ledger), "0001")
    db.upgrade(empty_ledger)

    with db.session_factory(empty_ledger)() as session:
        keys = session.scalars(select(StageChange.change_key).order_by(StageChange.id)).all()
    assert keys == [f"1234:closedwon:{OCCURRED_MS}", f"99:closedwon:{OCCURRED_MS}"]


# Each process imports everything first and then waits for the word, so that all of them
# migrate at the same moment, as serve and worker started together on a fresh home do.
STARTER = """
import sys
import sqlalchemy as sa
from bridge import db
engine = sa.create_engine(sys.argv[1])
sys.stdin.readline()
db.upgrade(engine)
"""


def test_processes_starting_together_on_a_fresh_ledger_all_migrate_it(
    empty_ledger: Engine,
) -> None:
    url = empty_ledger.url.render_as_string(hide_password=False)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, url],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    for starter in starters:
        assert starter.stdin is not None
        starter.stdin.write("go\n")
        starter.stdin.flush()
    said = [starter.communicate(timeout=120)[0] for starter in starters]
    assert [starter.returncode for starter in starters] == [0] * 4, said
    assert db.current_revision(empty_ledger) == db.head_revision()
    tables = set(sa.inspect(empty_ledger).get_table_names())
    assert {"attempts", "stage_changes", "alembic_version"} <= tables


def test_decisions_judged_before_packets_were_kept_are_left_out_of_a_backtest(
    empty_ledger: Engine,
) -> None:
    """Revision 0003 gives old judged attempts a decision without a packet: the backtest
    of a ledger upgraded that way skips them, as its README says, rather than crash."""
    _ledger_at_0001_with_rows(empty_ledger)
    db.upgrade(empty_ledger)
    with empty_ledger.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM decisions")).scalar() == 2
        rules = load_rules(ROOT / "kit_rules", None)
        result = backtest.run(connection, rules, OCCURRED - dt.timedelta(days=3650))
    assert (result.rejudged, result.changes) == (0, [])
