"""How fast a real `fullkit serve` says 503 while its embedded Valkey is frozen (SIGSTOP):
the SPEC promises receivers answer within 2 s when the queue cannot be reached.

    python -m bench.bench_frozen_queue [--rounds 3]

Each round starts serve (one process, its 8 threads) on a fresh FULLKIT_HOME, checks it
answers, stops the embedded Valkey with SIGSTOP and sends two waves of three signed
webhooks and one /healthz at once, as HubSpot and a load balancer would. It prints each
answer with the seconds it took, then sends SIGCONT. Figures are wall-clock: on a shared
machine repeat the run, and compare before and after back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.figures import Figure
from bridge.valkey import EmbeddedValkey, free_port
from tests.hubspot_signing import v3_headers

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-frozen-secret"
WEBHOOKS = 3
# The second wave meets whatever the first left behind (a dropped client, a held lock).
WAVES = 2
PATIENCE = 60.0  # the client's own limit, far above the promise, so a late answer shows


def _event(deal: int) -> str:
    return json.dumps([
        {"eventId": deal, "subscriptionId": 1, "portalId": 62515, "appId": 1,
         "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange",
         "attemptNumber": 0, "objectId": deal, "propertyName": "dealstage",
         "propertyValue": "closedwon", "changeSource": "CRM_UI", "sourceId": "userId:1"}
    ])  # fmt: skip


def _timed(method: str, url: str, body: str | None = None) -> tuple[int | str, float]:
    started = time.monotonic()
    headers = v3_headers(SECRET, url, body) if body is not None else {}
    try:
        status: int | str = requests.request(
            method, url, data=body, headers=headers, timeout=PATIENCE
        ).status_code
    except requests.RequestException as exc:
        status = type(exc).__name__
    return status, time.monotonic() - started


def _wave(base: str, first: int) -> tuple[list[tuple[int | str, float]], tuple[int | str, float]]:
    with ThreadPoolExecutor(WEBHOOKS + 1) as pool:
        hooks = [
            pool.submit(_timed, "POST", f"{base}/webhooks/hubspot", _event(first + n))
            for n in range(WEBHOOKS)
        ]
        health = pool.submit(_timed, "GET", f"{base}/healthz")
        return [hook.result() for hook in hooks], health.result()


def one_round(home: Path) -> tuple[list[float], list[float]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.update(FULLKIT_HOME=str(home), HUBSPOT_CLIENT_SECRET=SECRET,
               FULLKIT_RULES_DIR=str(ROOT / "kit_rules"))  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(home.parent / f"{home.name}-serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(port), "--workers", "1"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pid = None
    try:
        deadline = time.monotonic() + 60
        while _timed("GET", f"{base}/healthz")[0] != 200:
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not become healthy")
            time.sleep(0.1)
        pid = json.loads((home / "valkey.json").read_text())["pid"]
        os.kill(pid, signal.SIGSTOP)
        hooks: list[float] = []
        health: list[float] = []
        for wave in range(WAVES):
            answers, healthz = _wave(base, 7000 + 10 * wave)
            for status, seconds in answers:
                print(f"    wave {wave + 1} webhook: {status} after {seconds:.2f} s")
            print(f"    wave {wave + 1} /healthz: {healthz[0]} after {healthz[1]:.2f} s")
            hooks += [seconds for _status, seconds in answers]
            health.append(healthz[1])
        return hooks, health
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        serve.terminate()
        serve.wait(timeout=60)
        EmbeddedValkey(home).stop()


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"Frozen queue (embedded Valkey under SIGSTOP; {WEBHOOKS} webhooks + /healthz at once)")
    webhooks: list[float] = []
    health: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fullkit-frozen-") as scratch:
        for n in range(args.rounds):
            print(f"  round {n + 1}")
            hooks, healthz = one_round(Path(scratch) / f"home{n}")
            webhooks += hooks
            health += healthz
    return [
        Figure("frozen queue: slowest webhook 503", max(webhooks), "s", ("<", 2.0)),
        Figure("frozen queue: slowest /healthz 503", max(health), "s", ("<", 2.0)),
    ]


if __name__ == "__main__":
    from bench.figures import table

    print(table(main()))
