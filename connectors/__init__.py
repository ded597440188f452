"""Connectors to outside systems: CRMs (deal side) and ops targets, registered by name."""

from __future__ import annotations

from connectors.registry import registry
from kernel.connector import Registry
from kernel.settings import Section


def settings_classes() -> list[type[Section]]:
    """Each built-in connector's own settings class, once."""
    found = load_all()
    crms = [cls.settings_class for cls in found.crms.values()]
    targets = [cls.settings_class for cls in found.targets.values()]
    return list(dict.fromkeys(cls for cls in crms + targets if cls is not None))


def load_all() -> Registry:
    """Import every built-in connector module so each registers itself."""
    import connectors.asana  # noqa: F401
    import connectors.hubspot  # noqa: F401
    import connectors.hubspot_ticket  # noqa: F401
    import connectors.jira  # noqa: F401
    import connectors.salesforce  # noqa: F401
    import connectors.salesforce_case  # noqa: F401
    import connectors.webhook  # noqa: F401

    return registry
