"""Prometheus metrics. Ledger figures are read at scrape time, so every process agrees.

Under `serve` every gunicorn process counts into files of its own in
PROMETHEUS_MULTIPROC_DIR (see bridge/gunicorn_config.py), and a scrape adds up the files of
all processes, those that exited included: whichever process answers /metrics, the counts
are whole. The variable must be set before prometheus_client is first imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kernel.rate_budget import Observed

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry()

WEBHOOK_ANSWERS = Counter(
    "fullkit_webhook_answers",
    "Webhook requests answered, by receiver and HTTP status",
    ["receiver", "status"],
    registry=REGISTRY,
)
EVENTS_QUEUED = Counter(
    "fullkit_events_queued",
    "Hand-off stage changes queued (duplicates not counted)",
    ["crm"],
    registry=REGISTRY,
)
ADMIN_AUTH_FAILURES = Counter(
    "fullkit_admin_auth_failures",
    "Admin API requests refused: missing or wrong bearer token, or throttled after failures",
    ["reason"],
    registry=REGISTRY,
)
RECEIVER_SECONDS = Histogram(
    "fullkit_receiver_seconds",
    "Time to answer a webhook request",
    ["receiver"],
    registry=REGISTRY,
)


class LedgerCollector(Collector):
    def __init__(self, count_by_state: Any) -> None:
        self._count_by_state = count_by_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fullkit_attempts", "Hand-off attempts in the ledger, by state", labels=["state"]
        )
        try:
            counts = self._count_by_state()
        except Exception:  # the ledger may be down; /metrics must still answer
            counts = {}
        for state, value in sorted(counts.items()):
            family.add_metric([state], value)
        yield family


class RateLimitCollector(Collector):
    """The CRMs' own rate-limit figures (X-HubSpot-RateLimit-Remaining/-Max), as the
    workers last saw them in Redis: any process's /metrics shows the shared budget."""

    def __init__(self, read: Callable[[], Mapping[str, Observed]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        remaining = GaugeMetricFamily(
            "fullkit_crm_rate_limit_remaining",
            "Calls the CRM says are left in its rate-limit window (the max once it has passed)",
            labels=["crm"],
        )
        maximum = GaugeMetricFamily(
            "fullkit_crm_rate_limit_max", "Calls the CRM allows per window", labels=["crm"]
        )
        try:
            figures = self._read()
        except Exception:  # Redis may be down; /metrics must still answer
            figures = {}
        now = time.time()
        for crm, seen in sorted(figures.items()):
            remaining.add_metric([crm], seen.remaining_now(now))
            maximum.add_metric([crm], seen.maximum)
        yield remaining
        yield maximum


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """What /metrics exposes: this process's counts, or every process's in multiprocess mode."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_DIR_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in (WEBHOOK_ANSWERS, EVENTS_QUEUED, RECEIVER_SECONDS, ADMIN_AUTH_FAILURES):
            registry.register(metric)
    for collector in collectors:
        registry.register(collector)
    return registry
