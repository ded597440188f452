"""Kit evaluator figures: rules compile time, evaluations per second, CEL semantics.

    python -m bench.bench_evaluator

celpy (cel-python) is what Fullkit uses. The Rust `cel` package (common-expression-language,
a dev extra) is measured for the record: faster, but it raises KeyError where CEL's
commutative error rules say `exists` must still find a later match.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.evaluator import activation, compile_expression, evaluate, field_present, select_kit
from bridge.packet import Packet
from bridge.rules import Kit, load_rules

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "kit_rules"
DEAL = REPO / "tests" / "fixtures" / "deals" / "complete.json"
TODAY = dt.date(2026, 11, 27)

# (what the SPEC promises, expression, packet maps, expected value)
SEMANTICS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("number > int literal", "deal.amount > 0", {"deal": {"amount": 1500.0}}, True),
    ("number == int literal", "deal.amount == 1500", {"deal": {"amount": 1500.0}}, True),
    ("date >= today", "deal.kickoff_date >= today", {"deal": {"kickoff_date": TODAY}}, True),
    ("absent field: has() false", "has(deal.plan)", {"deal": {}}, False),
    (
        "exists past a contact without role",
        'contacts.exists(c, c.role == "billing")',
        {"contacts": [{"email": "a@x.example"}, {"role": "billing"}]},
        True,
    ),
    (
        "all: a false beats an error",
        'contacts.all(c, c.role == "billing")',
        {"contacts": [{"email": "a@x.example"}, {"role": "champion"}]},
        False,
    ),
    ("|| absorbs an error", 'deal.sso == "okta" || true', {"deal": {}}, True),
    ("&& absorbs an error", '!(deal.sso == "okta" && false)', {"deal": {}}, True),
]


def timed(fn: Callable[[], Any], seconds: float = 1.0) -> float:
    """Calls per second of fn, run for about `seconds`."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def median_ms(fn: Callable[[], Any], runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def sample_packet(maps: dict[str, Any]) -> Packet:
    return Packet(crm="hubspot", deal_id="bench", **maps)


# --- celpy ---------------------------------------------------------------------------


def celpy_value(expr: str, packet: Packet) -> Any:
    try:
        return bool(compile_expression(expr).run(activation(packet, TODAY)))
    except Exception as exc:  # the figure is which error, not a crash
        return f"error: {type(exc).__name__}"


# --- Rust cel ------------------------------------------------------------------------


def rust_context(packet: Packet) -> dict[str, Any]:
    """The same variables as plain Python values, for the Rust package."""

    def plain(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, dt.date):
            return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {
        "crm": packet.crm,
        "deal": plain(packet.deal),
        "company": plain(packet.company),
        "contacts": plain(packet.contacts),
        "line_items": plain(packet.line_items),
        "attachments": plain(packet.attachments),
        "today": plain(TODAY),
    }


def rust_value(cel: Any, expr: str, packet: Packet) -> Any:
    try:
        return bool(cel.compile(expr).execute(rust_context(packet)))
    except Exception as exc:  # the figure is which error, not a crash
        return f"error: {type(exc).__name__}"


def rust_evaluator(cel: Any, kit: Kit) -> Callable[[Packet], list[str]]:
    """The kit on the Rust package: compiled once, same field shorthand."""
    programs = {
        req.id: (
            cel.compile(req.check.source) if req.check else None,
            cel.compile(req.when.source) if req.when else None,
        )
        for req in kit.requirements
    }

    def truth(program: Any, context: dict[str, Any]) -> bool:
        try:
            return program.execute(context) is True
        except Exception:  # an error is "not true", as with celpy
            return False

    def run(packet: Packet) -> list[str]:
        context = rust_context(packet)
        failing = []
        for req in kit.requirements:
            check, when = programs[req.id]
            if when is not None and not truth(when, context):
                continue
            ok = field_present(packet, req.field) if req.field else truth(check, context)
            if not ok:
                failing.append(req.id)
        return failing

    return run


def rust_cel() -> Any:
    try:
        import cel
    except ImportError:
        return None
    return cel


# --- report --------------------------------------------------------------------------


def main() -> None:
    rules = load_rules(RULES)
    packet = rules.packet_from_json(json.loads(DEAL.read_text()))
    kit = select_kit(rules, packet, TODAY)
    assert kit is not None, "the default kit must apply to the fixture deal"
    sources = [e.source for r in kit.requirements for e in (r.check, r.when) if e]
    sources += [kit.applies_when.source] if kit.applies_when else []

    print(f"rules folder:   {RULES.relative_to(REPO)} ({len(rules.kits)} kit, {len(sources)} CEL)")
    print(f"load+validate:  {median_ms(lambda: load_rules(RULES)):.1f} ms (median of 7)")
    compile_ms = median_ms(lambda: [compile_expression(s) for s in sources])
    print(f"CEL compile:    {compile_ms:.2f} ms for {len(sources)} expressions")
    rate = timed(lambda: evaluate(kit, packet, TODAY))
    print(f"celpy:          {rate:,.0f} kit evaluations/s ({len(kit.requirements)} requirements)")
    cel = rust_cel()
    if cel is None:
        print("rust cel:       not installed (pip install common-expression-language)")
    else:
        run = rust_evaluator(cel, kit)
        print(f"rust cel:       {timed(lambda: run(packet)):,.0f} kit evaluations/s")

    print("\nSPEC semantics          celpy (Fullkit)   rust cel")
    for name, expr, maps, expected in SEMANTICS:
        sample = sample_packet(maps)
        row = [celpy_value(expr, sample)]
        row.append(rust_value(cel, expr, sample) if cel is not None else "n/a")
        marks = ["ok" if got == expected else f"WRONG ({got})" for got in row]
        print(f"  {name:<36} {marks[0]:<17} {marks[1]}")


if __name__ == "__main__":
    main()
