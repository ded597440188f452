"""`fullkit sweep` figures: the real command (its own process, embedded Valkey, SQLite)
against the sandbox HubSpot with HubSpot's limits (5 searches a second, 100 calls / 10 s):

    python -m bench.bench_sweep [--deals 2000]

* seconds for a sweep that finds N deals with lost webhooks and queues them all;
* seconds for the next run, which finds the same N and queues none;
* search requests made, and how many HubSpot answered with 429.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bridge.valkey import EmbeddedValkey
from sandbox import HubSpotSandbox, WriteSource, start_sandbox

HOME = (Path(".fullkit") / "bench" / "sweep").resolve()
SEARCH = "/crm/v3/objects/deals/search"


def _sweep(env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "sweep", "--older-than", "0"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sweep failed: {done.stderr.strip()}")
    return elapsed, done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=2000)
    args = parser.parse_args(argv)
    if HOME.exists():
        EmbeddedValkey(HOME).stop()
    shutil.rmtree(HOME, ignore_errors=True)
    box = HubSpotSandbox()
    for n in range(args.deals):
        box.create("deals", {"dealname": f"Sweep {n}", "dealstage": "closedwon"},
                   source=WriteSource.user(None))  # fmt: skip
    running = start_sandbox(sandbox=box)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBSPOT", "REDIS"))}
    env.update(FULLKIT_HOME=str(HOME), HUBSPOT_ACCESS_TOKEN=box.access_token,
               HUBSPOT_API_BASE=running.url)  # fmt: skip
    env.pop("DATABASE_URL", None)
    try:
        first, first_summary = _sweep(env)
        searches = box.calls("POST", SEARCH)
        second, second_summary = _sweep(env)
    finally:
        running.stop()
        EmbeddedValkey(HOME).stop()
    limited = sum(1 for call in searches if call.status == 429)
    print(f"fullkit sweep, {args.deals} deals in the hand-off stage with lost webhooks")
    print(f"  first run:  {first:6.2f} s  ({first_summary})")
    print(f"  second run: {second:6.2f} s  ({second_summary})")
    print(f"  search requests per run: {len(searches)}, answered 429: {limited}")


if __name__ == "__main__":
    main()
