"""Everything a process builds once from its settings: ledger, queue, rules, connectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

import connectors
from bridge import db
from bridge.queue import HandoffQueue, connect
from bridge.rules import Rules, load_rules
from bridge.settings import Settings
from kernel.connector import CrmConnector, OpsTarget
from kernel.rate_budget import RateBudgets


@dataclass
class Runtime:
    settings: Settings
    rules: Rules
    _crms: dict[str, CrmConnector] = field(default_factory=dict)
    _targets: dict[str, OpsTarget] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        return cls(settings=settings, rules=load_rules(settings.rules_dir, connectors.load_all()))

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings)

    @cached_property
    def sessions(self) -> sessionmaker:
        return db.session_factory(self.engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings, timeout=10)

    @cached_property
    def queue(self) -> HandoffQueue:
        return HandoffQueue(self.redis)

    @cached_property
    def rate_budgets(self) -> RateBudgets:
        """Every CRM account's request budget, shared through Redis with other processes."""
        return RateBudgets(self.redis)

    def crm(self, name: str) -> CrmConnector:
        if name not in self._crms:
            registry = connectors.load_all()
            crm = registry.crms[name](self.settings, self.rules.mappings[name])
            crm.rate_budgets = self.rate_budgets
            self._crms[name] = crm
        return self._crms[name]

    def target(self, name: str) -> OpsTarget:
        if name not in self._targets:
            target = connectors.load_all().targets[name](self.settings)
            target.rate_budgets = self.rate_budgets
            self._targets[name] = target
        return self._targets[name]
