"""The API calls a sandbox received, as tests and benchmarks count them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CallRecord:
    method: str
    path: str
    status: int
    at: float


def matching(
    calls: Iterable[CallRecord], method: str | None = None, path_prefix: str | None = None
) -> list[CallRecord]:
    """The calls with this HTTP method (any case) under this path prefix."""
    return [
        c
        for c in calls
        if (method is None or c.method == method.upper())
        and (path_prefix is None or c.path.startswith(path_prefix))
    ]
