"""Slow clients cannot starve the receivers (issue 15, item 2): connections that trickle
their headers or their body hold nothing the next webhook or /healthz needs."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT
from tests.hubspot_signing import v3_headers
from tests.slow_clients import SlowClients

SECRET = "test-client-secret"
SLOW_CLIENTS = 50
# Far above a normal answer (milliseconds), so a starved server fails the test instead of
# hanging it; the assertion is on the answers, never on how long they took.
PATIENCE = 30


@contextlib.contextmanager
def running_serve(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """A real `fullkit serve` with its own settings: one process, as small as it runs."""
    from bridge.valkey import free_port

    port = free_port()
    env = {**env, "HUBSPOT_CLIENT_SECRET": SECRET, "FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(port), "--workers", "1"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)


def clean_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


@pytest.fixture
def serve(backend: Any, tmp_path: Path) -> Iterator[int]:
    env = {**clean_environment(), **backend.env(tmp_path / "home")}
    with running_serve(env, tmp_path / "serve.log") as port:
        yield port


def stage_change(deal_id: int) -> str:
    return json.dumps([
        {"eventId": deal_id, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
         "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange",
         "attemptNumber": 0, "objectId": deal_id, "propertyName": "dealstage",
         "propertyValue": "closedwon", "changeSource": "CRM_UI", "sourceId": "userId:101"}
    ])  # fmt: skip


@pytest.mark.parametrize("kind", ["headers", "body"])
def test_a_webhook_and_healthz_are_answered_while_slow_clients_hold_connections(
    serve: int, kind: Any
) -> None:
    url = f"http://127.0.0.1:{serve}"
    with SlowClients("127.0.0.1", serve, kind) as slow:
        slow.open(SLOW_CLIENTS)
        body = stage_change(7001)
        target = f"{url}/webhooks/hubspot"
        webhook = requests.post(
            target, data=body, headers=v3_headers(SECRET, target, body), timeout=PATIENCE
        )
        health = requests.get(f"{url}/healthz", timeout=PATIENCE)
        assert len(slow.sockets) == SLOW_CLIENTS

    assert webhook.status_code == 204  # durably queued, as HubSpot needs to hear
    assert health.status_code == 200
    assert health.json()["queue"] == "ok"


def test_a_queue_that_never_answers_is_a_503_under_the_event_loop(tmp_path: Path) -> None:
    """The queue round trip stays bounded in a gevent worker: redis-py's socket timeout
    holds on the patched socket, so HubSpot hears 503 and retries."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        env = {**clean_environment(), "FULLKIT_HOME": str(tmp_path / "home"),
               "REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}  # fmt: skip
        with running_serve(env, tmp_path / "serve.log") as port:
            target = f"http://127.0.0.1:{port}/webhooks/hubspot"
            body = stage_change(7002)
            webhook = requests.post(
                target, data=body, headers=v3_headers(SECRET, target, body), timeout=PATIENCE
            )
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=PATIENCE)

    assert webhook.status_code == 503
    assert health.status_code == 503
    assert health.json()["queue"] == "unreachable"


def test_a_stopping_server_closes_idle_keep_alive_connections_at_once(tmp_path: Path) -> None:
    """HubSpot and proxies keep connections open between deliveries; stopping closes them
    quietly. (That it does so at once, where gunicorn's own gevent worker waits out
    graceful_timeout, is what the 15 s stop waits of tests/test_app.py hold it to.)"""
    env = {**clean_environment(), "FULLKIT_HOME": str(tmp_path / "home")}
    log = tmp_path / "serve.log"
    with running_serve(env, log) as port:
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
        idle.request("GET", "/healthz")
        answer = idle.getresponse()
        assert answer.status == 200 and answer.read()  # the connection stays open for more
    # serve has exited: the idle connection was closed by the server, not cut off late.
    assert idle.sock is not None and idle.sock.recv(1) == b""
    idle.close()
    said = log.read_text()
    assert "graceful timeout" not in said and "Traceback" not in said
