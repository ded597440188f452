"""The worker side's container: the shared one, with every built-in connector."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Self

import structlog

import connectors
from bridge.container import Container
from bridge.queue import WORKER_CLIENT, QueueClient
from bridge.settings import Settings
from kernel.connector import Registry

log = structlog.get_logger("fullkit.runtime")


class Runtime(Container):
    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: Registry | None = None,
        *,
        client: QueueClient = WORKER_CLIENT,
    ) -> Self:
        # The registry is chosen here, on the worker side, so that the container itself
        # never imports connector code the web process must not load.
        return super().build(settings, registry or connectors.load_all(), client=client)

    def prepare_connectors(self) -> None:
        """Let each connector the kits use learn its one-off facts (a portal's time zone,
        the ops owners' ids) now, rather than the first batch after a start paying for
        them in time and in API calls. Best effort: a CRM that does not answer now is
        asked again when a batch needs it."""
        owners: dict[str, list[str]] = {}
        for kit in self.rules.kits:
            owners.setdefault(kit.ops.target, []).extend(kit.ops.owners)
        crms = {kit.crm for kit in self.rules.kits if kit.crm} or set(self.rules.mappings)
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"crm {name}", partial(self._prepare_crm, name)) for name in sorted(crms)
        ]
        steps += [
            (f"target {name}", partial(self._prepare_target, name, emails))
            for name, emails in owners.items()
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a disabled or unreachable CRM waits
                log.info("connector not prepared", connector=label, error=type(exc).__name__)

    def _prepare_crm(self, name: str) -> None:
        self.crm(name).prepare()

    def _prepare_target(self, name: str, owner_emails: list[str]) -> None:
        self.target(name).prepare(owner_emails)
