"""Fast ingest: a webhook batch reaches the queue in one round trip, de-duplicated, and
/metrics counts are whole when `serve` runs several processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq import Queue
from rq.job import JobStatus

import bridge.container
from bridge.app import create_app
from bridge.queue import QUEUE_NAME
from tests.conftest import ROOT, secret
from tests.hubspot_signing import v3_headers
from tests.test_queue import CountingConnection

SECRET = "test-client-secret"
URI = "http://localhost/webhooks/hubspot"


def batch(first_deal: int, size: int, stage: str = "closedwon") -> str:
    return json.dumps(
        [
            {"eventId": 9000 + n, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
             "occurredAt": 1795774800000, "subscriptionType": "deal.propertyChange",
             "attemptNumber": 0, "objectId": first_deal + n, "propertyName": "dealstage",
             "propertyValue": stage, "changeSource": "CRM_UI", "sourceId": "userId:101"}
            for n in range(size)
        ]
    )  # fmt: skip


def post(client: Any, body: str) -> int:
    answer = client.post("/webhooks/hubspot", data=body, headers=v3_headers(SECRET, URI, body))
    return int(answer.status_code)


@pytest.fixture
def counted_app(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app, its queue connection counting what it sends to the server."""

    def connect(settings: Any, client: Any, *, url: str | None = None) -> redis.Redis:
        client = redis.Redis.from_url(
            secret(settings.redis_url), connection_class=CountingConnection
        )
        client.ping()  # the connection's own handshake is not the webhook's
        return client

    monkeypatch.setattr(bridge.container, "connect", connect)
    app = create_app(settings)
    app.config["FULLKIT"].redis.ping()  # connected before the counting starts
    return app


def test_a_100_event_webhook_is_queued_in_one_round_trip(counted_app: Any) -> None:
    client = counted_app.test_client()
    # The server's first delivery also loads the queueing script (once per server start).
    assert post(client, batch(4000, 1)) == 204
    Queue(QUEUE_NAME, connection=counted_app.config["FULLKIT"].redis).empty()
    body = batch(5000, 100)
    CountingConnection.sends = 0
    assert post(client, body) == 204
    assert CountingConnection.sends == 1
    queue = Queue(QUEUE_NAME, connection=counted_app.config["FULLKIT"].redis)
    [job] = queue.jobs  # the delivery's intake job, carrying all its changes
    assert sorted(int(change[1]) for change in job.args[0]) == list(range(5000, 5100))

    CountingConnection.sends = 0
    assert post(client, body) == 204  # HubSpot retried the same batch
    assert CountingConnection.sends == 1
    assert queue.count == 1


def test_a_redelivered_batch_requeues_the_intake_job_that_failed(counted_app: Any) -> None:
    client = counted_app.test_client()
    body = batch(6000, 3)
    assert post(client, body) == 204
    queue = Queue(QUEUE_NAME, connection=counted_app.config["FULLKIT"].redis)
    [failed] = queue.jobs
    # As a worker leaves an intake job whose retries are spent.
    queue.remove(failed)
    failed.set_status(JobStatus.FAILED)
    queue.failed_job_registry.add(failed, exc_string="ledger unreachable")

    assert post(client, body) == 204
    assert failed.get_status() == JobStatus.QUEUED
    assert queue.job_ids == [failed.id]
    assert post(client, body) == 204  # queued already: not twice
    assert queue.count == 1


def test_a_batch_answers_503_when_the_queue_is_down(make_settings: Any) -> None:
    settings = make_settings(HUBSPOT_CLIENT_SECRET=SECRET, REDIS_URL="redis://127.0.0.1:9/0")
    assert post(create_app(settings).test_client(), batch(7000, 100)) == 503


def _metric(text: str, line_start: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def test_metrics_are_whole_across_two_serve_processes(backend: Any, tmp_path: Path) -> None:
    from bridge.valkey import free_port

    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.update(HUBSPOT_CLIENT_SECRET=SECRET,
               FULLKIT_RULES_DIR=str(ROOT / "kit_rules"), **backend.env(home))  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(port), "--workers", "2"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in (tmp_path / "serve.log").read_text():
            assert serve.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)

        def deliver(n: int) -> int:
            body = batch(8000 + n, 1)
            target = f"{url}/webhooks/hubspot"
            # A connection each, so that both processes take their share.
            with requests.Session() as session:
                return session.post(target, data=body, headers=v3_headers(SECRET, target, body),
                                    timeout=10).status_code  # fmt: skip

        def processes_counting() -> int:
            files = (home / "metrics").glob("counter_*.db")
            return len({path.stem.rsplit("_", 1)[-1] for path in files})

        # Which process accepts a connection is the kernel's choice: send until both have.
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while processes_counting() < 2:
                assert sent < 2000, "the webhooks should have reached both processes"
                assert list(pool.map(deliver, range(sent, sent + 40))) == [204] * 40
                sent += 40
        for _ in range(6):  # whichever process answers the scrape
            with requests.Session() as session:
                text = session.get(f"{url}/metrics", timeout=10).text
            answers = 'fullkit_webhook_answers_total{receiver="hubspot",status="204"}'
            assert _metric(text, answers) == sent
            assert _metric(text, 'fullkit_events_queued_total{crm="hubspot"}') == sent
            assert _metric(text, 'fullkit_receiver_seconds_count{receiver="hubspot"}') == sent
    finally:
        serve.terminate()
        serve.wait(timeout=60)


def test_the_receiver_finds_a_restarted_embedded_valkey(tmp_path: Path) -> None:
    from bridge.settings import load_settings
    from bridge.valkey import EmbeddedValkey

    home = tmp_path / "home"
    settings = load_settings(FULLKIT_HOME=str(home), HUBSPOT_CLIENT_SECRET=SECRET,
                             FULLKIT_RULES_DIR=str(ROOT / "kit_rules"))  # fmt: skip
    client = create_app(settings).test_client()
    try:
        assert post(client, batch(9100, 1)) == 204
        EmbeddedValkey(home).stop()
        assert post(client, batch(9200, 1)) == 204  # started again; HubSpot sees no outage
        connection = redis.Redis.from_url(EmbeddedValkey(home).url())
        with connection:
            assert Queue(QUEUE_NAME, connection=connection).count == 2
    finally:
        EmbeddedValkey(home).stop()


def test_the_procfile_web_process_uses_the_serve_settings(tmp_path: Path) -> None:
    web = next(
        line.split(":", 1)[1].strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    args = shlex.split(web)
    assert args[0] == "gunicorn"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.update(FULLKIT_HOME=str(tmp_path), FULLKIT_RULES_DIR=str(ROOT / "kit_rules"),
               WEB_CONCURRENCY="3")  # fmt: skip
    printed = subprocess.run(
        [sys.executable, "-m", "gunicorn", *args[1:], "--print-config"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    settings = dict(
        (name.strip(), value.strip())
        for name, value in (
            line.split("=", 1) for line in printed.stdout.splitlines() if "=" in line
        )
    )
    assert settings["workers"] == "3"
    assert settings["worker_class"] == "bridge.web_worker.WebWorker"
    assert settings["keepalive"] == "75"  # the file's own choices, not gunicorn's defaults


_YIELDS = """
from gevent import monkey
monkey.patch_all()
import sys
import gevent
import redis
from bridge.web_worker import checks_without_yielding
if sys.argv[2] == "web worker":
    checks_without_yielding()
client = redis.Redis.from_url(sys.argv[1])
client.ping()
ran = []
gevent.spawn(ran.append, "another request")
connection = client.connection_pool.get_connection()
client.connection_pool.release(connection)
print(len(ran))
"""


@pytest.mark.parametrize(("setup", "turns"), [("web worker", "0"), ("gevent alone", "1")])
def test_a_pooled_queue_connection_is_checked_without_a_turn_of_the_event_loop(
    backend: Any, setup: str, turns: str
) -> None:
    """Under the web worker, taking a queue connection for a webhook's one round trip lets
    no other request run first (gevent's own poll would: a whole turn of its loop)."""
    done = subprocess.run(
        [sys.executable, "-c", _YIELDS, backend.redis_url, setup],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == turns
