"""Injected faults of the loopback fakes: answer the next n calls under a path with an error."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Fault:
    remaining: int
    status: int
    path_prefix: str | None  # None: any path
    retry_after: float | None = None  # seconds, sent as Retry-After
    policy: str | None = None  # HubSpot: a 429's policyName, e.g. DAILY


def take_fault(faults: list[Fault], path: str) -> Fault | None:
    """The first fault still pending for `path`, one use of it spent; the caller holds the
    sandbox's lock."""
    for fault in faults:
        if fault.remaining > 0 and (
            fault.path_prefix is None or path.startswith(fault.path_prefix)
        ):
            fault.remaining -= 1
            return fault
    return None
