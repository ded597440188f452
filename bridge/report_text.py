"""`fullkit report` as a terminal table or CSV (JSON is `bridge.report.report_json`)."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter

from bridge.report import Figures, Group, Report

WIDTH = 100
KEY_WIDTH = 24
TOP_MISSING = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = (
    "journeys",
    "1st-pass",
    "returns",
    "accepted in",
    "p90",
    "with sales",
    "p90",
    "failed",
)


def duration_text(seconds: float | None) -> str:
    """Two units at most (`3d 4h`, `2h 05m`, `45s`, `3d`): a table compares, not audits."""
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def percent_text(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def one_line(text: str, width: int) -> str:
    """Control characters (a newline, a terminal escape) out; cut to width with an ellipsis."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def table(report: Report) -> list[str]:
    f = report.overall
    lines = [_title(report), _outcomes(f), _returns(f), ""]
    rows = [(one_line(key, KEY_WIDTH), g.figures) for key, g in _keyed(report.groups)]
    rows.append(("(all)", f))
    lines += _aligned([(report.by or "", *COLUMNS)] + [(k, *_cells(v)) for k, v in rows])
    lines += [
        "accepted in: first attempt to acceptance; with sales: time back with sales after",
        "push-backs; both median, then p90, over accepted journeys.",
    ]
    if f.missing:
        lines += ["", "Top missing items (by returned attempts):"]
        lines += _missing_lines(f)
    return lines


def _keyed(groups: tuple[Group, ...]) -> list[tuple[str, Group]]:
    """A sales owner by name, as people know them; by email where two share a name (the
    terminal has no room for both; `--format json` gives both, csv the email)."""
    names = Counter(g.name for g in groups if g.name)
    return [(g.name if g.name and names[g.name] == 1 else g.key, g) for g in groups]


def _title(report: Report) -> str:
    filters = report.filters
    scope = [filters.crm or "all CRMs", f"kit {filters.kit}" if filters.kit else "all kits"]
    if filters.since is not None:
        scope.append(f"since {filters.since:%Y-%m-%d %H:%M} UTC")
    return f"Hand-offs ({', '.join(scope)}): {report.overall.journeys} journey(s)"


def _outcomes(f: Figures) -> str:
    o = f.outcomes
    return (
        f"  accepted {o['accepted']}, back with sales {o['with_sales']}, "
        f"in progress {o['in_progress']}, failed {o['failed']} (fullkit replay resumes them)"
    )


def _returns(f: Figures) -> str:
    if not f.journeys:
        return "  no hand-off matches"
    spread = ", ".join(f"{returns}: {count}" for returns, count in f.returns.items())
    return (
        f"  returned attempts {f.returned_attempts} ({f.returns_per_journey:.2f} per journey);"
        f" journeys by number of returns: {spread}"
    )


def _cells(f: Figures) -> tuple[str, ...]:
    mean = f.returns_per_journey
    return (
        str(f.journeys),
        percent_text(f.first_pass_yield),
        "-" if mean is None else f"{mean:.2f}",
        duration_text(f.to_acceptance.median),
        duration_text(f.to_acceptance.p90),
        duration_text(f.with_sales.median),
        duration_text(f.with_sales.p90),
        str(f.outcomes["failed"]),
    )


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _missing_lines(f: Figures) -> list[str]:
    shown = f.missing[:TOP_MISSING]
    id_width = min(24, max(len(item.id) for item in shown))
    lines = [f"  {'attempts':>8}  {'deals':>5}  {'requirement'.ljust(id_width)}  message"]
    room = WIDTH - (2 + 8 + 2 + 5 + 2 + id_width + 2)
    for item in shown:
        lines.append(
            f"  {item.attempts:>8}  {item.deals:>5}  "
            f"{one_line(item.id, id_width).ljust(id_width)}  {one_line(item.message, room)}"
        )
    if len(f.missing) > len(shown):
        lines.append(f"  … and {len(f.missing) - len(shown)} more (--format json lists all)")
    return lines


CSV_HEADER = (
    "group_by",
    "group",
    "journeys",
    "accepted",
    "with_sales",
    "in_progress",
    "failed",
    "first_pass_judged",
    "first_pass_accepted",
    "first_pass_yield",
    "returned_attempts",
    "returns_per_journey",
    "time_to_acceptance_median_s",
    "time_to_acceptance_p90_s",
    "time_with_sales_median_s",
    "time_with_sales_p90_s",
    "top_missing",
)


def csv_text(report: Report) -> str:
    """One header row, then a row per group and one for all (group `(all)`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    by = report.by or "all"
    for group in report.groups:
        writer.writerow(_csv_row(by, group.key, group.figures))
    writer.writerow(_csv_row(by, "(all)", report.overall))
    return out.getvalue()


def _csv_row(by: str, key: str, f: Figures) -> list[str]:
    missing = "; ".join(f"{item.id} ({item.attempts})" for item in f.missing)
    return [
        by,
        _cell(key),
        str(f.journeys),
        *(str(f.outcomes[name]) for name in ("accepted", "with_sales", "in_progress", "failed")),
        str(f.judged),
        str(f.first_pass),
        _number(f.first_pass_yield, 4),
        str(f.returned_attempts),
        _number(f.returns_per_journey, 4),
        _number(f.to_acceptance.median, 1),
        _number(f.to_acceptance.p90, 1),
        _number(f.with_sales.median, 1),
        _number(f.with_sales.p90, 1),
        _cell(missing),
    ]


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else str(round(value, digits))


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text
