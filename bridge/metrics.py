"""Prometheus metrics: whichever web process answers /metrics shows the whole system.

Three sources, each chosen for where its events happen:

* The receivers' own counts (webhooks answered, refused by reason, events received and
  ignored by reason): counters in the web process. Under `serve` every gunicorn process
  counts into files of its own in PROMETHEUS_MULTIPROC_DIR (see bridge/gunicorn_config.py),
  and a scrape adds up the files of all processes, those that exited included. The hot
  path pays a counter increment, never a round trip. The variable must be set before
  prometheus_client is first imported.
* Hand-offs (outcomes per kit, findings per requirement, latency, time owned by sales):
  workers make them, possibly on other hosts, and the ledger records each fact once. So
  they are read from the ledger at scrape time with SQL aggregates (bridge/ledger_figures.py):
  whole across hosts, kept across restarts, never doubled by a retried step.
* Outside API calls by system and outcome, the shared rate budgets' slots left, and the
  CRMs' own rate-limit figures: workers keep them in Redis, counting each call in the round
  trip its rate-budget slot already makes (kernel/api_calls.py, kernel/rate_budget.py), and
  a scrape reads them (a few round trips per scrape, none per webhook).

A source that cannot be read (ledger or Redis down) leaves its metrics out; /metrics
still answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from bridge.ledger_figures import Histogram as Observations
from bridge.ledger_figures import LedgerFigures
from kernel.rate_budget import BudgetLeft, Observed

log = structlog.get_logger("fullkit.metrics")
Key = TypeVar("Key", bound=tuple[str, ...])  # label values, in the order of the names

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry()

WEBHOOK_ANSWERS = Counter(
    "fullkit_webhook_answers",
    "Webhook requests answered, by receiver and HTTP status",
    ["receiver", "status"],
    registry=REGISTRY,
)
WEBHOOKS_REFUSED = Counter(
    "fullkit_webhook_refused",
    "Webhook deliveries refused, by receiver and reason (too_large, content_type, signature, "
    "timestamp, malformed, wrong_account, not_configured, queue_down)",
    ["receiver", "reason"],
    registry=REGISTRY,
)
EVENTS_RECEIVED = Counter(
    "fullkit_webhook_events_received",
    "Events in webhook deliveries taken (HubSpot events, Salesforce notifications and calls)",
    ["receiver"],
    registry=REGISTRY,
)
EVENTS_IGNORED = Counter(
    "fullkit_webhook_events_ignored",
    "Events received but not queued, by receiver and reason (other_event, own_write, "
    "other_property, not_handoff_stage, duplicate)",
    ["receiver", "reason"],
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
IN_PROCESS = (
    WEBHOOK_ANSWERS, WEBHOOKS_REFUSED, EVENTS_RECEIVED, EVENTS_IGNORED, EVENTS_QUEUED,
    RECEIVER_SECONDS, ADMIN_AUTH_FAILURES,
)  # fmt: skip


def _read_or_log(source: str, read: Callable[[], object]) -> object | None:
    try:
        return read()
    except Exception as exc:  # a source that is down must not take /metrics with it
        log.warning("metrics source unreadable", source=source, error=type(exc).__name__)
        return None


class LedgerCollector(Collector):
    """Hand-off figures from the ledger (bridge/ledger_figures.py), read at scrape time,
    plus the changes found recorded already, which intake jobs count in Redis."""

    def __init__(
        self,
        figures: Callable[[], LedgerFigures],
        duplicates: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._figures = figures
        self._duplicates = duplicates

    def collect(self) -> Iterator[Metric]:
        read = _read_or_log("ledger", self._figures)
        figures = read if isinstance(read, LedgerFigures) else LedgerFigures()
        counted = _read_or_log("redis", self._duplicates)
        duplicates: Mapping[str, int] = counted if isinstance(counted, Mapping) else {}
        by_state = {(state,): n for state, n in figures.attempts_by_state.items()}
        yield _gauge(
            "fullkit_attempts", "Hand-off attempts in the ledger, by state", ["state"], by_state
        )
        yield _counter(
            "fullkit_handoffs",
            "Hand-off attempts that reached an outcome (accepted, returned, failed, no_kit), "
            "by CRM and kit",
            ["crm", "kit", "outcome"],
            figures.handoffs,
        )
        yield _counter(
            "fullkit_findings",
            "Requirements found missing when a kit was judged, by kit and requirement id",
            ["kit", "requirement"],
            figures.findings,
        )
        yield _histogram(
            "fullkit_handoff_latency_seconds",
            "From the stage change in the CRM to the hand-off settled (returned, or the ops "
            "ticket made and the deal written back)",
            figures.latency,
        )
        yield _histogram(
            "fullkit_sales_time_to_acceptance_seconds",
            "How long sales owned a deal from its first hand-off to ops accepting it",
            figures.sales_time,
        )
        changes = dict(figures.stage_changes)
        for crm, n in duplicates.items():
            changes[(crm, "duplicate")] = changes.get((crm, "duplicate"), 0) + n
        yield _counter(
            "fullkit_stage_changes",
            "Hand-off stage changes that reached the ledger, by CRM and what they led to "
            "(started, in_progress, ops_owns, stale, failed_attempt, duplicate)",
            ["crm", "outcome"],
            changes,
        )


@dataclass
class SharedFigures:
    """What workers keep in Redis for every process's /metrics."""

    calls: Mapping[tuple[str, str], int] = field(default_factory=dict)
    budgets: list[BudgetLeft] = field(default_factory=list)
    observed: Mapping[str, Observed] = field(default_factory=dict)


class SharedCollector(Collector):
    """API calls per system and outcome, the shared rate budgets' slots left, and the
    CRMs' own rate-limit figures, as the workers last left them in Redis."""

    def __init__(self, read: Callable[[], SharedFigures]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        read = _read_or_log("redis", self._read)
        shared = read if isinstance(read, SharedFigures) else SharedFigures()
        yield _counter(
            "fullkit_api_calls",
            "Calls to CRM and ops APIs, by system and outcome (ok, 429, 5xx, auth, 4xx, "
            "timeout, unreachable, other)",
            ["system", "outcome"],
            shared.calls,
        )
        left = {(b.crm, b.account): b.left for b in shared.budgets}
        yield _gauge(
            "fullkit_rate_budget_left",
            "Calls the shared rate budget of a CRM account allows right now (0 while a "
            "429 pauses it); the account is a digest, never a token",
            ["crm", "account"],
            left,
        )
        limits = {(b.crm, b.account): b.limit for b in shared.budgets}
        yield _gauge(
            "fullkit_rate_budget_limit",
            "Calls the shared rate budget of a CRM account allows per window",
            ["crm", "account"],
            limits,
        )
        now = time.time()
        remaining = {(crm,): seen.remaining_now(now) for crm, seen in shared.observed.items()}
        maximum = {(crm,): seen.maximum for crm, seen in shared.observed.items()}
        yield _gauge(
            "fullkit_crm_rate_limit_remaining",
            "Calls the CRM says are left in its rate-limit window (the max once it has passed)",
            ["crm"],
            remaining,
        )
        yield _gauge(
            "fullkit_crm_rate_limit_max", "Calls the CRM allows per window", ["crm"], maximum
        )


def _gauge(
    name: str, doc: str, labels: list[str], values: Mapping[Key, float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _counter(
    name: str, doc: str, labels: list[str], values: Mapping[Key, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _histogram(
    name: str, doc: str, values: Mapping[tuple[str, str], Observations]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["crm", "kit"])
    for key, seen in sorted(values.items()):
        pairs = zip(seen.bounds, seen.cumulative, strict=True)
        buckets = [(floatToGoString(bound), n) for bound, n in pairs]
        family.add_metric(list(key), [*buckets, ("+Inf", seen.count)], seen.total)
    return family


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """What /metrics exposes: this process's counts, or every process's in multiprocess mode."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_DIR_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in IN_PROCESS:
            registry.register(metric)
    for collector in collectors:
        registry.register(collector)
    return registry
