"""`fullkit worker` as operators run it, in real processes: killed, cut off from its
queue, and facing a CRM that hangs. Each promise here is the SPEC's, as a user sees it."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.worker import Worker
from sqlalchemy import select

from bridge import db, intake, ledger
from bridge.models import Attempt
from bridge.queue import QUEUE_NAME, HandoffQueue, connect, job_id
from bridge.settings import Settings, load_settings
from bridge.valkey import EmbeddedValkey
from connectors.hubspot_setup import setup_properties
from sandbox import HubSpotSandbox, RunningSandbox
from tests.conftest import Backend
from tests.e2e import KICKOFF
from tests.workers import (
    Holding,
    alive,
    base_env,
    descendants,
    serve_holding,
    wait_for,
    worker_process,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
SETTLED = {"ops_created", "returned"}


@dataclass
class Site:
    box: HubSpotSandbox
    running: RunningSandbox
    holding: Holding
    env: dict[str, str]
    settings: Settings
    tmp: Path

    def deal(self, name: str) -> str:
        domain = f"{name.lower()}.example"
        props = {"dealname": name, "pipeline": "default", "dealstage": "contractsent",
                 "amount": "900", "kickoff_date": KICKOFF}  # fmt: skip
        return self.box.create_deal(
            props, company={"name": name, "domain": domain},
            contacts=[{"email": f"bill@{domain}", "contact_role": "billing"}],
            line_items=[{"name": "Seat", "quantity": "1", "price": "900"}],
            owner_email="sales-sam@example.com",
        )  # fmt: skip

    def change(self, deal_id: str) -> intake.StageChange:
        self.box.move_deal(deal_id, "closedwon")
        return intake.hubspot_change(int(deal_id), "closedwon", int(time.time() * 1000), 1)

    def attempt(self, deal_id: str) -> Attempt | None:
        engine = db.make_engine(self.settings)
        try:
            with db.session_factory(engine)() as session:
                return session.scalars(select(Attempt).where(Attempt.deal_id == deal_id)).first()
        finally:
            engine.dispose()

    def state(self, deal_id: str) -> str | None:
        attempt = self.attempt(deal_id)
        return attempt.state if attempt is not None else None

    @property
    def redis(self) -> redis.Redis:
        return connect(self.settings)


@pytest.fixture
def site(backend: Backend, tmp_path: Path) -> Iterator[Site]:
    box = HubSpotSandbox(rate_limit=None)
    box.seed_default_portal()
    running, holding = serve_holding(box)
    home = tmp_path / "home"
    env = base_env(home, box, running.url)
    if backend.name == "real":
        env.update({k: str(v) for k, v in backend.env(home).items()})
    else:
        env["REDIS_URL"] = backend.redis_url
    settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
    setup_properties(settings)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    engine.dispose()
    try:
        yield Site(box, running, holding, env, settings, tmp_path)
    finally:
        holding.released.set()
        running.stop()


def test_a_hanging_crm_call_holds_one_deal_not_every_handoff(site: Site) -> None:
    slow, quick = site.deal("Slow"), site.deal("Quick")
    site.holding.held_deals.add(slow)
    queue = HandoffQueue(site.redis)
    with worker_process(site.env, site.tmp / "worker.log", FULLKIT_WORKER_PROCESSES="2"):
        intake.queue_changes(queue, [site.change(slow)])
        wait_for(lambda: site.holding.waiting > 0, 60, "the slow deal's call to hang")
        intake.queue_changes(queue, [site.change(quick)])
        wait_for(lambda: site.state(quick) in SETTLED, 90, "the quick deal to settle")
        # It settled while the slow deal's call still hung: not after its timeout.
        slow_attempt = site.attempt(slow)
        assert slow_attempt is not None
        assert slow_attempt.state in ledger.IN_PROGRESS and slow_attempt.error is None
        site.holding.released.set()
        wait_for(lambda: site.state(slow) in SETTLED, 90, "the slow deal to settle")
    assert len(site.box.tickets()) == 2


def test_a_webhook_acknowledged_before_its_worker_is_killed_is_handled_by_another(
    site: Site,
) -> None:
    deal_id = site.deal("Orphan")
    gate = site.tmp / "gate"
    change = site.change(deal_id)
    queue = HandoffQueue(site.redis)
    key = job_id("held", change.job_key)
    assert queue.enqueue_unique(
        "tests.held_jobs.stage_change_after", key, str(gate), *change.job_args()
    )
    one = dict(FULLKIT_WORKER_PROCESSES="1")
    with (
        worker_process(site.env, site.tmp / "first.log", **one),
        worker_process(site.env, site.tmp / "second.log", **one),
    ):
        job = Job.fetch(key, connection=site.redis)
        wait_for(lambda: job.get_status() == JobStatus.STARTED, 60, "the job to start")
        runner = Worker.find_by_key(
            Worker.redis_worker_namespace_prefix + (job.worker_name or ""), connection=site.redis
        )
        assert runner is not None and runner.pid
        os.kill(runner.pid, signal.SIGKILL)  # after the 204, before any ledger write
        gate.touch()
        # The SPEC: resumed within 60 s while any worker runs (RQ alone took 6 minutes).
        wait_for(lambda: site.state(deal_id) in SETTLED, 90, "the other worker to take it")
    assert len(site.box.tickets()) == 1


def test_a_killed_worker_takes_its_processes_and_scheduler_with_it(site: Site) -> None:
    with worker_process(site.env, site.tmp / "worker.log", FULLKIT_WORKER_PROCESSES="2") as worker:
        # Its worker processes, or the scheduler RQ forks once it holds the lock.
        wait_for(lambda: descendants(worker.pid), 30, "the worker's child processes")
        below = descendants(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not any(alive(pid) for pid in below), 30, "its processes to die")


def test_scheduled_retries_run_after_the_embedded_valkey_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    box = HubSpotSandbox(rate_limit=None)
    env = base_env(home, box, "http://127.0.0.1:9")  # no CRM call happens here
    valkey = EmbeddedValkey(home)
    with worker_process(env, tmp_path / "worker.log", FULLKIT_WORKER_PROCESSES="1"):
        server = valkey.running()
        assert server is not None and server.pid
        os.kill(server.pid, signal.SIGKILL)  # the queue crashes under a running worker...
        wait_for(lambda: not alive(server.pid), 10, "the server to die")
        url = valkey.url()  # ...and comes back on its port, as `fullkit serve` would bring it
        assert url.endswith(f":{server.port}/0")
        connection = redis.Redis.from_url(url)
        queue = Queue(QUEUE_NAME, connection=connection)
        job = queue.enqueue_in(dt.timedelta(seconds=1), "tests.held_jobs.nothing")
        wait_for(lambda: job.get_status() == JobStatus.FINISHED, 60, "the scheduled job to run")
    valkey.stop()
