"""The shared rate budget on real processes: a burst of deals through `fullkit serve` and
several `fullkit worker`s against the sandbox HubSpot enforcing its 100 requests / 10 s,
once with the budget off (each worker learns the limit from 429s) and once on:

    python -m bench.bench_budget [--deals 100] [--workers 2]

Prints, for each: API calls, how many HubSpot answered 429, seconds until every deal
was settled.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys

from bench.bench_handoff import HOME, Bench, _deal
from bridge import db
from bridge.demo import Stack, start_stack, wait_for
from bridge.valkey import EmbeddedValkey
from sandbox import HubSpotSandbox, start_sandbox


class BudgetBench(Bench):
    """Bench's stack with HUBSPOT_RATE_LIMIT set and extra worker processes."""

    def __init__(self, rate_limit: str, workers: int) -> None:
        home = (HOME / f"budget-{rate_limit.replace('/', '-')}").resolve()
        if home.exists():
            EmbeddedValkey(home).stop()
        shutil.rmtree(home, ignore_errors=True)
        self.home = home
        self.box = HubSpotSandbox(rate_limit=None)  # set-up runs unpaced, as the tests do
        self.box.seed_default_portal()
        self.running = start_sandbox(sandbox=self.box)
        previous = os.environ.get("HUBSPOT_RATE_LIMIT")
        os.environ["HUBSPOT_RATE_LIMIT"] = rate_limit
        try:
            self.stack = start_stack(home, self.running.url, self.box, verbose=False)
        finally:
            _restore("HUBSPOT_RATE_LIMIT", previous)
        for n in range(2, workers + 1):
            _more_workers(self.stack, f"worker{n}")
        self.secret = self.stack.env["HUBSPOT_CLIENT_SECRET"]
        self.box.subscribe(f"{self.stack.url}/webhooks/hubspot", self.secret,
                           app_id=self.box.app_id, signature_version="v3")  # fmt: skip
        self.sessions = db.session_factory(db.make_engine(self.stack.settings))
        with self.box.lock:
            self.box.rate_limit = (100, 10.0)  # HubSpot Free/Starter
            self.box.request_times.clear()


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _more_workers(stack: Stack, name: str) -> None:
    log_path = stack.settings.home / "logs" / f"{name}.log"
    with open(log_path, "wb") as log:
        stack.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"],
            env=stack.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: b"worker ready" in log_path.read_bytes(), 30, f"{name} to start",
             stack.check_alive)  # fmt: skip


def burst(rate_limit: str, label: str, deals: int, workers: int) -> None:
    bench = BudgetBench(rate_limit, workers)
    try:
        ids = [_deal(bench.box, n, complete=n % 4 != 0) for n in range(deals)]
        bench.box.reset_calls()
        done = bench.hand_off(ids)
        calls = bench.box.calls()
        limited = sum(1 for c in calls if c.status == 429)
        print(f"  {deals} deals, {workers} workers, {label}: all settled in "
              f"{max(done.values()):.1f} s (median deal {statistics.median(done.values()):.1f} s), "
              f"{len(calls)} API calls, {limited} answered 429", flush=True)  # fmt: skip
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    # 100 keeps `make bench` near three minutes: at 100 calls / 10 s a deal costs ~0.6 s.
    parser.add_argument("--deals", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    print("Shared rate budget (real serve + workers, sandbox HubSpot at 100 requests / 10 s)")
    burst("off", "budget off (429s and backoff)", args.deals, args.workers)
    burst("100/10s", "budget on (HUBSPOT_RATE_LIMIT=100/10s)", args.deals, args.workers)


if __name__ == "__main__":
    main()
