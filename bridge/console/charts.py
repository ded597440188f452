"""Chart geometry for server-rendered inline SVG: no script, no CDN, works offline.

Coordinates are in the SVG's viewBox; the template sets `width="100%"` so a chart scales
to a laptop or a phone. Numbers stay in tables next to each chart as well: a chart shows
the shape, the table is what a screen reader and a copy-paste get.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

WIDTH = 640
COLUMN_HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 24, 36
ROW = 40  # one horizontal bar with its label above it
MAX_AXIS_LABELS = 12
MAX_VALUE_LABELS = 16
LABEL_CHARS = 64


@dataclass(frozen=True)
class Point:
    label: str  # under the column, short
    parts: tuple[float, ...]  # stacked from the bottom; () when there is nothing to measure
    text: str  # the value as people read it, above the column
    title: str  # the whole story of the point, for hover and screen readers


@dataclass(frozen=True)
class Segment:
    y: float
    height: float
    fill: str


@dataclass(frozen=True)
class Column:
    x: float
    width: float
    center: float
    top: float  # where the column ends, for the text above it
    segments: tuple[Segment, ...]
    label: str | None  # None where labels would collide
    text: str | None
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class ColumnChart:
    width: int
    height: int
    left: int
    right: int
    baseline: float
    columns: tuple[Column, ...]
    ticks: tuple[Tick, ...]


def column_chart(
    points: list[Point], top: float, tick_text: Callable[[float], str], fills: tuple[str, ...]
) -> ColumnChart:
    """Columns of stacked parts scaled to `top`, the i-th part in `fills[i]`; ticks at 0,
    half and `top`."""
    plot_height = COLUMN_HEIGHT - TOP - BOTTOM
    baseline = float(TOP + plot_height)
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(points))
    bar = min(48.0, slot * 0.7)
    every = math.ceil(len(points) / MAX_AXIS_LABELS) or 1
    texts = len(points) <= MAX_VALUE_LABELS
    columns = []
    for i, point in enumerate(points):
        x = LEFT + i * slot + (slot - bar) / 2
        segments, y = [], baseline
        for part, fill in zip(point.parts, fills, strict=False):
            height = _scaled(part, top, plot_height)
            y -= height
            if height > 0:
                segments.append(Segment(round(y, 1), round(height, 1), fill))
        columns.append(
            Column(
                x=round(x, 1),
                width=round(bar, 1),
                center=round(x + bar / 2, 1),
                top=round(y, 1),
                segments=tuple(segments),
                label=point.label if i % every == 0 else None,
                text=point.text if texts else None,
                title=point.title,
            )
        )
    ticks = tuple(
        Tick(round(baseline - share * plot_height, 1), tick_text(top * share))
        for share in (0.0, 0.5, 1.0)
    )
    return ColumnChart(WIDTH, COLUMN_HEIGHT, LEFT, WIDTH - RIGHT, baseline, tuple(columns), ticks)


def _scaled(value: float, top: float, room: float) -> float:
    if top <= 0:
        return 0.0
    return max(0.0, min(1.0, value / top)) * room


@dataclass(frozen=True)
class Row:
    label: str  # cut to fit; the title holds it whole
    title: str
    text: str
    label_y: int
    bar_y: int
    width: float
    text_x: float


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    left: int
    rows: tuple[Row, ...]


def bar_chart(items: list[tuple[str, float, str]]) -> BarChart:
    """Horizontal bars, each under its label: (label, value, value as text)."""
    longest = max((value for _, value, _ in items), default=0.0)
    room = WIDTH - 8 - 130  # the count and deals go after the bar
    rows = []
    for i, (label, value, text) in enumerate(items):
        width = room * value / longest if longest > 0 else 0.0
        rows.append(
            Row(
                label=label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…",
                title=f"{label}: {text}",
                text=text,
                label_y=i * ROW + 16,
                bar_y=i * ROW + 22,
                width=round(width, 1),
                text_x=round(8 + width + 6, 1),
            )
        )
    return BarChart(WIDTH, max(ROW, len(rows) * ROW + 4), 8, tuple(rows))
