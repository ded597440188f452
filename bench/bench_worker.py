"""Worker figures (issue 15 items 11 and 18): how soon a killed worker's webhook is
handled by another, and how long a deal takes while another deal's CRM calls hang.

Real `fullkit worker` processes, the sandbox HubSpot on loopback behind a middleware
that holds one deal's calls (tests/workers.py), SQLite and a fresh embedded Valkey.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from rq.job import Job, JobStatus
from rq.worker import Worker
from sqlalchemy import select

from bench.figures import Figure
from bridge import db, intake
from bridge.models import Attempt
from bridge.queue import HandoffQueue, connect, job_id
from bridge.settings import Settings, load_settings
from bridge.valkey import EmbeddedValkey
from connectors.hubspot_setup import setup_properties
from sandbox import HubSpotSandbox, RunningSandbox
from tests.workers import Holding, base_env, serve_holding, wait_for, worker_process

SETTLED = {"ops_created", "returned"}
KICKOFF = "2027-01-15"


def _deal(box: HubSpotSandbox, name: str) -> str:
    domain = f"{name.lower()}.example"
    props = {"dealname": name, "pipeline": "default", "dealstage": "contractsent",
             "amount": "900", "kickoff_date": KICKOFF}  # fmt: skip
    return box.create_deal(
        props, company={"name": name, "domain": domain},
        contacts=[{"email": f"bill@{domain}", "contact_role": "billing"}],
        owner_email="sales-sam@example.com",
    )  # fmt: skip


def _state(settings: Settings, deal_id: str) -> str | None:
    engine = db.make_engine(settings)
    try:
        with db.session_factory(engine)() as session:
            query = select(Attempt.state).where(Attempt.deal_id == deal_id)
            return session.scalars(query).first()
    finally:
        engine.dispose()


def _change(box: HubSpotSandbox, deal_id: str) -> intake.StageChange:
    box.move_deal(deal_id, "closedwon")
    return intake.hubspot_change(int(deal_id), "closedwon", int(time.time() * 1000), 1)


def _site(tmp: Path) -> tuple[HubSpotSandbox, RunningSandbox, Holding, dict[str, str], Settings]:
    box = HubSpotSandbox(rate_limit=None)
    box.seed_default_portal()
    running, holding = serve_holding(box)
    env = base_env(tmp / "home", box, running.url)
    settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
    setup_properties(settings)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    engine.dispose()
    return box, running, holding, env, settings


def killed_worker(cap: float) -> Figure:
    """Seconds from SIGKILL of the worker running an intake job to the deal settled."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        box, running, holding, env, settings = _site(tmp)
        try:
            deal_id = _deal(box, "Orphan")
            gate = tmp / "gate"
            change = _change(box, deal_id)
            connection = connect(settings)
            key = job_id("held", change.job_key)
            HandoffQueue(connection).enqueue_unique(
                "tests.held_jobs.stage_change_after", key, str(gate), *change.job_args()
            )
            one = {"FULLKIT_WORKER_PROCESSES": "1"}
            with (
                worker_process(env, tmp / "first.log", **one),
                worker_process(env, tmp / "second.log", **one),
            ):
                job = Job.fetch(key, connection=connection)
                wait_for(lambda: job.get_status() == JobStatus.STARTED, 60, "the job to start")
                prefix = Worker.redis_worker_namespace_prefix
                runner = Worker.find_by_key(prefix + (job.worker_name or ""), connection)
                assert runner is not None and runner.pid
                os.kill(runner.pid, signal.SIGKILL)
                killed = time.monotonic()
                gate.touch()
                deadline = killed + cap
                while _state(settings, deal_id) not in SETTLED and time.monotonic() < deadline:
                    time.sleep(0.2)
                took = time.monotonic() - killed
        finally:
            holding.released.set()
            running.stop()
            EmbeddedValkey(tmp / "home").stop()
    note = f"(stopped at {cap:g} s cap)" if took >= cap else ""
    print(f"  webhook of a SIGKILLed worker settled by another after {took:.1f} s {note}")
    return Figure("killed worker's webhook settled", took, "s", ("<=", 60), note)


def hanging_crm(cap: float) -> Figure:
    """Seconds for a deal to settle while another deal's CRM calls hang."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        box, running, holding, env, settings = _site(tmp)
        try:
            slow, quick = _deal(box, "Slow"), _deal(box, "Quick")
            holding.held_deals.add(slow)
            queue = HandoffQueue(connect(settings))
            with worker_process(env, tmp / "worker.log"):
                intake.queue_changes(queue, [_change(box, slow)])
                wait_for(lambda: holding.waiting > 0, 60, "the hang")
                started = time.monotonic()
                intake.queue_changes(queue, [_change(box, quick)])
                deadline = started + cap
                while _state(settings, quick) not in SETTLED and time.monotonic() < deadline:
                    time.sleep(0.1)
                took = time.monotonic() - started
                holding.released.set()
        finally:
            holding.released.set()
            running.stop()
            EmbeddedValkey(tmp / "home").stop()
    note = f"(stopped at {cap:g} s cap)" if took >= cap else ""
    print(f"  a deal settled in {took:.1f} s while another deal's CRM calls hung {note}")
    return Figure("deal settled beside a hanging CRM call", took, "s", ("<=", 20), note)


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cap", type=float, default=120.0)
    args = parser.parse_args(argv)
    print("Worker figures (real worker processes, default FULLKIT_WORKER_PROCESSES)")
    return [hanging_crm(args.cap), killed_worker(args.cap)]


if __name__ == "__main__":
    main()
