"""How many slow clients it takes to starve the web process (issue 15, item 2):

    python -m bench.bench_slow_clients [--cap 1000]

The Procfile's `web` command (gunicorn with bridge/gunicorn_config.py, embedded Valkey) is
run twice, back to back: as configured (gevent), and with the worker class it had before
(`--worker-class gthread --threads 8`). Against each, slow clients are opened in steps:
connections that send their headers a byte every 2 s, or complete headers and then the
body a byte every 2 s. After each step, /healthz and a signed webhook are asked three times
each with a 2 s client timeout; the figure is the number of slow clients at the first step
where most of these rounds were not answered within 2 s (or the cap, when none was). A
starved server misses every round; one late answer on a busy shared machine is not that.

Processes: gunicorn's default for this machine (WEB_CONCURRENCY, else one per core).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.figures import Figure
from bridge.valkey import EmbeddedValkey, free_port
from tests.hubspot_signing import v3_headers
from tests.slow_clients import Kind, SlowClients

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(".fullkit") / "bench" / "slow"
SECRET = "bench-slow-secret"
LIMIT_SECONDS = 2.0
PROBES = 3
STEPS = (2, 4, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1000, 2000, 4000)
# The configuration the web process had before issue 15.
BEFORE = ["--worker-class", "gthread", "--threads", "8"]


class Web:
    """The Procfile's web process, on a free port, with extra gunicorn arguments."""

    def __init__(self, extra: list[str]) -> None:
        home = HOME.resolve()
        if home.exists():
            EmbeddedValkey(home).stop()
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.home = home
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(FULLKIT_HOME=str(home), HUBSPOT_CLIENT_SECRET=SECRET, PORT=str(self.port),
                   FULLKIT_RULES_DIR=str(ROOT / "kit_rules"))  # fmt: skip
        self.log = open(home / "web.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:bridge.gunicorn_config",
             *extra, "bridge.app:create_app()"],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.healthz(timeout=5) != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"web did not start: see {home / 'web.log'}")
            time.sleep(0.2)
        self.workers = len(_children(self.process.pid))

    def healthz(self, timeout: float = LIMIT_SECONDS) -> int:
        return self._ask("GET", "/healthz", b"", {}, timeout)

    def webhook(self, deal_id: int) -> int:
        body = json.dumps([
            {"eventId": deal_id, "subscriptionId": 1, "portalId": 62515, "appId": 1,
             "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange",
             "attemptNumber": 0, "objectId": deal_id, "propertyName": "dealstage",
             "propertyValue": "closedwon", "changeSource": "CRM_UI", "sourceId": "userId:1"}
        ])  # fmt: skip
        url = f"http://127.0.0.1:{self.port}/webhooks/hubspot"
        return self._ask("POST", "/webhooks/hubspot", body.encode(),
                         v3_headers(SECRET, url, body), LIMIT_SECONDS)  # fmt: skip

    def _ask(self, method: str, path: str, body: bytes, headers: dict[str, str],
             timeout: float) -> int:  # fmt: skip
        """The answer's status, or 0 when none came within `timeout`."""
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            connection.close()
        return answer.status if time.monotonic() - started <= timeout else 0

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        EmbeddedValkey(self.home).stop()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def starving_count(web: Web, kind: Kind, cap: int) -> int | None:
    """Slow clients at the first step where /healthz or a webhook went past 2 s."""
    deal = 1
    with SlowClients("127.0.0.1", web.port, kind) as slow:
        for step in (s for s in STEPS if s <= cap):
            slow.open(step - len(slow.sockets))
            time.sleep(0.5)  # let the server take up the new connections before asking
            late = 0
            for _ in range(PROBES):
                deal += 1
                late += web.healthz() != 200 or web.webhook(deal) != 204
                if late > PROBES // 2:
                    return step
    return None


def measure(label: str, extra: list[str], cap: int) -> dict[Kind, int | None]:
    found: dict[Kind, int | None] = {}
    for kind in ("headers", "body"):
        web = Web(extra)  # afresh for each kind: starved threads of the last one stay busy
        try:
            found[kind] = starving_count(web, kind, cap)
        finally:
            web.close()
        shown = f"{found[kind]}" if found[kind] is not None else f"none up to {cap}"
        print(f"  {label} ({web.workers} processes), slow {kind}: {shown}")
    return found


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cap", type=int, default=1000, help="most slow clients to open")
    args = parser.parse_args(argv)
    # The slow clients are this process's sockets: lift its own descriptor limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.cap + 256 if hard == resource.RLIM_INFINITY else min(hard, args.cap + 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    print(
        "Slow clients (a byte every 2 s) it takes before /healthz or a signed webhook "
        f"waits over {LIMIT_SECONDS:g} s (the Procfile's web process, embedded Valkey)"
    )
    before = measure("before: gthread, 8 threads", BEFORE, args.cap)
    after = measure("now: gevent", [], args.cap)
    figures = []
    for kind in ("headers", "body"):
        name = f"slow clients ({kind} a byte / 2 s) to stall /healthz or a webhook"
        was = before[kind]
        figures.append(Figure(f"{name}, before (gthread)", was or args.cap, "clients",
                              note="" if was else "(none up to the cap)"))  # fmt: skip
        now = after[kind]
        figures.append(Figure(f"{name}, now (gevent)", now or args.cap, "clients",
                              (">=", args.cap), "" if now else "(none up to the cap)"))  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
