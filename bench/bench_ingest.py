"""Webhook ingest figures on a real `fullkit serve` (its default gunicorn settings, embedded
Valkey with its append-only file) over loopback HTTP, with keep-alive connections:

    python -m bench.bench_ingest [--rate 500] [--seconds 5] [--batches 300]

* single-event webhooks offered at a fixed rate (open loop: each request has its time, and
  its ack time counts from then, so a server that falls behind shows it): events/s
  acknowledged, ack p50 / p99;
* 100-event batches sent back to back by a few connections: events/s acknowledged;
* for each, the CPU serve and Valkey spent per request, and for single events the share the
  receiver answered within 5 and 25 ms by its own clock (from /metrics): on a shared
  machine these say whether a slow figure is Fullkit's or the neighbours'.

Every event is a hand-off stage change of its own deal, so each one is queued. No worker
runs: this measures the receivers and the queue only. The client shares the machine's
cores with the server and Valkey, as HubSpot would not; the figures are on the low side.
So the fixed-rate client is bench/open_loop.py, one thread sending requests signed
beforehand, and it prints its own CPU per request too. (Its predecessor, 16 threads with
http.client signing as they sent, took a quarter of a core at 500/s and timed an answer
only when its thread next got the GIL.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty, SimpleQueue

from bench import open_loop
from bench.figures import Figure
from bridge.valkey import EmbeddedValkey, free_port
from tests.hubspot_signing import v3_headers

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(".fullkit") / "bench" / "ingest"
SECRET = "bench-ingest-secret"
PATH = "/webhooks/hubspot"
# Client connections for the fixed-rate run: at 500/s and a few ms each, 16 are never the
# limit (HubSpot itself opens a handful per app).
CONNECTIONS = 16
BATCH_CONNECTIONS = 4
TIMEOUT = 10.0


def events(first: int, size: int) -> str:
    now_ms = int(time.time() * 1000)
    return json.dumps([
        {"eventId": first + n, "subscriptionId": 1, "portalId": 62515, "appId": 1,
         "occurredAt": now_ms, "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
         "objectId": first + n, "propertyName": "dealstage", "propertyValue": "closedwon",
         "changeSource": "CRM_UI", "sourceId": "userId:1"}
        for n in range(size)
    ])  # fmt: skip


class Server:
    """`fullkit serve` with its defaults, from `code` (this checkout unless told otherwise)."""

    def __init__(self, code: Path) -> None:
        home = HOME.resolve()
        if home.exists():
            EmbeddedValkey(home).stop()
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.home = home
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
        env.update(FULLKIT_HOME=str(home), HUBSPOT_CLIENT_SECRET=SECRET,
                   FULLKIT_RULES_DIR=str(ROOT / "kit_rules"), PYTHONPATH=str(code))  # fmt: skip
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for _attempt in range(3):  # another process may take the free port first
            if self._start(code, env):
                return
        raise RuntimeError("serve did not start: see " + str(home / "serve.log"))

    def _start(self, code: Path, env: dict[str, str]) -> bool:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        log = self.home / "serve.log"
        self.log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(self.port)],
            env=env, cwd=code, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while b"listening on" not in log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                self.log.close()
                return False
            time.sleep(0.1)
        return True

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(self, body: str) -> bytes:
        """A signed single request, whole, for the open-loop client."""
        headers = v3_headers(SECRET, self.url, body)
        return open_loop.request_bytes("POST", PATH, f"127.0.0.1:{self.port}", headers,
                                       body.encode())  # fmt: skip

    def post(self, connection: http.client.HTTPConnection, body: str) -> int:
        connection.request("POST", PATH, body=body, headers=v3_headers(SECRET, self.url, body))
        answer = connection.getresponse()
        answer.read()
        return answer.status

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by serve's processes and the embedded Valkey (Linux only):
        other load on the machine distorts it much less than it does the times."""
        pids = {self.process.pid}
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids |= {int(pid) for pid in children.read_text().split()}
            valkey = json.loads((self.home / "valkey.json").read_text()).get("pid")
            if isinstance(valkey, int):
                pids.add(valkey)
            ticks = 0
            for pid in pids:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            return None
        return ticks / os.sysconf("SC_CLK_TCK")

    def within(self) -> dict[float, float]:
        """Cumulative count of receiver answers per histogram bucket (seconds), from /metrics."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("fullkit_receiver_seconds_bucket{") and 'receiver="hubspot"' in line:
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets[float(bound)] = buckets.get(float(bound), 0) + float(line.split()[-1])
        return buckets

    def queued(self) -> int:
        import redis

        client = redis.Redis.from_url(EmbeddedValkey(self.home).url())
        with client:
            return int(client.llen("rq:queue:fullkit"))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()
        EmbeddedValkey(self.home).stop()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def fixed_rate(server: Server, rate: int, seconds: float, first: int) -> list[Figure]:
    count = int(rate * seconds)
    cpu_before = server.cpu_seconds()
    within_before = server.within()
    # Signed beforehand, as HubSpot signs on its own machines: the timestamps are a few
    # seconds old when sent, well inside the receiver's 5-minute window.
    requests = [server.request(events(first + n, 1)) for n in range(count)]
    client_before = _own_cpu_seconds()
    outcome = open_loop.run(("127.0.0.1", server.port), requests, rate, CONNECTIONS, TIMEOUT)
    client_cpu = _own_cpu_seconds() - client_before
    acks = [took for took, status in zip(outcome.latencies, outcome.statuses, strict=True)
            if status == 204]  # fmt: skip
    statuses = outcome.statuses + [0] * outcome.lost
    elapsed = outcome.elapsed
    refused = len(statuses) - len(acks)
    if not acks:
        print(f"  single-event webhooks offered at {rate}/s: none acknowledged")
        return [Figure(f"ingest, single events at {rate}/s: acknowledged", 0, "/s", (">=", rate))]
    print(
        f"  single-event webhooks offered at {rate}/s for {seconds:.0f} s: "
        f"{len(acks) / elapsed:.0f}/s acknowledged, "
        f"ack p50 {_percentile(acks, 0.5) * 1000:.1f} ms, "
        f"p99 {_percentile(acks, 0.99) * 1000:.1f} ms, max {max(acks) * 1000:.1f} ms"
        + (f", {refused} not acknowledged" if refused else "")
    )
    _print_cpu(server, cpu_before, len(statuses), "single-event webhook")
    print(f"    CPU of this client per request: {client_cpu / max(1, len(statuses)) * 1000:.2f} ms")
    # Inside the app only (no queueing for a thread or the CPU): where the time goes.
    within = {le: n - within_before.get(le, 0) for le, n in server.within().items()}
    total = within.get(float("inf"))
    if total:
        shares = ", ".join(
            f"{within[le] / total:.1%} within {le * 1000:g} ms"
            for le in (0.005, 0.025)
            if le in within
        )
        print(f"    the receiver itself answered {shares}")
    label = f"ingest, single events at {rate}/s"
    return [
        # An open-loop client at `rate` can acknowledge at most that; 1% short is keeping up.
        Figure(f"{label}: acknowledged", len(acks) / elapsed, "/s", (">=", rate * 0.99)),
        Figure(f"{label}: ack p50", _percentile(acks, 0.5) * 1000, "ms"),
        Figure(f"{label}: ack p99", _percentile(acks, 0.99) * 1000, "ms", ("<", 25)),
    ]


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _print_cpu(server: Server, before: float | None, requests: int, what: str) -> None:
    after = server.cpu_seconds()
    if before is not None and after is not None and requests:
        print(
            f"    CPU of serve and Valkey per {what}: {(after - before) / requests * 1000:.2f} ms"
        )


def batches(server: Server, total: int, first: int) -> list[Figure]:
    bodies = [events(first + n * 100, 100) for n in range(total)]
    todo: SimpleQueue[str] = SimpleQueue()
    for body in bodies:
        todo.put(body)
    took: list[float] = []
    lock = threading.Lock()

    def sender() -> int:
        acked = 0
        connection = server.connection()
        while True:
            try:
                body = todo.get_nowait()
            except Empty:
                break
            started = time.perf_counter()
            if server.post(connection, body) == 204:
                acked += 100
                with lock:
                    took.append(time.perf_counter() - started)
        connection.close()
        return acked

    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(BATCH_CONNECTIONS) as pool:
        acked = sum(pool.map(lambda _n: sender(), range(BATCH_CONNECTIONS)))
    elapsed = time.perf_counter() - started
    print(
        f"  100-event batches, {BATCH_CONNECTIONS} connections back to back: "
        f"{acked / elapsed:,.0f} events/s acknowledged ({acked:,} events in {elapsed:.1f} s), "
        f"batch ack p50 {statistics.median(took) * 1000:.1f} ms, "
        f"p99 {_percentile(took, 0.99) * 1000:.1f} ms"
    )
    _print_cpu(server, cpu_before, total, "100-event batch")
    return [
        Figure("ingest, 100-event batches: events acknowledged", acked / elapsed, "/s",
               (">=", 5000)),
        Figure("ingest, 100-event batches: ack p99", _percentile(took, 0.99) * 1000, "ms"),
    ]  # fmt: skip


def warm_up(server: Server, n: int) -> None:
    connection = server.connection()
    try:
        server.post(connection, events(n, 1))
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose serve to run")
    args = parser.parse_args(argv)
    print("Webhook ingest (real serve, embedded Valkey, loopback, keep-alive connections)")
    # The client's threads hand the GIL over sooner than every 5 ms, so that a response is
    # timed when it arrives, not when its thread next gets to run.
    sys.setswitchinterval(0.0005)
    server = Server(args.code.resolve())
    try:
        # Warm up: imports, connection pools and the script cache of every process.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: warm_up(server, n), range(32)))
        figures = fixed_rate(server, args.rate, args.seconds, first=1_000_000)
        figures += batches(server, args.batches, first=10_000_000)
        print(f"  jobs queued: {server.queued():,}")
    finally:
        server.close()
    return figures


if __name__ == "__main__":
    main()
