"""Kit expressions: CEL over the canonical packet, whatever the CRM.

We use cel-expr-python, the binding of Google's C++ CEL implementation: it follows CEL's
commutative error rules for `exists`, `all`, `&&` and `||` (`contacts.exists(c, c.role ==
"billing")` is true when a later contact is a billing contact even if an earlier one has no
`role`), compares doubles with int literals at run time, and runs in time linear in the
packet (celpy, used before, took exponential time and memory on contacts without a role).

Expressions are parsed once when the rules folder is loaded (`compile_expression`) and run
on maps, so an absent field stays an error ("cannot be evaluated") rather than a default.
`check_expression` type-checks them against the mapping with CEL's own checker, declaring
the packet as protobuf messages built from the mapping's fields.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import structlog
from cel_expr_python import cel
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2, timestamp_pb2

from kernel.packet import Packet

log = structlog.get_logger("fullkit.evaluator")

# Map names the kit expressions see, and the element kind of each list variable.
VARIABLES = ("crm", "deal", "company", "contacts", "line_items", "attachments", "today")
MAP_VARIABLES = {"deal": "deal", "company": "company"}
LIST_VARIABLES = {"contacts": "contact", "line_items": "line_item", "attachments": "attachment"}
KINDS = (*MAP_VARIABLES.values(), *LIST_VARIABLES.values())

# At run time every packet variable is dyn: the packet is maps, and a field missing from a
# map must be an evaluation error (so `has()` is false and a check on it fails), not the
# zero value a typed message would give.
_RUNTIME = cel.NewEnv(
    variables={
        **{name: cel.Type.DYN for name in VARIABLES if name != "today"},
        "today": cel.Type.TIMESTAMP,
    }
)


class CelSyntaxError(ValueError):
    """A CEL expression that does not parse; the message is one line."""


@dataclass(frozen=True)
class Expression:
    """One CEL expression, parsed and ready to run many times."""

    source: str
    program: cel.Expression = field(repr=False, compare=False)

    def run(self, variables: dict[str, Any] | cel.Activation) -> Any:
        """The CEL value as Python; raises EvaluationError when it cannot be evaluated."""
        return self._eval(variables).value()

    def is_true(self, variables: dict[str, Any] | cel.Activation) -> bool:
        """True only for a CEL `true`; errors and non-bool results are false."""
        try:
            return self.holds(variables)
        except EvaluationError:
            return False

    def holds(self, variables: dict[str, Any] | cel.Activation) -> bool:
        """Like is_true, but a runtime limit raises LimitExceeded instead of being false."""
        try:
            result = self._eval(variables)
        except LimitExceeded:
            raise
        except EvaluationError:
            return False
        return result.type() == cel.Type.BOOL and result.value() is True

    def _eval(self, variables: dict[str, Any] | cel.Activation) -> cel.Value:
        try:
            if isinstance(variables, dict):
                result = self.program.eval(data=variables)
            else:
                result = self.program.eval(variables)
        except (RuntimeError, TypeError, ValueError) as exc:
            # The C++ runtime raises (rather than returning an error value) when it runs
            # out of its iteration budget; that is this expression failing, not the worker.
            log.warning("kit expression not evaluated", expression=self.source, error=str(exc))
            if "budget" in str(exc).lower():
                raise LimitExceeded(f"{self.source!r}: {exc}") from None
            raise EvaluationError(str(exc)) from None
        if result.type() == cel.Type.ERROR:
            raise EvaluationError(str(result.value()))
        return result


class EvaluationError(Exception):
    """An expression that cannot be evaluated on this packet (absent field, budget...)."""


class LimitExceeded(EvaluationError):
    """The runtime gave up (its iteration budget): the deal was not judged, not found wanting."""


# Said to sales in place of a plain "missing" when a check could not be run at all.
LIMIT_NOTE = "(Fullkit could not check this: the deal has more records than one check may visit)"


def compile_expression(source: str) -> Expression:
    """Parse once; raise CelSyntaxError with the column of the problem."""
    try:
        program = _RUNTIME.compile(source, disable_check=True)
    except RuntimeError as exc:
        raise CelSyntaxError(_syntax_message(source, str(exc))) from None
    return Expression(source, program)


# `ERROR: <input>:LINE:COLUMN: message`, one per problem, each followed by a source excerpt.
_ISSUE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class _Issue:
    line: int
    column: int
    text: str


def _issues(error: str) -> list[_Issue]:
    return [_Issue(int(m[1]), int(m[2]), m[3].strip()) for m in _ISSUE.finditer(error)]


_SYNTAX_DETAILS = (
    (re.compile(r"mismatched input '<EOF>'"), "unexpected end of expression"),
    (re.compile(r"(?:mismatched|extraneous) input ('.*?') expecting"), "unexpected {0}"),
    (re.compile(r"token recognition error at: ('.*')"), "unexpected character {0}"),
)


def _syntax_message(source: str, error: str) -> str:
    """One line: where, and what was unexpected (the parser's own message spans lines)."""
    issues = _issues(error)
    if not issues:
        return f"CEL syntax error: {error.splitlines()[0]}"
    first = issues[0]
    what = first.text.removeprefix("Syntax error: ")
    for pattern, template in _SYNTAX_DETAILS:
        match = pattern.search(what)
        if match:
            what = template.format(*match.groups())
            break
    where = f"column {first.column}"
    if "\n" in source.strip():
        where = f"line {first.line} {where}"
    return f"CEL syntax error at {where}: {what}"


# --- packet -> CEL -------------------------------------------------------------------


def _timestamp(value: dt.date) -> timestamp_pb2.Timestamp:
    """Dates at midnight UTC; naive datetimes are UTC. The C++ runtime takes only
    protobuf Timestamps inside maps and lists."""
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    else:
        moment = dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def to_cel(value: Any) -> Any:
    """A canonical packet value as a CEL value (numbers are doubles, dates timestamps)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.date):
        return _timestamp(value)
    if isinstance(value, list | tuple):
        return [to_cel(item) for item in value if item is not None]
    if isinstance(value, dict):
        return _cel_map(value)
    return str(value)


# What the runtime takes as it is: most packet values, so most skip to_cel.
_AS_IS = frozenset({str, float, bool})


def _cel_map(values: dict[str, Any]) -> dict[str, Any]:
    # An empty CRM value is an absent field, so `has(deal.x)` is false for it.
    return {
        str(k): v if type(v) in _AS_IS else to_cel(v) for k, v in values.items() if not _is_empty(v)
    }


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, list | tuple | dict) and len(value) == 0


def activation(packet: Packet, today: dt.date) -> dict[str, Any]:
    """The variables every kit expression sees."""
    return {
        "crm": packet.crm,
        "deal": _cel_map(packet.deal),
        "company": _cel_map(packet.company),
        "contacts": [_cel_map(c) for c in packet.contacts],
        "line_items": [_cel_map(li) for li in packet.line_items],
        "attachments": [_cel_map(a) for a in packet.attachments],
        "today": _timestamp(today),
    }


def bound(packet: Packet, today: dt.date) -> cel.Activation:
    # Bound once per packet, so a kit's expressions do not convert the maps each time.
    return _RUNTIME.Activation(activation(packet, today))


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

_FDP = descriptor_pb2.FieldDescriptorProto
_TIMESTAMP = "." + timestamp_pb2.Timestamp.DESCRIPTOR.full_name
# A field of an unknown type (only in an invalid folder) is dyn, so uses of it are not
# type checked but do not pile up more problems either.
_DYN = "." + struct_pb2.Value.DESCRIPTOR.full_name
_FIELD_TYPES: dict[str, tuple[int, str]] = {
    "string": (_FDP.TYPE_STRING, ""),
    "number": (_FDP.TYPE_DOUBLE, ""),
    "bool": (_FDP.TYPE_BOOL, ""),
    "list": (_FDP.TYPE_STRING, ""),
    "date": (_FDP.TYPE_MESSAGE, _TIMESTAMP),
    "datetime": (_FDP.TYPE_MESSAGE, _TIMESTAMP),
}
_PACKAGE = "fullkit.packet"


@dataclass(frozen=True)
class Schema:
    """Canonical fields and their types, per kind: deal, company, contact, line_item,
    attachment. Built by the rules loader from a mapping; nothing CRM-specific here."""

    fields: dict[str, dict[str, str]]

    def known(self, kind: str) -> dict[str, str]:
        return self.fields.get(kind, {})

    @cached_property
    def checker(self) -> cel.Env:
        """A CEL environment that declares the packet as one protobuf message per kind,
        so CEL's checker knows every field and its type."""
        return self._environment(numbers_dyn=False)

    @cached_property
    def lenient_checker(self) -> cel.Env:
        """The same with `number` fields as dyn: the types of what surrounds a comparison
        of a number with an int literal, which the strict checker cannot type."""
        return self._environment(numbers_dyn=True)

    def _environment(self, numbers_dyn: bool) -> cel.Env:
        pool = descriptor_pool.DescriptorPool()
        for dependency in (timestamp_pb2, struct_pb2):
            pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
        pool.Add(self._file(numbers_dyn))
        kind = {name: cel.Type(f"{_PACKAGE}.{name}") for name in KINDS}
        variables = {
            "crm": cel.Type.STRING,
            "today": cel.Type.TIMESTAMP,
            **{var: kind[k] for var, k in MAP_VARIABLES.items()},
            **{var: cel.Type.List(kind[k]) for var, k in LIST_VARIABLES.items()},
        }
        return cel.NewEnv(pool, variables=variables)

    def _file(self, numbers_dyn: bool) -> descriptor_pb2.FileDescriptorProto:
        file = descriptor_pb2.FileDescriptorProto(
            name="fullkit/packet.proto",
            package=_PACKAGE,
            syntax="proto3",
            dependency=[timestamp_pb2.DESCRIPTOR.name, struct_pb2.DESCRIPTOR.name],
        )
        for kind in KINDS:
            message = file.message_type.add(name=kind)
            for number, (name, type_) in enumerate(sorted(self.known(kind).items()), start=1):
                type_ = "?" if numbers_dyn and type_ == "number" else type_
                proto_type, type_name = _FIELD_TYPES.get(type_, (_FDP.TYPE_MESSAGE, _DYN))
                label = _FDP.LABEL_REPEATED if type_ == "list" else _FDP.LABEL_OPTIONAL
                spec = message.field.add(name=name, number=number, type=proto_type, label=label)
                if type_name:
                    spec.type_name = type_name
        return file


def check_expression(expr: Expression, schema: Schema) -> list[str]:
    """Unknown variables, functions and fields, CEL type errors and non-bool results, as
    one-line messages; empty when the expression is well typed for this mapping."""
    messages, cross_numeric = _check(expr.source, schema.checker, schema)
    if cross_numeric:
        # The strict checker gave up on each such comparison, and on whatever contains it.
        messages += _check(expr.source, schema.lenient_checker, schema)[0]
    return list(dict.fromkeys(messages))


def _check(source: str, env: cel.Env, schema: Schema) -> tuple[list[str], bool]:
    """Messages, and whether a number was compared with an int (or uint) literal."""
    try:
        checked = env.compile(source)
    except RuntimeError as exc:
        issues = _issues(str(exc))
        cross_numeric = any(_CROSS_NUMERIC.search(issue.text) for issue in issues)
        messages = [_check_message(issue, source, schema) for issue in issues]
        return [m for m in messages if m], cross_numeric
    result = _type_name(checked.return_type().name())
    if result not in ("bool", "dyn"):
        return [f"CEL type error: must be a bool, got {result}"], False
    return [], False


_NUMBERS = "(?:int|uint|double)"
# CEL compares int, uint and double with each other at run time (the SPEC relies on
# `deal.amount > 0`), but this binding's checker cannot be told so: those are not errors.
_CROSS_NUMERIC = re.compile(
    rf"found no matching overload for '_(?:==|!=|<|<=|>|>=)_' applied to "
    rf"'\({_NUMBERS}, {_NUMBERS}\)'"
)
_NO_OVERLOAD = re.compile(r"found no matching overload for '(.+?)' applied to '\((.*)\)'")
_UNDEFINED_FIELD = re.compile(r"undefined field '(\w+)' not found in struct '[\w.]*?\.(\w+)'")
_UNDECLARED = re.compile(r"undeclared reference to '([\w.]+)'")
_NO_FIELDS = re.compile(r"expression of type '(.+?)' cannot be the operand of a select")
_OPERATORS = {
    "_==_": "==",
    "_!=_": "!=",
    "_<_": "<",
    "_<=_": "<=",
    "_>_": ">",
    "_>=_": ">=",
    "@in": "in",
    "_+_": "+",
    "_-_": "-",
    "_*_": "*",
    "_/_": "/",
    "_%_": "%",
    "-_": "-",
    "!_": "!",
    "_&&_": "&&",
    "_||_": "||",
    "_?_:_": "?:",
    "_[_]": "[]",
}


def _check_message(issue: _Issue, source: str, schema: Schema) -> str | None:
    """The checker's problem in Fullkit's words; None for what is not a problem here."""
    text = issue.text
    # An operand that already failed is reported once, where it failed.
    if "*error*" in text or _CROSS_NUMERIC.search(text):
        return None
    if match := _UNDEFINED_FIELD.search(text):
        name, kind = match.groups()
        known = ", ".join(sorted(schema.known(kind))) or "none"
        return f"unknown {kind} field '{name}' (known: {known})"
    if match := _UNDECLARED.search(text):
        name = match[1].split(".")[0]
        if _char_at(source, issue.line, issue.column) == "(":
            return f"unknown function '{name}'"
        return f"unknown variable '{name}' (known: {', '.join(VARIABLES)})"
    if match := _NO_OVERLOAD.search(text):
        function, args = match.groups()
        types = ", ".join(_type_name(arg) for arg in _split_types(args))
        if function in _OPERATORS:
            return f"CEL type error: no operator {_OPERATORS[function]} for ({types})"
        return f"CEL type error: no overload of {function}() for ({types})"
    if match := _NO_FIELDS.search(text):
        return f"CEL type error: a {_type_name(match[1])} has no fields"
    return f"CEL type error: {text}"


def _char_at(source: str, line: int, column: int) -> str:
    lines = source.splitlines() or [""]
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return text[column - 1] if 0 < column <= len(text) else ""


def _split_types(args: str) -> list[str]:
    """`list(string), map(string, int)` -> the two types (commas nest in parentheses)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(args):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
    return [*parts, args[start:].strip()] if args.strip() else parts


def _type_name(name: str) -> str:
    """CEL's own spelling of a type: `timestamp` for google.protobuf.Timestamp, etc."""
    return {
        "google.protobuf.Timestamp": "timestamp",
        "google.protobuf.Duration": "duration",
        "null_type": "null",
    }.get(name, name.replace(f"{_PACKAGE}.", "").lower())
