"""Where each connector module registers itself by name; importing it imports no connector."""

from __future__ import annotations

from kernel.connector import CrmConnector, OpsTarget, Registry

registry = Registry()


def register_crm(cls: type[CrmConnector]) -> type[CrmConnector]:
    registry.crms[cls.name] = cls
    return cls


def register_target(cls: type[OpsTarget]) -> type[OpsTarget]:
    registry.targets[cls.name] = cls
    return cls
