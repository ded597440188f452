"""An end-to-end stack for tests: sandbox HubSpot ⇄ real HTTP ⇄ Fullkit web app, RQ on
the test backend, jobs run by a real RQ worker in burst mode (no sleeps: we drain)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import update
from werkzeug.serving import make_server

from bridge import db, ledger
from bridge.app import create_app
from bridge.models import Attempt
from bridge.queue import QUEUE_NAME
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.worker import build_worker
from connectors.hubspot_setup import setup_properties
from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox
from tests.conftest import ADMIN_TOKEN

SECRET = "e2e-client-secret"
SALES = "sales-sam@example.com"
KICKOFF = "2027-01-15"
# A requirement a kit file can end with: the deal carries a signed order form.
ORDER_FORM = """
  - id: order-form
    check: 'attachments.exists(a, a.name.contains("order form") && a.extension == "pdf")'
    message: 'Attach the signed order form (PDF) to a note or email on the deal'
"""


@dataclass
class Stack:
    settings: Settings
    sandbox: HubSpotSandbox
    running: RunningSandbox
    runtime: Runtime
    app: Any
    url: str

    @property
    def queue(self) -> Queue:
        return Queue(QUEUE_NAME, connection=self.runtime.redis)

    def work(self) -> None:
        """Deliver pending webhooks, then run every queued job to completion."""
        assert self.sandbox.flush_webhooks(timeout=30)
        build_worker(self.runtime).work(burst=True, logging_level="WARNING")

    def run_scheduled_now(self) -> int:
        """Treat every scheduled retry as due (time passing, without waiting for it)."""
        with self.runtime.sessions() as session:
            session.execute(
                update(Attempt)
                .where(Attempt.next_run_at.is_not(None))
                .values(next_run_at=ledger.utcnow() - dt.timedelta(seconds=1))
                .execution_options(synchronize_session=False)
            )
            session.commit()
        registry = ScheduledJobRegistry(queue=self.queue)
        ids = registry.get_job_ids()
        for job_id in ids:
            registry.remove(job_id)
            job = self.queue.fetch_job(job_id)
            if job is not None:
                self.queue.enqueue_job(job)
        return len(ids)

    def history(self, deal_id: str) -> dict[str, Any] | None:
        with self.runtime.sessions() as session:
            return ledger.deal_history(session, "hubspot", deal_id)

    def deal(self, deal_id: str) -> dict[str, str]:
        props: dict[str, str] = self.sandbox.get("deals", deal_id)["properties"]
        return props

    def complete_deal(self, name: str = "Acme Corp", **overrides: str) -> str:
        props = {"dealname": name, "pipeline": "default", "dealstage": "contractsent",
                 "amount": "12000", "plan_tier": "pro", "kickoff_date": KICKOFF}  # fmt: skip
        props.update(overrides)
        props = {k: v for k, v in props.items() if v != ""}
        domain = "".join(ch for ch in name.lower() if ch.isalnum()) + ".example"
        return self.sandbox.create_deal(
            props,
            company={"name": name, "domain": domain},
            contacts=[
                {"email": f"pat@{domain}", "firstname": "Pat"},
                {"email": f"bill@{domain}", "contact_role": "billing"},
            ],
            line_items=[{"name": "Platform licence", "quantity": "10", "price": "1200"}],
            owner_email=SALES,
        )


def start_stack(settings_factory: Any, **sandbox_options: Any) -> Iterator[Stack]:
    box = HubSpotSandbox(**{"rate_limit": None, **sandbox_options})
    box.seed_default_portal()
    running = start_sandbox(sandbox=box)
    settings = settings_factory(
        HUBSPOT_ACCESS_TOKEN=box.access_token,
        HUBSPOT_API_BASE=running.url,
        HUBSPOT_APP_BASE=running.url,
        HUBSPOT_CLIENT_SECRET=SECRET,
        HUBSPOT_APP_ID=str(box.app_id),
        FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    setup_properties(settings)
    runtime = Runtime.build(settings)
    db.prepare(runtime.engine, settings)
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    # As hubspot-app/ subscribes: object.propertyChange events, v3 signatures.
    box.subscribe(
        f"{url}/webhooks/hubspot", SECRET, app_id=box.app_id, signature_version="v3", generic=True
    )
    try:
        yield Stack(settings, box, running, runtime, app, url)
    finally:
        server.shutdown()
        running.stop()
        runtime.engine.dispose()


def move_together(stack: Stack, deal_ids: list[str]) -> None:
    """Sales moves the deals at once; HubSpot delivers the changes in one webhook batch."""
    with stack.sandbox.hold_webhooks():
        for deal_id in deal_ids:
            stack.sandbox.move_deal(deal_id, "closedwon")
