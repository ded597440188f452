"""Kit evaluator figures: rules load time, kit evaluations per second per core, time for a
deal with a thousand contacts or line items, and the CEL semantics the SPEC promises.

    python -m bench.bench_evaluator

Rates and times are CPU time of this one process (one core), so other work on a shared
machine does not distort them much. For the record, celpy (cel-python 0.5, the evaluator before
cel-expr-python) measured on the development machine: 550 evaluations/s of the default
kit; `contacts.exists(c, c.role == "billing" ...)` over 20 contacts without a role took
90 ms, over 25 took 3.7 s and 850 MB, over 100 ran out of a 2.5 GB memory limit.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import Figure
from bridge.evaluator import evaluate, select_kit
from bridge.expressions import activation, compile_expression
from bridge.rules import load_rules
from kernel.packet import Packet

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "kit_rules"
DEAL = REPO / "tests" / "fixtures" / "deals" / "complete.json"
TODAY = dt.date(2026, 11, 27)
MANY = 1000

# (what the SPEC promises, expression, packet maps, expected value)
SEMANTICS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("number > int literal", "deal.amount > 0", {"deal": {"amount": 1500.0}}, True),
    ("number == int literal", "deal.amount == 1500", {"deal": {"amount": 1500.0}}, True),
    ("date >= today", "deal.kickoff_date >= today", {"deal": {"kickoff_date": TODAY}}, True),
    ("absent field: has() false", "has(deal.plan)", {"deal": {}}, False),
    ("absent field: check fails", 'deal.plan == "pro"', {"deal": {}}, False),
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


def per_cpu_second(fn: Callable[[], Any], seconds: float = 1.0) -> float:
    """Calls of fn per CPU second of this process, run for about `seconds` of CPU."""
    count, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def median_ms(fn: Callable[[], Any], runs: int = 7) -> float:
    """Median CPU milliseconds of fn in this process."""
    samples = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        samples.append((time.process_time() - start) * 1000)
    return statistics.median(samples)


def roleless_contacts(count: int) -> list[dict[str, Any]]:
    return [{"email": f"person{i}@acme.example"} for i in range(count)]


def truth(expr: str, maps: dict[str, Any]) -> bool:
    packet = Packet(crm="hubspot", deal_id="bench", **maps)
    return compile_expression(expr).is_true(activation(packet, TODAY))


def main() -> list[Figure]:
    rules = load_rules(RULES)
    packet = rules.packet_from_json(json.loads(DEAL.read_text()))
    kit = select_kit(rules, packet, TODAY)
    assert kit is not None, "the default kit must apply to the fixture deal"
    sources = [e.source for r in kit.requirements for e in (r.check, r.when) if e]
    sources += [kit.applies_when.source] if kit.applies_when else []

    print(f"rules folder:   {RULES.relative_to(REPO)} ({len(rules.kits)} kit, {len(sources)} CEL)")
    print(f"load+validate:  {median_ms(lambda: load_rules(RULES)):.1f} ms (median of 7, CPU)")
    compile_ms = median_ms(lambda: [compile_expression(s) for s in sources])
    print(f"CEL compile:    {compile_ms:.2f} ms for {len(sources)} expressions")
    rate = per_cpu_second(lambda: (select_kit(rules, packet, TODAY), evaluate(kit, packet, TODAY)))
    print(
        f"cel-expr-python: {rate:,.0f} kit evaluations/s per core "
        f"(select + {len(kit.requirements)} requirements, {len(sources)} CEL)"
    )

    contacts = Packet(**{**packet.__dict__, "contacts": roleless_contacts(MANY)})
    findings = [f.requirement_id for f in evaluate(kit, contacts, TODAY)]
    contacts_ms = median_ms(lambda: evaluate(kit, contacts, TODAY))
    print(f"{MANY} contacts without a role: {contacts_ms:.2f} ms per kit (missing: {findings})")
    items = Packet(**{**packet.__dict__, "line_items": packet.line_items[:1] * MANY})
    findings = [f.requirement_id for f in evaluate(kit, items, TODAY)]
    items_ms = median_ms(lambda: evaluate(kit, items, TODAY))
    print(f"{MANY} line items:              {items_ms:.2f} ms per kit (missing: {findings})")

    print("\nSPEC semantics                        cel-expr-python")
    for name, expr, maps, expected in SEMANTICS:
        got = truth(expr, maps)
        print(f"  {name:<36} {'ok' if got == expected else f'WRONG ({got})'}")
    return [Figure("kit evaluations per core (CPU time)", rate, "/s")]


if __name__ == "__main__":
    main()
