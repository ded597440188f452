"""The kit evaluator: CEL over the canonical packet, whatever the CRM.

We use cel-python (celpy) because it implements CEL's commutative error rules for
`exists`, `all`, `&&` and `||`: `contacts.exists(c, c.role == "billing")` is true when a
later contact is a billing contact even if an earlier one has no `role`. The Rust
`cel` package raises KeyError there (see bench/bench_evaluator.py).

Expressions are compiled once, when the rules folder is loaded (`compile_expression`);
`check_expression` is the load-time type and field check, since celpy has no checker.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParser
from celpy.evaluation import CELEvalError, CELFunction, CELUnsupportedError, base_functions

from bridge.packet import Finding, Packet

if TYPE_CHECKING:
    from bridge.rules import Kit, Requirement, Rules

# Map names the kit expressions see, and the element kind of each list variable.
VARIABLES = ("crm", "deal", "company", "contacts", "line_items", "attachments", "today")
MAP_VARIABLES = {"deal": "deal", "company": "company"}
LIST_VARIABLES = {"contacts": "contact", "line_items": "line_item", "attachments": "attachment"}
MACROS = frozenset({"exists", "all", "exists_one", "filter", "map"})
# Type names are identifiers in CEL (`type(x) == string`), not packet variables.
_TYPE_NAMES = frozenset(
    {"bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type"}
)
_KNOWN_FUNCTIONS = frozenset(base_functions) | MACROS | {"has", "dyn"}

# celpy logs every evaluation step at DEBUG; a verbose root logger would drown in it.
logging.getLogger("celpy").setLevel(logging.WARNING)

# Errors that mean "this expression cannot be evaluated on this packet", never a crash.
_EVAL_ERRORS = (
    CELEvalError,
    CELUnsupportedError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    ZeroDivisionError,
    OverflowError,
    RecursionError,
)

_NUMBERS = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)


def _numeric(op: Callable[[Any, Any], bool], fallback: CELFunction) -> CELFunction:
    """Compare int, uint and double as numbers (CEL's cross-type numeric comparison).

    celpy only does this for some operators: `1500.0 > 0` works but `1500.0 == 1500`
    is "no such overload", and kits write integer literals against `number` fields.
    """

    def compare(left: Any, right: Any) -> Any:
        if _is_number(left) and _is_number(right):
            return celtypes.BoolType(op(float(left), float(right)))
        return fallback(left, right)

    return compare


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, celtypes.BoolType)


_FUNCTIONS: dict[str, CELFunction] = {
    name: _numeric(op, base_functions[name])
    for name, op in {
        "_==_": operator.eq,
        "_!=_": operator.ne,
        "_<_": operator.lt,
        "_<=_": operator.le,
        "_>_": operator.gt,
        "_>=_": operator.ge,
    }.items()
}

_ENV = celpy.Environment()


class CelSyntaxError(ValueError):
    """A CEL expression that does not parse; the message is one line."""


@dataclass(frozen=True)
class Expression:
    """One CEL expression, parsed and ready to run many times."""

    source: str
    ast: lark.Tree = field(repr=False, compare=False)
    runner: celpy.Runner = field(repr=False, compare=False)

    def run(self, activation: dict[str, Any]) -> Any:
        """The CEL value; raises one of _EVAL_ERRORS when it cannot be evaluated."""
        result = self.runner.evaluate(activation)
        if isinstance(result, CELEvalError):
            raise result
        return result

    def is_true(self, activation: dict[str, Any]) -> bool:
        """True only for a CEL `true`; errors and non-bool results are false."""
        try:
            result = self.run(activation)
        except _EVAL_ERRORS:
            return False
        return isinstance(result, celtypes.BoolType) and bool(result)


def compile_expression(source: str) -> Expression:
    """Parse once; raise CelSyntaxError with the column of the problem."""
    try:
        ast = _ENV.compile(source)
    except celpy.CELParseError as exc:
        raise CelSyntaxError(_syntax_message(source, exc)) from None
    return Expression(source, ast, _ENV.program(ast, functions=_FUNCTIONS))


def _syntax_message(source: str, exc: celpy.CELParseError) -> str:
    """One line: where, and what was unexpected (celpy's own message spans lines)."""
    line, column, what = exc.line or 1, exc.column or 1, "unexpected input"
    try:  # re-parse with lark for the details celpy's exception drops
        if CELParser.CEL_PARSER is not None:
            CELParser.CEL_PARSER.parse(source)
    except lark.exceptions.UnexpectedToken as detail:
        line, column, what = detail.line, detail.column, f"unexpected {str(detail.token)!r}"
        if detail.token.type == "$END":
            lines = source.splitlines() or [""]
            line, column, what = len(lines), len(lines[-1]) + 1, "unexpected end of expression"
    except lark.exceptions.UnexpectedCharacters as detail:
        line, column, what = detail.line, detail.column, f"unexpected character {detail.char!r}"
    except lark.exceptions.LarkError:
        pass
    where = f"line {line} column {column}" if "\n" in source.strip() else f"column {column}"
    return f"CEL syntax error at {where}: {what}"


# --- packet -> CEL -------------------------------------------------------------------


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def to_cel(value: Any) -> Any:
    """A canonical packet value as a CEL value (numbers are doubles, dates timestamps)."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return celtypes.TimestampType(aware)
    if isinstance(value, dt.date):
        return celtypes.TimestampType(_midnight(value))
    if isinstance(value, list | tuple):
        return celtypes.ListType([to_cel(item) for item in value if item is not None])
    if isinstance(value, dict):
        return _cel_map(value)
    return celtypes.StringType(str(value))


def _cel_map(values: dict[str, Any]) -> celtypes.MapType:
    # An empty CRM value is an absent field, so `has(deal.x)` is false for it.
    return celtypes.MapType(
        {celtypes.StringType(k): to_cel(v) for k, v in values.items() if not _is_empty(v)}
    )


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, list | tuple | dict) and len(value) == 0


def activation(packet: Packet, today: dt.date) -> dict[str, Any]:
    """The variables every kit expression sees."""
    return {
        "crm": celtypes.StringType(packet.crm),
        "deal": _cel_map(packet.deal),
        "company": _cel_map(packet.company),
        "contacts": celtypes.ListType([_cel_map(c) for c in packet.contacts]),
        "line_items": celtypes.ListType([_cel_map(li) for li in packet.line_items]),
        "attachments": celtypes.ListType([_cel_map(a) for a in packet.attachments]),
        "today": celtypes.TimestampType(_midnight(today)),
    }


# --- kits ----------------------------------------------------------------------------


def select_kit(rules_or_kits: Rules | Iterable[Kit], packet: Packet, today: dt.date) -> Kit | None:
    """The first kit (files in name order) for the packet's CRM whose applies_when is true."""
    kits = rules_or_kits if isinstance(rules_or_kits, Iterable) else rules_or_kits.kits
    variables: dict[str, Any] | None = None
    for kit in kits:
        if kit.crm is not None and kit.crm != packet.crm:
            continue
        if kit.applies_when is None:
            return kit
        variables = variables or activation(packet, today)
        if kit.applies_when.is_true(variables):
            return kit
    return None


def evaluate(kit: Kit, packet: Packet, today: dt.date) -> list[Finding]:
    """Every failing requirement of the kit, in kit order; empty means the kit is complete."""
    variables = activation(packet, today)
    return [
        Finding(req.id, req.field or "check", req.message)
        for req in kit.requirements
        if _applies(req, variables) and not _satisfied(req, packet, variables)
    ]


def applicable(kit: Kit, packet: Packet, today: dt.date) -> list[Requirement]:
    """The requirements whose `when` holds for this deal (all of them when none has one)."""
    variables = activation(packet, today)
    return [req for req in kit.requirements if _applies(req, variables)]


def _applies(req: Requirement, variables: dict[str, Any]) -> bool:
    # A `when` that cannot be evaluated is false: the requirement is skipped.
    return req.when is None or req.when.is_true(variables)


def _satisfied(req: Requirement, packet: Packet, variables: dict[str, Any]) -> bool:
    if req.field is not None:
        return field_present(packet, req.field)
    # A `check` that cannot be evaluated (e.g. an absent field) fails with its message.
    return req.check is not None and req.check.is_true(variables)


FIELD_PATH = re.compile(r"^(?:(deal|company)\.([A-Za-z_]\w*)|(contacts|line_items|attachments))$")


def field_present(packet: Packet, path: str) -> bool:
    """The `field:` shorthand: `deal.x` / `company.x` present and not empty, or a list
    variable (`contacts`, `line_items`, `attachments`) with at least one element."""
    match = FIELD_PATH.match(path)
    if match is None:
        return False
    obj, name, collection = match.groups()
    if collection:
        return len(getattr(packet, collection)) > 0
    return not _is_empty(getattr(packet, obj).get(name))


# --- load-time checks ----------------------------------------------------------------

# Sample values of each mapping field type, for the load-time type check.
_SAMPLES: dict[str, Any] = {
    "string": "sample",
    "number": 1.0,
    "date": dt.date(2026, 1, 5),
    "datetime": dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.UTC),
    "bool": True,
    "list": ["sample"],
}


@dataclass(frozen=True)
class Schema:
    """Canonical fields and their types, per kind: deal, company, contact, line_item,
    attachment. Built by the rules loader from a mapping; nothing CRM-specific here."""

    fields: dict[str, dict[str, str]]

    def known(self, kind: str) -> dict[str, str]:
        return self.fields.get(kind, {})

    def sample_packet(self) -> Packet:
        def sample(kind: str) -> dict[str, Any]:
            # A field of an unknown type is left out, so uses of it are not type checked.
            known = self.known(kind).items()
            return {name: _SAMPLES[type_] for name, type_ in known if type_ in _SAMPLES}

        return Packet(
            crm="sample",
            deal_id="sample",
            deal=sample("deal"),
            company=sample("company"),
            contacts=[sample("contact")],
            line_items=[sample("line_item")],
            attachments=[sample("attachment")],
        )


def check_expression(expr: Expression, schema: Schema) -> list[str]:
    """Unknown variables, functions and fields, and CEL type errors, as messages.

    celpy has no static checker, so types are checked by running the expression (and
    each operand of `&&`, `||` and `?:`, which a short circuit could hide) on a sample
    packet holding every mapped field with a value of its type.
    """
    problems = list(_name_problems(expr.ast, schema))
    if problems:
        return problems
    return _type_problems(expr, schema)


def _type_problems(expr: Expression, schema: Schema) -> list[str]:
    sample = schema.sample_packet()
    variables = activation(sample, dt.date(2026, 1, 5))
    try:
        result = expr.run(variables)
    except _EVAL_ERRORS as exc:
        message = _type_error(exc)
        return [message] if message else []
    if not isinstance(result, celtypes.BoolType):
        return [f"CEL type error: must be a bool, got {_cel_type(type(result))}"]
    for branch, bound in _branches(expr.ast, variables):
        message = _branch_type_error(branch, {**variables, **bound})
        if message:
            return [message]
    return []


def _branch_type_error(branch: lark.Tree, variables: dict[str, Any]) -> str | None:
    try:
        result = _ENV.program(branch, functions=_FUNCTIONS).evaluate(variables)
    except _EVAL_ERRORS as exc:
        return _type_error(exc)
    return _type_error(result) if isinstance(result, CELEvalError) else None


def _branches(ast: lark.Tree, variables: dict[str, Any]) -> Iterator[tuple[lark.Tree, dict]]:
    """Operands a short circuit may skip, with comprehension variables bound to a sample."""
    for node, scope in _walk_scoped(ast, {}):
        if node.data in ("conditionalor", "conditionaland") and len(node.children) == 2:
            operands = node.children
        elif node.data == "expr" and len(node.children) == 3:
            operands = node.children[1:]
        else:
            continue
        bound = {name: _sample_element(variables, kind) for name, kind in scope.items()}
        yield from ((child, bound) for child in operands if isinstance(child, lark.Tree))


def _sample_element(variables: dict[str, Any], kind: str | None) -> Any:
    for name, element_kind in LIST_VARIABLES.items():
        if element_kind == kind and variables[name]:
            return variables[name][0]
    return celtypes.NullType()


_OPERATORS = {
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "unary_neg": "-",
    "unary_not": "!",
}


def _type_error(exc: BaseException) -> str | None:
    """A friendly message when the failure is a type error; None for data-dependent ones."""
    cause = exc.args[1] if isinstance(exc, CELEvalError) and len(exc.args) > 1 else type(exc)
    if not (isinstance(cause, type) and issubclass(cause, TypeError)):
        return None
    text = str(exc.args[0]) if exc.args else str(exc)
    types = ", ".join(_cel_type_name(name) for name in re.findall(r"celtypes\.(\w+)'", text))
    rule = re.search(r"Token\('RULE', '(\w+)'\)", text)
    symbol = _OPERATORS.get(rule.group(1)) if rule else ("?:" if "_?_:_" in text else None)
    if symbol:
        return f"CEL type error: no operator {symbol} for ({types})"
    if "field selection" in text:
        return f"CEL type error: a {types or 'value'} has no fields"
    if "no such overload" in text:
        return "CEL type error: a function is applied to arguments of the wrong type"
    return f"CEL type error: {text.splitlines()[0][:120]}"


def _cel_type_name(class_name: str) -> str:
    return {
        "BoolType": "bool",
        "IntType": "int",
        "UintType": "uint",
        "DoubleType": "double",
        "StringType": "string",
        "BytesType": "bytes",
        "ListType": "list",
        "MapType": "map",
        "TimestampType": "timestamp",
        "DurationType": "duration",
        "NullType": "null",
    }.get(class_name, class_name)


def _cel_type(cls: type) -> str:
    return _cel_type_name(cls.__name__)


# --- names ---------------------------------------------------------------------------


def _ident(node: Any) -> str | None:
    """`x` when node is the bare identifier member `x`."""
    if not (isinstance(node, lark.Tree) and node.data == "member" and len(node.children) == 1):
        return None
    primary = node.children[0]
    if not (isinstance(primary, lark.Tree) and primary.data == "primary"):
        return None
    inner = primary.children[0]
    if isinstance(inner, lark.Tree) and inner.data == "ident":
        return str(inner.children[0])
    return None


def _walk_scoped(
    node: lark.Tree, scope: dict[str, str | None]
) -> Iterator[tuple[lark.Tree, dict[str, str | None]]]:
    """Every subtree with the comprehension variables in scope there -> element kind."""
    yield node, scope
    if node.data == "member_dot_arg" and str(node.children[1]) in MACROS:
        target, _, args = (node.children + [None])[:3]
        exprs = args.children if isinstance(args, lark.Tree) else []
        var = _ident(_unwrap(exprs[0])) if exprs else None
        if var is not None and isinstance(target, lark.Tree):
            yield from _walk_scoped(target, scope)
            inner = {**scope, var: _element_kind(target, scope)}
            for expr in exprs[1:]:
                yield from _walk_scoped(expr, inner)
            return
    for child in node.children:
        if isinstance(child, lark.Tree):
            yield from _walk_scoped(child, scope)


def _unwrap(expr: Any) -> Any:
    """The `member` node of an expression that is nothing but a member."""
    while isinstance(expr, lark.Tree) and expr.data != "member" and len(expr.children) == 1:
        expr = expr.children[0]
    return expr


def _element_kind(target: lark.Tree, scope: dict[str, str | None]) -> str | None:
    name = _ident(target)
    if name is None or name in scope:
        return None
    return LIST_VARIABLES.get(name)


def _object_kind(member: Any, scope: dict[str, str | None]) -> str | None:
    """The packet kind (deal, contact, ...) a field selection on `member` reads from."""
    name = _ident(member)
    if name is not None:
        return scope[name] if name in scope else MAP_VARIABLES.get(name)
    index = member.children[0] if isinstance(member, lark.Tree) and member.children else None
    if isinstance(index, lark.Tree) and index.data == "member_index":
        return _element_kind(index.children[0], scope)
    return None


def _name_problems(ast: lark.Tree, schema: Schema) -> Iterator[str]:
    seen: set[str] = set()
    for node, scope in _walk_scoped(ast, {}):
        message = _node_problem(node, scope, schema)
        if message and message not in seen:
            seen.add(message)
            yield message


def _node_problem(node: lark.Tree, scope: dict[str, str | None], schema: Schema) -> str | None:
    if node.data == "member_dot":
        kind = _object_kind(node.children[0], scope)
        name = str(node.children[1])
        known = schema.known(kind) if kind else None
        if known is not None and name not in known:
            return f"unknown {kind} field '{name}' (known: {', '.join(sorted(known)) or 'none'})"
    elif node.data == "ident":
        name = str(node.children[0])
        if name not in scope and name not in VARIABLES and name not in _TYPE_NAMES:
            return f"unknown variable '{name}' (known: {', '.join(VARIABLES)})"
    elif node.data in ("ident_arg", "member_dot_arg"):
        name = str(node.children[0 if node.data == "ident_arg" else 1])
        if name not in _KNOWN_FUNCTIONS:
            return f"unknown function '{name}'"
    return None
