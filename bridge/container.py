"""What a process builds once from its settings: ledger, queue, rules and, given a
registry, connectors. The web process and the worker share this one container; the
web process passes no registry, so it never imports connector code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Self

import redis
from rq.queue import EnqueueData
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from bridge import db, ledger
from bridge.queue import WORKER_CLIENT, HandoffQueue, QueueClient, QueueUnavailable, connect
from bridge.rules import Rules, load_rules
from bridge.settings import Settings
from bridge.valkey import EmbeddedValkey, Reviver
from kernel.cache import RedisCache
from kernel.connector import CrmConnector, OpsTarget, Registry
from kernel.errors import NotConfigured
from kernel.rate_budget import RateBudgets

# How long a request waits for the embedded server to start again: a clean restart takes
# a fraction of this, and with the client's own waits the answer stays within 2 s.
REVIVE_WAIT_SECONDS = 0.4


@dataclass
class Container:
    settings: Settings
    rules: Rules
    registry: Registry | None = None
    client: QueueClient = WORKER_CLIENT
    # Per CRM: the stages its receivers watch. Only the web process fills it in.
    handoff_stages: dict[str, frozenset[str]] = field(default_factory=dict)
    _redis: redis.Redis | None = None
    _reviver: Reviver | None = None
    _crms: dict[str, CrmConnector] = field(default_factory=dict)
    _targets: dict[str, OpsTarget] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: Registry | None = None,
        *,
        client: QueueClient = WORKER_CLIENT,
    ) -> Self:
        """Rules are checked against the registry's connectors when one is given."""
        rules = load_rules(settings.rules_dir, registry)
        return cls(settings=settings, rules=rules, registry=registry, client=client)

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings)

    @cached_property
    def sessions(self) -> sessionmaker:
        return db.session_factory(self.engine)

    @property
    def redis(self) -> redis.Redis:
        # One client (and its connection pool) per process: a connection per job or
        # webhook would cost a TCP handshake and more every time.
        if self._redis is None:
            self._redis = connect(self.settings, self.client, url=self._embedded_url())
        return self._redis

    def _embedded_url(self) -> str | None:
        """Where the web process finds the embedded server: the state file, or a start
        in the background if there is none. None: let connect() find (or start) it."""
        if self.settings.redis_url or self.client.starts_embedded:
            return None
        return EmbeddedValkey(self.settings.home).current_url() or self._revive()

    def _revive(self) -> str:
        if self._reviver is None:
            self._reviver = Reviver(EmbeddedValkey(self.settings.home))
        try:
            return self._reviver.revive(wait=REVIVE_WAIT_SECONDS)
        except Exception as exc:  # not started (yet): this request answers 503
            raise QueueUnavailable(f"embedded Valkey is not running: {exc}") from None

    def _reconnect(self) -> None:
        """The embedded server refused: it stopped, or came back on another port."""
        # Dropped, not closed: other threads may be using the old client this moment.
        self._redis = None
        if not self.client.starts_embedded:
            self._redis = connect(self.settings, self.client, url=self._revive())

    @property
    def queue(self) -> HandoffQueue:
        return HandoffQueue(self.redis)

    @cached_property
    def rate_budgets(self) -> RateBudgets:
        """Every CRM account's request budget, shared through Redis with other processes."""
        return RateBudgets(self.redis)

    @property
    def cache(self) -> RedisCache:
        """Facts about CRM accounts (time zones, owner ids) every process shares."""
        return RedisCache(self.redis)

    def enqueue_unique_many(self, calls: Sequence[EnqueueData]) -> list[bool]:
        queue = self.queue  # no server to be found in time raises here, with no second try
        try:
            return queue.enqueue_unique_many(calls)
        except QueueUnavailable as exc:
            # A server that does not answer in time (stalled, frozen) gets no second
            # wait: the receivers must answer 503 within 2 s.
            if self.settings.redis_url or exc.timed_out:
                raise
        # The embedded server refused: it may have been restarted on another port, or be
        # starting again. Safe to repeat, since every job is unique by its key.
        self._reconnect()
        return self.queue.enqueue_unique_many(calls)

    def ping_queue(self) -> None:
        """Raise unless the queue answers, on the same terms as the receivers."""
        client = self.redis
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            if self.settings.redis_url or isinstance(exc, redis.TimeoutError):
                raise
        self._reconnect()
        self.redis.ping()

    def count_by_state(self) -> dict[str, int]:
        with self.sessions() as session:
            return ledger.count_by_state(session)

    def crm(self, name: str) -> CrmConnector:
        if name not in self._crms:
            made = self._connectors().crms.get(name)
            if made is None:
                # A receiver may queue changes of a CRM this worker has no connector for
                # (Salesforce's receivers came before its connector): the attempt fails
                # with this reason, once, and `fullkit replay` resumes it later.
                raise NotConfigured(f"the {name} connector is not configured in this worker")
            crm = made(self.settings, self.rules.mappings[name])
            crm.rate_budgets = self.rate_budgets
            crm.cache = self.cache
            self._crms[name] = crm
        return self._crms[name]

    def target(self, name: str) -> OpsTarget:
        if name not in self._targets:
            target = self._connectors().targets[name](self.settings)
            target.rate_budgets = self.rate_budgets
            target.cache = self.cache
            self._targets[name] = target
        return self._targets[name]

    def _connectors(self) -> Registry:
        if self.registry is None:
            raise RuntimeError("this process was built without connectors (the web process)")
        return self.registry
