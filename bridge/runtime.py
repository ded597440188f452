"""The worker side's container: the shared one, with every built-in connector."""

from __future__ import annotations

from typing import Self

import connectors
from bridge.container import Container
from bridge.queue import WORKER_CLIENT, QueueClient
from bridge.settings import Settings
from kernel.connector import Registry


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
