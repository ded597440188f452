"""Chaos run: hand-offs through real processes while everything around them fails.

    python -m bench.chaos [--deals 300] [--seconds 40] [--settle 180] [--seed 15]

`fullkit serve` and two `fullkit worker` processes on the embedded Valkey and SQLite, against
the sandbox HubSpot (a thread of this process, over loopback HTTP). Half the deals have a
complete kit, half do not; they move to the hand-off stage in waves while, for `--seconds`:

* a worker is SIGKILLed every 2-3 s and started again, as a supervisor would;
* the embedded Valkey is SIGKILLed twice, and started again after two seconds;
* HubSpot answers 20% of calls 5xx, every call 429 in bursts, and some calls late: the
  write is done, the answer comes after the client's read timeout; or the write itself
  lands only after that timeout.

Then the kills stop, HubSpot goes on failing on workers that stay up (30 s at least, and
until half the deals settled), and the run waits (up to `--settle` s after that) for every
deal to settle. It
counts, against HubSpot's own records and the ledger: deals, accepted, returned,
duplicates (a second ticket, task or attempt for one stage change), lost (a webhook
acknowledged with 2xx whose deal has no attempt, or whose attempt failed), still in
progress, and the time from the last fault until the last deal settled. Every count but
accepted and returned must be zero. Retries and timeouts are shortened through their
settings (FULLKIT_BACKOFF_*, HUBSPOT_TIMEOUT_SECONDS) so the run takes minutes, not hours.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import select

from bench.figures import Figure
from bridge import db, ledger
from bridge.demo import PORTAL_RATE_LIMIT, hubspot_setup, sample_contacts, stack_env
from bridge.models import Attempt
from bridge.queue import QUEUE_NAME, connect
from bridge.settings import Settings, load_settings
from bridge.valkey import STATE_FILE, EmbeddedValkey, free_port
from sandbox import HubSpotSandbox, start_sandbox
from sandbox.hubspot_chaos import Chaos

HOME = Path(".fullkit") / "bench" / "chaos"
SETTLED = ("ops_created", "returned")


@dataclass(frozen=True)
class Plan:
    deals: int = 300
    workers: int = 2
    # Kills run this long; the deals move during the first three quarters of it.
    chaos_seconds: float = 40.0
    kill_every: tuple[float, float] = (2.0, 3.0)
    max_worker_kills: int | None = None
    valkey_restarts: int = 2
    valkey_down_seconds: float = 2.0
    error_rate: float = 0.2
    burst_every: float = 20.0
    burst_seconds: float = 1.0
    late_rate: float = 0.05
    # Calls carried out only after the client's timeout (the create lands after a retry looked).
    slow_rate: float = 0.05
    # HubSpot keeps failing after the kills, on workers that now stay up, at least this
    # long and until half the deals have settled: during the kills little work gets done.
    crm_tail_seconds: float = 30.0
    # HubSpot read timeout of the workers; a late answer comes a second after it.
    client_timeout: float = 5.0
    # Deadline for every deal to settle, counted from the last fault of any kind.
    settle_seconds: float = 180.0
    seed: int = 15
    # Short retries keep a run in minutes: production's start at 2 s and reach 5 min.
    backoff: tuple[float, float] = (0.5, 5.0)


@dataclass
class Outcome:
    deals: int = 0
    accepted: int = 0
    returned: int = 0
    duplicates: int = 0
    lost: int = 0
    in_progress: int = 0
    # Settled the wrong way: a complete kit returned, or the CRM not saying what the ledger says.
    wrong: int = 0
    # HubSpot gave up delivering the webhook (every retry got 5xx): `fullkit sweep`'s case.
    unacknowledged: int = 0
    # From the last fault of any kind until the last deal settled; None if some never did.
    settle_seconds: float | None = None
    per_deal: list[float] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        faults = ", ".join(f"{count} {kind}" for kind, count in sorted(self.events.items()))
        took = "never" if self.settle_seconds is None else f"{self.settle_seconds:.1f} s"
        median = f"{statistics.median(self.per_deal):.1f}" if self.per_deal else "-"
        slowest = f"{max(self.per_deal):.1f}" if self.per_deal else "-"
        return [
            f"  injected: {faults}",
            f"  deals {self.deals}: accepted {self.accepted}, returned {self.returned}, "
            f"duplicates {self.duplicates}, lost {self.lost}, still in progress "
            f"{self.in_progress}, wrong outcome {self.wrong}, webhook never acknowledged "
            f"{self.unacknowledged}",
            f"  time to settle: last deal settled {took} after the last fault; "
            f"stage change -> settled median {median} s, slowest {slowest} s",
            *(f"  BROKEN: {problem}" for problem in _grouped(self.problems)),
        ]

    def figures(self) -> list[Figure]:
        zero = ("==", 0.0)
        settle = self.settle_seconds
        return [
            Figure("chaos run: deals", self.deals, ""),
            Figure("chaos run: accepted", self.accepted, ""),
            Figure("chaos run: returned", self.returned, ""),
            Figure("chaos run: duplicates", self.duplicates, "", zero),
            Figure("chaos run: lost", self.lost, "", zero),
            Figure("chaos run: still in progress", self.in_progress, "", zero),
            Figure("chaos run: wrong outcome", self.wrong, "", zero),
            # The SPEC's resume promise: within 60 s of a worker's death.
            Figure("chaos run: seconds from last fault to all settled",
                   settle if settle is not None else float("inf"), "s", ("<=", 60.0),
                   "" if settle is not None else "(never)"),
        ]  # fmt: skip


class Crew:
    """`fullkit serve` and the workers, each started in its own process group so that
    what a killed worker leaves behind (its forked scheduler) can be found and stopped."""

    def __init__(self, home: Path, env: dict[str, str], workers: int) -> None:
        self.home = home
        self.env = env
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.groups: list[int] = []  # every process group started, leaders' pids
        self.killed: list[int] = []  # groups whose leader was SIGKILLed
        self.serve = self._spawn("serve", ["serve", "--port", str(self.port)])
        self.workers = [self._spawn(f"worker-{n}", ["worker"]) for n in range(workers)]
        self.born = [time.monotonic()] * workers

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, "-m", "bridge", *args], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.groups.append(process.pid)
        return process

    def ready(self) -> bool:
        try:
            healthy = requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False
        logs = [(self.logs / f"worker-{n}.log").read_bytes() for n in range(len(self.workers))]
        return healthy and all(b"worker ready" in log for log in logs)

    def kill_worker(self) -> None:
        """SIGKILL the oldest worker (not its children: a power cut of one process), and
        start a fresh one in its place. The oldest, because a worker just started may not
        have taken a job yet."""
        slot = self.born.index(min(self.born))
        victim = self.workers[slot]
        victim.kill()
        victim.wait()
        self.killed.append(victim.pid)
        self.workers[slot] = self._spawn(f"worker-{slot}", ["worker"])
        self.born[slot] = time.monotonic()

    def revive_exited(self) -> list[str]:
        """Start again any process that exited by itself; says which and how."""
        said = []
        if self.serve.poll() is not None:
            said.append(f"serve {self.serve.pid} exited by itself with status "
                        f"{self.serve.returncode}")  # fmt: skip
            self.serve = self._spawn("serve", ["serve", "--port", str(self.port)])
        for slot, worker in enumerate(self.workers):
            if worker.poll() is not None:
                said.append(f"worker {worker.pid} exited by itself with status {worker.returncode}")
                self.workers[slot] = self._spawn(f"worker-{slot}", ["worker"])
        return said

    def stop(self) -> int:
        """Stop everything; returns how many processes killed workers had left running."""
        for process in (self.serve, *self.workers):
            if process.poll() is None:
                process.terminate()
        for process in (self.serve, *self.workers):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        orphans = sum(len(_members(group)) for group in self.killed)
        for group in self.groups:
            for pid in _members(group):
                _signal(pid, signal.SIGKILL)
        return orphans


def _members(group: int) -> list[int]:
    """Live processes of a process group, by /proc (the group's leader may be gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may hold spaces: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _valkey_pid(home: Path) -> int | None:
    try:
        pid = json.loads((home / STATE_FILE).read_text()).get("pid")
    except (OSError, ValueError):
        return None
    return pid if isinstance(pid, int) else None


def _deal(box: HubSpotSandbox, n: int, complete: bool) -> str:
    props = {"dealname": f"Chaos {n}", "pipeline": "default", "dealstage": "contractsent",
             "amount": "5000" if complete else "0", "plan_tier": "pro",
             "kickoff_date": "2027-02-01"}  # fmt: skip
    contacts = [{**c, "email": f"c{i}.{n}@chaos{n}.example"}
                for i, c in enumerate(sample_contacts("billing", None))]  # fmt: skip
    return box.create_deal(
        props, company={"name": f"Chaos {n}", "domain": f"chaos{n}.example"}, contacts=contacts,
        line_items=[{"name": "Seat", "quantity": "5", "price": "1000"}],
        owner_email="sales-sam@example.com",
    )  # fmt: skip


def _env(home: Path, box: HubSpotSandbox, sandbox_url: str, plan: Plan) -> dict[str, str]:
    base, cap = plan.backoff
    env = stack_env(home, box, sandbox_url, free_port())
    env.update({
        "HUBSPOT_TIMEOUT_SECONDS": f"{plan.client_timeout:g}",
        "FULLKIT_BACKOFF_BASE_SECONDS": f"{base:g}",
        "FULLKIT_BACKOFF_CAP_SECONDS": f"{cap:g}",
        # Two work horses per worker: kills then hit busy processes, on a 2-core machine.
        "FULLKIT_WORKER_PROCESSES": "2",
    })  # fmt: skip
    return env


class Run:
    """One chaos run on a fresh home: set up, shake, settle, count."""

    def __init__(self, plan: Plan, home: Path, say: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.home = home.resolve()
        self.say = say
        self.random = random.Random(plan.seed)
        self.outcome = Outcome(deals=plan.deals)
        self.moved: dict[str, float] = {}
        self.complete: dict[str, bool] = {}

    def go(self) -> Outcome:
        if self.home.exists():
            EmbeddedValkey(self.home).stop()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        self.box = HubSpotSandbox(app_id=4_242_424, rate_limit=PORTAL_RATE_LIMIT)
        self.box.seed_default_portal()
        # HubSpot retries a failed delivery for hours; ten tries over about 15 s here.
        self.box.webhooks.backoff_max = 4.0
        running = start_sandbox(sandbox=self.box)
        crew: Crew | None = None
        try:
            env = _env(self.home, self.box, running.url, self.plan)
            self.settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
            hubspot_setup(self.settings)
            for n in range(self.plan.deals):
                deal_id = _deal(self.box, n, complete=n % 2 == 0)
                self.complete[deal_id] = n % 2 == 0
            crew = Crew(self.home, env, self.plan.workers)
            _wait(crew.ready, 60, "serve and the workers to start")
            self.box.subscribe(
                f"{crew.url}/webhooks/hubspot", env["HUBSPOT_CLIENT_SECRET"],
                app_id=self.box.app_id, signature_version="v3", generic=True,
            )  # fmt: skip
            self.say(f"  serve and {self.plan.workers} workers up; faults for "
                     f"{self.plan.chaos_seconds:g} s")  # fmt: skip
            self._shake(crew)
            calm = self._calm_down(crew)
            self.say(f"  faults over; up to {self.plan.settle_seconds:g} s to settle")
            self._settle(crew, calm)
        finally:
            if crew is not None:
                orphans = crew.stop()
                if orphans:
                    self.outcome.problems.append(
                        f"{orphans} process(es) of SIGKILLed workers still ran at the end "
                        "(their forked RQ scheduler: issue 15 item 15)"
                    )
            running.stop()
            EmbeddedValkey(self.home).stop()
        return self.outcome

    # --- the faults ---------------------------------------------------------------

    def _shake(self, crew: Crew) -> None:
        """Move the deals in waves while workers, the queue and HubSpot fail."""
        plan = self.plan
        self.box.chaos = Chaos(
            error_rate=plan.error_rate, late_rate=plan.late_rate,
            late_seconds=plan.client_timeout + 1.0, slow_rate=plan.slow_rate,
            burst_every=plan.burst_every,
            burst_seconds=plan.burst_seconds, seed=plan.seed,
        )  # fmt: skip
        started, calls = time.monotonic(), self.box.request_count
        waves = _schedule(list(self.complete), plan.chaos_seconds * 0.75, 0.5)
        kills, most = 0, plan.max_worker_kills
        next_kill = self.random.uniform(*plan.kill_every)
        outages = [plan.chaos_seconds * (n + 1) / (plan.valkey_restarts + 1)
                   for n in range(plan.valkey_restarts)]  # fmt: skip
        down_since: float | None = None
        while (now := time.monotonic() - started) < plan.chaos_seconds or down_since is not None:
            while waves and waves[0][0] <= now:
                self._move(waves.pop(0)[1])
            if now >= next_kill and (most is None or kills < most):
                crew.kill_worker()
                kills += 1
                next_kill = now + self.random.uniform(*plan.kill_every)
            if outages and now >= outages[0] and down_since is None:
                outages.pop(0)
                pid = _valkey_pid(self.home)
                if pid is not None:
                    _signal(pid, signal.SIGKILL)
                    self.outcome.events["Valkey kills"] += 1
                down_since = now
            if down_since is not None and now - down_since >= plan.valkey_down_seconds:
                EmbeddedValkey(self.home).url()  # as its supervisor would; may be up already
                down_since = None
            self.outcome.problems.extend(crew.revive_exited())
            time.sleep(0.05)
        for _, deal_ids in waves:  # a slow machine may not have moved them all yet
            self._move(deal_ids)
        self.outcome.events["worker SIGKILLs"] = kills
        self.calls = calls

    def _calm_down(self, crew: Crew) -> float:
        """HubSpot goes on failing on workers that stay up until half the deals settled
        (during the kills they get little done); returns when its faults stopped."""
        sessions = db.session_factory(db.make_engine(self.settings))
        started = time.monotonic()
        while time.monotonic() - started < self.plan.settle_seconds:
            self.outcome.problems.extend(crew.revive_exited())
            if time.monotonic() - started >= self.plan.crm_tail_seconds:
                latest = self._latest(sessions).values()
                settled = sum(1 for attempt in latest if attempt.state in SETTLED)
                if settled * 2 >= self.plan.deals:
                    break
            time.sleep(0.2)
        chaos, self.box.chaos = self.box.chaos, Chaos()
        self.outcome.events["calls to HubSpot"] = self.box.request_count - self.calls
        self.outcome.events.update({f"HubSpot {k} answers": v for k, v in chaos.injected.items()})
        return time.time()

    def _move(self, deal_ids: list[str]) -> None:
        with self.box.hold_webhooks():  # one wave, one webhook batch, as HubSpot sends
            for deal_id in deal_ids:
                self.moved[deal_id] = time.time()
                self.box.move_deal(deal_id, "closedwon")

    # --- settling and counting ----------------------------------------------------

    def _settle(self, crew: Crew, calm: float) -> None:
        sessions = db.session_factory(db.make_engine(self.settings))
        deadline = time.monotonic() + self.plan.settle_seconds
        while time.monotonic() < deadline:
            self.outcome.problems.extend(crew.revive_exited())
            if self.box.flush_webhooks(timeout=0) and self._all_settled(sessions):
                break
            time.sleep(0.2)
        self._count(sessions, calm)

    def _acknowledged(self) -> set[str]:
        return {
            str(event["objectId"])
            for delivery in self.box.deliveries
            if delivery.status is not None and 200 <= delivery.status < 300
            for event in delivery.events
            if event.get("propertyValue") == "closedwon"
        }

    def _latest(self, sessions: Any) -> dict[str, Attempt]:
        with sessions() as session:
            rows = session.scalars(select(Attempt).where(Attempt.crm == "hubspot")).all()
            session.expunge_all()
        latest: dict[str, Attempt] = {}
        self.attempt_counts: Counter[str] = Counter()
        for attempt in rows:
            self.attempt_counts[attempt.deal_id] += 1
            if attempt.deal_id not in latest or attempt.number > latest[attempt.deal_id].number:
                latest[attempt.deal_id] = attempt
        return latest

    def _all_settled(self, sessions: Any) -> bool:
        latest = self._latest(sessions)
        waiting = [d for d in self._acknowledged() if d not in latest]
        return not waiting and all(a.state not in ledger.IN_PROGRESS for a in latest.values())

    def _count(self, sessions: Any, calm: float) -> None:
        out, latest, acknowledged = self.outcome, self._latest(sessions), self._acknowledged()
        tickets, tasks = self._ops_records()
        settled_at: list[float] = []
        for deal_id, complete in self.complete.items():
            attempt = latest.get(deal_id)
            extra = max(0, tickets[deal_id] - 1) + max(0, tasks[deal_id] - 1)
            extra += max(0, self.attempt_counts[deal_id] - 1)
            if extra:
                out.duplicates += extra
                out.problems.append(
                    f"deal {deal_id}: {self.attempt_counts[deal_id]} attempts, "
                    f"{tickets[deal_id]} tickets, {tasks[deal_id]} tasks"
                )
            if deal_id not in acknowledged:
                out.unacknowledged += 1
            if attempt is None:
                if deal_id in acknowledged:
                    out.lost += 1
                    out.problems.append(f"deal {deal_id}: webhook acknowledged, no attempt")
                continue
            if attempt.state in ledger.IN_PROGRESS:
                out.in_progress += 1
                out.problems.append(f"deal {deal_id}: still {attempt.state} ({attempt.error})")
                continue
            if attempt.state not in SETTLED:
                out.lost += 1
                out.problems.append(f"deal {deal_id}: {attempt.state} ({attempt.error})")
                continue
            out.accepted += attempt.state == "ops_created"
            out.returned += attempt.state == "returned"
            settled_at.append(attempt.updated_at.timestamp())
            out.per_deal.append(attempt.updated_at.timestamp() - self.moved[deal_id])
            wrong = self._wrong(deal_id, complete, attempt.state, tickets[deal_id], tasks[deal_id])
            if wrong:
                out.wrong += 1
                out.problems.append(f"deal {deal_id}: {wrong}")
        if settled_at and not (out.lost or out.in_progress):
            out.settle_seconds = max(0.0, max(settled_at) - calm)
        if out.lost or out.in_progress:
            out.problems.append(self._queue_state())

    def _ops_records(self) -> tuple[Counter[str], Counter[str]]:
        """Tickets and tasks in HubSpot, per deal they are associated with."""
        tickets: Counter[str] = Counter()
        tasks: Counter[str] = Counter()
        for deal_id in self.complete:
            record = self.box.get("deals", deal_id)
            linked = record.get("associations", {})
            tickets[deal_id] = len(linked.get("tickets", []))
            tasks[deal_id] = len(self.box.tasks_for_deal(deal_id))
        return tickets, tasks

    def _wrong(self, deal_id: str, complete: bool, state: str, tickets: int, tasks: int) -> str:
        props = self.box.get("deals", deal_id)["properties"]
        if complete and state != "ops_created":
            return f"complete kit, but {state}"
        if not complete and state != "returned":
            return f"incomplete kit, but {state}"
        seen = f"HubSpot has status {props.get('fullkit_status')}, stage {props.get('dealstage')}"
        if complete and (props.get("fullkit_status") != "accepted" or not tickets):
            return f"accepted in the ledger; {seen}, {tickets} tickets"
        if not complete and (props.get("fullkit_status") != "returned" or not tasks
                             or props.get("dealstage") != "contractsent"):  # fmt: skip
            return f"returned in the ledger; {seen}, {tasks} tasks"
        return ""

    def _queue_state(self) -> str:
        settings: Settings = self.settings
        try:
            client = connect(settings, timeout=2)
            queue = Queue(QUEUE_NAME, connection=client)
            # As found: counting with RQ's clean-up would move abandoned jobs meanwhile.
            started, scheduled, failed = (
                registry(queue=queue).get_job_count(cleanup=False)
                for registry in (StartedJobRegistry, ScheduledJobRegistry, FailedJobRegistry)
            )
            return (
                f"queue at the deadline: {queue.count} queued, {started} started (by "
                f"workers alive or dead), {scheduled} scheduled, {failed} failed"
            )
        except Exception as exc:  # only a diagnosis: the counts above stand without it
            return f"queue state unknown: {type(exc).__name__}"


def _grouped(problems: list[str]) -> list[str]:
    """One line per kind of problem: "deal 1: still evaluating (x)" for 50 deals is one."""
    kinds: dict[str, list[str]] = {}
    for problem in problems:
        subject, _, what = problem.partition(": ")
        if subject.startswith("deal "):
            kinds.setdefault(what, []).append(subject.removeprefix("deal "))
        else:
            kinds.setdefault(problem, [])
    lines = []
    for what, deals in kinds.items():
        if not deals:
            lines.append(what)
            continue
        shown = ", ".join(deals[:5]) + (", ..." if len(deals) > 5 else "")
        lines.append(f"{len(deals)} deal(s) ({shown}): {what}")
    return lines


def _schedule(deal_ids: list[str], span: float, step: float) -> list[tuple[float, list[str]]]:
    """Waves of deals evenly over `span` seconds, one wave every `step` seconds."""
    count = max(1, int(span / step))
    size = -(-len(deal_ids) // count)
    return [(n * step, deal_ids[n * size : (n + 1) * size])
            for n in range(count) if deal_ids[n * size : (n + 1) * size]]  # fmt: skip


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=Plan.deals)
    parser.add_argument("--seconds", type=float, default=Plan.chaos_seconds)
    parser.add_argument("--settle", type=float, default=Plan.settle_seconds)
    parser.add_argument("--seed", type=int, default=Plan.seed)
    args = parser.parse_args(argv)
    plan = Plan(deals=args.deals, chaos_seconds=args.seconds, settle_seconds=args.settle,
                seed=args.seed)  # fmt: skip
    print(
        f"Chaos run ({plan.deals} deals, half complete; {plan.workers} workers SIGKILLed "
        f"every {plan.kill_every[0]:g}-{plan.kill_every[1]:g} s, Valkey killed "
        f"{plan.valkey_restarts}x, HubSpot {plan.error_rate:.0%} 5xx + 429 bursts + "
        f"{plan.late_rate:.0%} late answers + {plan.slow_rate:.0%} late writes, "
        f"for {plan.chaos_seconds:g} s)",
        flush=True,
    )
    outcome = Run(plan, HOME, say=lambda line: print(line, flush=True)).go()
    for line in outcome.lines():
        print(line)
    return outcome.figures()


if __name__ == "__main__":
    main()
