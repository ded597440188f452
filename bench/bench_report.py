"""`fullkit report` on a large ledger: the real command (its own process, SQLite) over a
seeded ledger of N attempts with their transitions and decisions:

    python -m bench.bench_report [--attempts 100000]

* seconds to seed (not a figure of the report, for scale);
* seconds for `fullkit report` (table), `--by week --format json` and `--by owner`,
  process start included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bridge import db
from bridge.models import Attempt, DecisionRecord, Transition
from bridge.settings import load_settings

HOME = (Path(".fullkit") / "bench" / "report").resolve()
START = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
KITS = ("new-customer", "expansion", "renewal")
REQUIREMENTS = [(f"req-{n}", f"Requirement {n} is missing") for n in range(8)]


def _deal(rng: random.Random, deal: int, ids: dict[str, int]) -> list[dict[str, Any]]:
    """One deal's attempts as rows for the three tables (ids assigned here)."""
    returns = rng.choice((0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3))
    kit, owner = rng.choice(KITS), f"owner-{rng.randrange(50)}"
    moment = START + dt.timedelta(minutes=rng.randrange(26 * 7 * 24 * 60))
    rows: list[dict[str, Any]] = []
    for number in range(1, returns + 2):
        ids["attempt"] += 1
        last = number == returns + 1
        state = ("ops_created" if rng.random() < 0.9 else "evaluating") if last else "returned"
        judged = moment + dt.timedelta(seconds=rng.randrange(5, 120))
        missing = [] if last else rng.sample(REQUIREMENTS, rng.randrange(1, 4))
        findings = [{"id": i, "path": "", "message": m} for i, m in missing]
        rows.append(
            {"table": "attempt", "id": ids["attempt"], "crm": "hubspot", "deal_id": str(deal),
             "number": number, "kit_id": kit, "state": state,
             "owner": "ops" if state == "ops_created" else "sales", "owner_since": judged,
             "findings": findings, "trigger_stage": "closedwon", "trigger_at": moment,
             "task_started": False, "ops_started": False, "retries": 0, "created_at": moment,
             "updated_at": judged, "version": 1}
        )  # fmt: skip
        states = [("received", moment)]
        if state != "evaluating":
            outcome = "returned" if findings else "accepted"
            states += [("evaluating", moment), (outcome, judged)]
            states += [("ops_created", judged)] if outcome == "accepted" else []
            rows.append(
                {"table": "decision", "attempt_id": ids["attempt"], "kit_id": kit,
                 "outcome": outcome, "findings": findings, "judged_on": judged.date(),
                 "owner_ref": owner, "created_at": judged}
            )  # fmt: skip
        for name, at in states:
            rows.append(
                {"table": "transition", "attempt_id": ids["attempt"], "state": name,
                 "owner": "ops" if name in ("accepted", "ops_created") else "sales", "at": at}
            )  # fmt: skip
        moment = judged + dt.timedelta(hours=rng.randrange(1, 200))
    return rows


def seed(attempts: int) -> float:
    started = time.perf_counter()
    settings = load_settings(FULLKIT_HOME=str(HOME))
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    rng, ids, deal = random.Random(7), {"attempt": 0}, 0
    tables = {"attempt": Attempt, "decision": DecisionRecord, "transition": Transition}
    with engine.begin() as connection:
        while ids["attempt"] < attempts:
            batch: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
            while ids["attempt"] < attempts and len(batch["attempt"]) < 5000:
                deal += 1
                for row in _deal(rng, deal, ids):
                    batch[row.pop("table")].append(row)
            for name, model in tables.items():
                connection.execute(insert(model), batch[name])
    engine.dispose()
    return time.perf_counter() - started


def _report(args: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env["FULLKIT_HOME"] = str(HOME)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "report", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"report failed: {done.stderr.strip()}")
    return elapsed, done.stdout.splitlines()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=100_000)
    args = parser.parse_args(argv)
    shutil.rmtree(HOME, ignore_errors=True)
    seeded = seed(args.attempts)
    print(f"fullkit report over {args.attempts} attempts (SQLite; seeded in {seeded:.1f} s)")
    for options in ([], ["--by", "week", "--format", "json"], ["--by", "owner"]):
        elapsed, first = _report(options)
        print(f"  report {' '.join(options) or '(table)':<28} {elapsed:6.2f} s   {first[:50]}")
    shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
