"""Gunicorn settings of the web process, for `fullkit serve` and the Procfile alike.

    gunicorn -c python:bridge.gunicorn_config 'bridge.app:create_app()'

Tuned for a small machine (2 cores) that also runs Valkey and the RQ worker. What a
receiver does per request is short and mostly Python (verify, parse, one round trip to the
queue), so the GIL, not waiting, bounds a process: throughput comes from processes, and
waiting (on the queue, or on a client that sends slowly) must cost next to nothing.

Nothing here may import prometheus_client or the app: the master sets the metrics directory
before any worker is forked, and each worker imports the app itself.
"""

from __future__ import annotations

import os
import resource
import shutil
import warnings
from pathlib import Path
from typing import Any

# One process per core: a process can use a core's worth of Python, no more. Platforms
# that size dynos set WEB_CONCURRENCY, which wins, as gunicorn's own default does.
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)

# gevent, not threads (issue 15): a client that sends its request a byte every few seconds,
# or stops after the headers, holds whatever serves it until it finishes. With gthread that
# was one of 8 threads, so 8 such clients per process froze /healthz and the receivers for
# as long as they liked. Under gevent each connection costs a greenlet (a few KiB), so the
# same clients are worker_connections apart from starving anyone, and the service runs on a
# fresh machine with Python alone (no buffering proxy to ship). What the receivers wait on
# cooperates once the worker monkey-patches the standard library after the fork: redis-py
# reads through socket (its socket_timeout still bounds the queue round trip; hiredis only
# parses bytes), SQLAlchemy's pool locks are threading locks, and prometheus_client's
# multiprocess files are plain mmap writes. The app is imported after the patch
# (preload_app below), so nothing it builds holds an unpatched socket or lock. The class is
# gunicorn's gevent worker, which also closes idle keep-alive connections on SIGTERM.
worker_class = "bridge.web_worker.WebWorker"
# The master imported ssl (through redis and requests) before the worker patches it, and
# gevent warns of that in every worker. Harmless here: the web process's only TLS client is
# redis-py for a rediss:// REDIS_URL, which builds its context through the ssl module's
# attributes at connect time, after the patch.
warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl has already been")
# Connections one process holds at once, slow ones included; past this a process stops
# accepting until one closes. Each needs a file descriptor: see on_starting.
worker_connections = 1000
# A request's headers must arrive within keepalive seconds (the gevent worker reads them
# under that timeout), so a client that trickles its headers is dropped after 75 s. One that
# stalls in its body holds only its own greenlet meanwhile.

# The master restarts a worker whose main loop is silent this long. Receivers answer in
# milliseconds (and 503 within 2 s when the queue is down), so 30 s means a stuck worker.
timeout = 30
# On SIGTERM, requests in flight get this long to finish; longer only delays deploys.
graceful_timeout = 10
# Longer than a load balancer's idle timeout (60 s on common ones): the balancer, not
# gunicorn, closes an idle connection, so a request never races the close and gets a 502.
# HubSpot and Salesforce reuse connections for bursts of deliveries, which saves a TCP
# (and TLS at the proxy) handshake per webhook.
keepalive = 75

# Restart each worker after this many requests, so slow leaks in libraries cannot grow
# without bound; the jitter keeps both workers from restarting at the same moment. Counts
# survive the restart: a dead process's metric files are still added up. A restart is not
# free: the new process builds the app (a second or two of CPU, while the other serves
# everyone) and the old one's keep-alive connections close under their clients, so a
# request sent on one that moment is lost. At 20,000 that happened every 40 s under 500
# webhooks/s (with 2,000 in the bench: ack p99 1.5-1.8 s and 100-370 requests lost in 12 s,
# against 0.15-0.55 s and none without restarts, on the same loaded machine). A million
# is an hour of that load per process, and never at an ordinary one.
max_requests = 1_000_000
max_requests_jitter = 50_000

# Each worker builds the app after the fork: database engines and Redis pools are not
# shared across a fork, and the metrics directory is set before the app is imported.
preload_app = False

# Heartbeat files in memory: on a busy disk a heartbeat write that stalls gets a healthy
# worker killed for being silent.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# The SPEC: forwarded headers count only from proxies the operator trusts; none by default.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")

bind = f"0.0.0.0:{os.environ.get('PORT') or 8000}"
# No access log: a formatted line and a write per request cost the receivers CPU the ack
# time needs at hundreds of webhooks a second, and the platform's router logs requests
# anyway. The app logs every refused webhook with its status and reason, and /metrics
# counts every answer by status (fullkit_webhook_answers).
accesslog = None
loglevel = "warning"


def metrics_dir(home: Path | None = None) -> Path:
    """Where every process of this server keeps its metric files."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        return Path(configured)
    home = home or Path(os.environ.get("FULLKIT_HOME") or ".fullkit")
    return (home / "metrics").resolve()


def prepare_metrics_dir(path: Path) -> None:
    """An empty directory, named in the environment every worker inherits."""
    # Files of an earlier run would be added to this run's counts.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def raise_open_file_limit() -> None:
    """Let every worker hold its worker_connections sockets (soft limits start at 256-1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = workers * worker_connections + 1024  # + the metric files, the ledger, logs
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def on_starting(_server: Any) -> None:
    """In the master, before the first worker is forked."""
    raise_open_file_limit()
    prepare_metrics_dir(metrics_dir())


def child_exit(_server: Any, worker: Any) -> None:
    """A worker exited (restart or crash): its live gauges stop counting; counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
