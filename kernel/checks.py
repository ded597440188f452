"""What a connector's set-up check sees of the kits, and what it reports.

The checks (`fullkit hubspot setup`, `fullkit salesforce check`) live in their connectors,
which may not import the rules; these protocols are the part of a kit they read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class OpsLike(Protocol):
    @property
    def target(self) -> str: ...
    @property
    def owners(self) -> tuple[str, ...]: ...
    @property
    def options(self) -> dict[str, Any]: ...


class KitLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def ops(self) -> OpsLike: ...


@dataclass
class CheckResult:
    """A line for what is fine, a problem for what is not."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
