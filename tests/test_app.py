"""Health, metrics, and the real `serve` + `worker` processes sharing one embedded Valkey."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge import db, ledger
from bridge.app import create_app
from bridge.settings import load_settings
from bridge.valkey import EmbeddedValkey, free_port
from sandbox import HubSpotSandbox, start_sandbox
from tests.conftest import FIXTURES, ROOT
from tests.hubspot_signing import v3_headers


def test_healthz_is_200_when_queue_and_ledger_answer(settings: Any) -> None:
    answer = create_app(settings).test_client().get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok", "queue": "ok", "ledger": "ok"}


def test_healthz_is_503_when_the_queue_is_down(make_settings: Any) -> None:
    app = create_app(make_settings(REDIS_URL="redis://127.0.0.1:9/0"))
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["queue"] == "unreachable"


def test_healthz_is_503_when_the_database_is_down(make_settings: Any) -> None:
    app = create_app(make_settings(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none"))
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["ledger"] == "unreachable"


def test_metrics_speak_prometheus_and_count_webhooks(settings: Any) -> None:
    client = create_app(settings).test_client()
    client.post("/webhooks/hubspot", data="[]", headers={"Content-Type": "text/plain"})
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    text = answer.get_data(as_text=True)
    assert 'fullkit_webhook_answers_total{receiver="hubspot",status="415"}' in text
    assert "# TYPE fullkit_attempts gauge" in text
    assert "test-client-secret" not in text


def _wait_for(check: Any, timeout: float = 30.0) -> None:
    """Wait for another process to reach a state; fails the test past the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Any]:
    box = HubSpotSandbox(rate_limit=None)
    box.seed_default_portal()
    running = start_sandbox(sandbox=box)
    home = tmp_path / "home"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))},
        "FULLKIT_HOME": str(home),
        "FULLKIT_RULES_DIR": str(ROOT / "kit_rules"),
        "HUBSPOT_ACCESS_TOKEN": box.access_token,
        "HUBSPOT_API_BASE": running.url,
        "HUBSPOT_CLIENT_SECRET": "process-secret",
        "HUBSPOT_APP_ID": str(box.app_id),
    }
    settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
    from connectors.hubspot_setup import setup_properties

    setup_properties(settings)
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("serve", "worker")]  # noqa: SIM115
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for args, log in ((["serve", "--port", str(port)], logs[0]), (["worker"], logs[1]))
    ]
    try:
        yield box, settings, f"http://127.0.0.1:{port}", tmp_path
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=15)
        for log in logs:
            log.close()
        running.stop()
        EmbeddedValkey(home).stop()


def test_serve_and_worker_processes_hand_off_a_deal(processes: Any) -> None:
    box, settings, url, logs = processes

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    _wait_for(healthy)
    _wait_for(lambda: "worker ready" in (logs / "worker.log").read_text())
    box.subscribe(f"{url}/webhooks/hubspot", "process-secret", app_id=box.app_id,
                  signature_version="v3")  # fmt: skip
    deal_id = box.create_deal(
        {"dealname": "Proc Co", "dealstage": "contractsent", "amount": "100"},
        company={"name": "Proc Co", "domain": "proc.example"},
        contacts=[{"email": "bill@proc.example", "contact_role": "billing"}],
        owner_email="sales-sam@example.com",
    )
    box.move_deal(deal_id, "closedwon")
    assert box.flush_webhooks(timeout=10)
    assert [d.status for d in box.deliveries] == [204]
    sessions = db.session_factory(db.make_engine(settings))

    def settled() -> bool:
        with sessions() as session:
            latest = ledger.latest_attempt(session, "hubspot", deal_id)
            return latest is not None and latest.state not in ledger.IN_PROGRESS

    _wait_for(settled)
    # This kit asks for line items and a kickoff date, which this deal lacks.
    assert box.get("deals", deal_id)["properties"]["fullkit_status"] == "returned"
    assert len(box.tasks_for_deal(deal_id)) == 1
    # The deal settled, so what serve queued reached the worker: both processes found the
    # one embedded server through FULLKIT_HOME, and it is the only one recorded there.
    assert json.loads((settings.home / "valkey.json").read_text())["port"] > 0


def test_serve_starts_and_says_503_while_the_queue_is_down(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FULLKIT_HOME": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:9/0",
           "HUBSPOT_CLIENT_SECRET": "s"}  # fmt: skip
    env.pop("DATABASE_URL", None)
    child = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", str(port)],
                             env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        answers: list[int] = []

        def answered() -> bool:
            try:
                answers.append(
                    requests.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code
                )
                return True
            except requests.RequestException:
                return False

        _wait_for(answered)
        assert answers[-1] == 503
        body = (FIXTURES / "hubspot" / "deal_stage__closedwon.json").read_text()
        hook = requests.post(f"http://127.0.0.1:{port}/webhooks/hubspot", data=body,
                             headers=v3_headers("s", f"http://127.0.0.1:{port}/webhooks/hubspot",
                                                body), timeout=5)  # fmt: skip
        assert hook.status_code == 503  # HubSpot will retry: nothing is lost
    finally:
        child.terminate()
        child.wait(timeout=15)
