"""`fullkit kit backtest` over a large ledger: seconds and peak memory to judge again the
latest decisions of 10,000 deals (each snapshot with a few contacts and line items) with a
rules folder that drops a requirement.

    python -m bench.bench_backtest [--deals 10000]

The ledger is a fresh SQLite file under .fullkit/bench/backtest; decisions are written
straight into it (the hand-off's own record), not handed off one by one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import sqlalchemy as sa

from bench.figures import Figure
from bridge import backtest, db
from bridge.evaluator import applicable, evaluate, select_kit
from bridge.models import Attempt, DecisionRecord
from bridge.rules import Rules, load_rules
from bridge.settings import load_settings
from kernel.decision import Decision

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".fullkit" / "bench" / "backtest"
TODAY = dt.datetime.now(dt.UTC).date()


def _deal(i: int) -> dict[str, object]:
    return {
        "crm": "hubspot",
        "deal_id": str(100000 + i),
        "name": f"Deal {i}",
        "deal": {
            "name": f"Deal {i}",
            "pipeline": "default",
            "amount": 0 if i % 7 == 0 else 12000 + i,
            "plan": "enterprise" if i % 5 == 0 else "pro",
            "kickoff_date": (TODAY + dt.timedelta(days=10)).isoformat(),
        },
        "company": {"name": f"Company {i}", "domain": f"c{i}.example"},
        "contacts": [
            {"email": f"pat{i}@c{i}.example", "firstname": "Pat"},
            {"email": f"bill{i}@c{i}.example", "role": "billing"},
        ],
        "line_items": [{"name": "Seat", "quantity": 10, "price": 1200}] * 3,
    }


def seed(engine: sa.Engine, rules: Rules, deals: int) -> None:
    """The rows `Handoffs._judge` would store for `deals` accepted or returned deals."""
    now = dt.datetime.now(dt.UTC)
    attempts, decisions = [], []
    for i in range(deals):
        packet = rules.packet_from_json(_deal(i))
        kit = select_kit(rules.kits_entered("hubspot", "closedwon"), packet, TODAY)
        assert kit is not None
        findings = evaluate(kit, packet, TODAY)
        applied = [req.id for req in applicable(kit, packet, TODAY)]
        made = Decision.judged(kit.id, packet, findings, applied, TODAY, "contractsent")
        attempts.append(
            {
                "id": i + 1, "crm": "hubspot", "deal_id": packet.deal_id, "number": 1,
                "kit_id": kit.id, "state": made.outcome, "owner": "sales", "owner_since": now,
                "findings": [], "trigger_stage": "closedwon", "trigger_at": now,
                "task_started": False, "ops_started": False, "retries": 0, "created_at": now,
                "updated_at": now, "version": 1,
            }
        )  # fmt: skip
        decisions.append(
            {
                "attempt_id": i + 1, "kit_id": kit.id, "outcome": made.outcome,
                "findings": [{"id": f.requirement_id, "path": f.path, "message": f.message}
                             for f in made.findings],
                "judged_on": TODAY, "applied": applied, "snapshot": made.snapshot,
                "digest": made.digest, "created_at": now,
            }
        )  # fmt: skip
    with engine.begin() as connection:
        connection.execute(sa.insert(Attempt), attempts)
        connection.execute(sa.insert(DecisionRecord), decisions)


def candidate(into: Path) -> Rules:
    """The shipped rules without the amount requirement: every seventh deal flips."""
    shutil.copytree(REPO / "kit_rules", into)
    kit = into / "kits" / "10-new-customer.yaml"
    text = kit.read_text()
    amount = text.index("  - id: amount")
    kit.write_text(text[:amount] + text[text.index("  - id: billing-contact") :])
    return load_rules(into)


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=10_000)
    args = parser.parse_args(argv)
    shutil.rmtree(HOME, ignore_errors=True)
    settings = load_settings(FULLKIT_HOME=str(HOME), FULLKIT_RULES_DIR=str(REPO / "kit_rules"))
    engine = db.make_engine(settings)
    db.upgrade(engine)
    shipped = load_rules(REPO / "kit_rules")
    started = time.perf_counter()
    seed(engine, shipped, args.deals)
    print(f"seeded {args.deals:,} decisions in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        rules = candidate(Path(folder) / "rules")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    started, cpu = time.perf_counter(), time.process_time()
    with engine.connect() as connection:
        report = backtest.run(connection, rules, since)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # Again, traced: what the run holds at its peak (rows are streamed, changes kept).
    tracemalloc.start()
    with engine.connect() as connection:
        backtest.run(connection, rules, since)
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    engine.dispose()
    print(backtest.summary(report))
    print(
        f"backtest of {report.rejudged:,} deals: {seconds:.1f} s ({cpu:.1f} s CPU, "
        f"{report.rejudged / seconds:,.0f} deals/s), peak Python memory {peak_mb:.0f} MB"
    )
    return [
        Figure(f"backtest of {args.deals:,} stored decisions", seconds, "s"),
        Figure("backtest peak Python memory", peak_mb, "MB"),
    ]


if __name__ == "__main__":
    main()
