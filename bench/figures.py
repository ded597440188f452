"""Key figures the benchmarks return, and the summary table `make bench` ends with."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# How a measured value is held against its target.
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    # (comparison, bound) from the targets; None when the figure has no target.
    target: tuple[str, float] | None = None
    # Set when the value is a partial result (a run stopped at its cap), to say so.
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        compare, bound = self.target
        return _COMPARE[compare](self.value, bound)

    def measured(self) -> str:
        shown = f"{self.value:,.0f}" if abs(self.value) >= 100 else f"{self.value:.3g}"
        return " ".join(part for part in (shown, self.unit, self.note) if part)

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        compare, bound = self.target
        return f"{compare} {bound:g} {self.unit}".rstrip()


def table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "measured", "target", "met")]
    for figure in figures:
        met = {True: "yes", False: "NO", None: "-"}[figure.met]
        rows.append((figure.name, figure.measured(), figure.target_text(), met))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
