"""The SOQL subset a packet query needs, parsed with a lark grammar and run on the store.

Supported: field lists with parent relationship paths (`Account.Name`, `Owner.Email`),
child relationship subqueries (`(SELECT ... FROM OpportunityContactRoles)`), WHERE with
=, !=, <, <=, >, >=, LIKE, IN / NOT IN, AND, OR, NOT and parentheses, ORDER BY (ASC,
DESC, NULLS FIRST/LAST), LIMIT and OFFSET. Anything else is a MALFORMED_QUERY, and a
field or relationship the org lacks is an INVALID_FIELD, as in a real org.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from sandbox.salesforce_model import FieldDef, ObjectDef, SalesforceError, id18, looks_like_id
from sandbox.salesforce_store import Row, Store

_GRAMMAR = r"""
    query: "SELECT"i select_list "FROM"i NAME where? order? limit? offset?
    subquery: "SELECT"i select_list "FROM"i NAME where? order? limit?
    select_list: select_item ("," select_item)*
    ?select_item: path | "(" subquery ")"
    path: NAME ("." NAME)*

    where: "WHERE"i or_expr
    ?or_expr: and_expr ("OR"i and_expr)*  -> any_of
    ?and_expr: unary ("AND"i unary)*      -> all_of
    ?unary: "NOT"i unary                  -> negate
          | "(" or_expr ")"
          | comparison
    comparison: path OPERATOR value
              | path "LIKE"i STRING             -> like
              | path "IN"i "(" values ")"       -> in_list
              | path "NOT"i "IN"i "(" values ")" -> not_in_list
    values: value ("," value)*
    ?value: STRING      -> string
          | NUMBER      -> number
          | DATETIME    -> datetime
          | DATE        -> date
          | "NULL"i     -> null
          | "TRUE"i     -> true
          | "FALSE"i    -> false
          | "TODAY"i    -> today

    order: "ORDER"i "BY"i order_item ("," order_item)*
    order_item: path DIRECTION? NULLS?
    DIRECTION: /(ASC|DESC)\b/i
    NULLS: /NULLS\s+(FIRST|LAST)\b/i
    limit: "LIMIT"i INT
    offset: "OFFSET"i INT

    OPERATOR: "<=" | ">=" | "!=" | "<>" | "=" | "<" | ">"
    STRING: /'(\\.|[^'\\])*'/
    DATETIME.2: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})/
    DATE.2: /\d{4}-\d{2}-\d{2}/
    NUMBER: /-?\d+(\.\d+)?/
    NAME: /[A-Za-z_][A-Za-z0-9_]*/
    %import common.INT
    %import common.WS
    %ignore WS
"""

_PARSER = Lark(_GRAMMAR, start="query", parser="lalr")


@dataclass
class Condition:
    kind: str  # compare like in not_in all any not
    path: list[str] = field(default_factory=list)
    operator: str = "="
    values: list[Any] = field(default_factory=list)
    parts: list[Condition] = field(default_factory=list)


@dataclass
class Query:
    fields: list[list[str] | Query]  # a path, or a child subquery
    source: str
    where: Condition | None = None
    order: list[tuple[list[str], bool, bool]] = field(default_factory=list)  # path, desc, nulls
    limit: int | None = None
    offset: int = 0


class _Build(Transformer[Token, Any]):
    def path(self, names: list[Token]) -> list[str]:
        return [str(n) for n in names]

    def select_list(self, items: list[Any]) -> list[Any]:
        return items

    def _query(self, items: list[Any]) -> Query:
        built = Query(fields=items[0], source=str(items[1]))
        for part in items[2:]:
            kind, value = part
            if kind == "where":
                built.where = value
            elif kind == "order":
                built.order = value
            elif kind == "limit":
                built.limit = value
            else:
                built.offset = value
        return built

    query = _query
    subquery = _query

    def where(self, items: list[Condition]) -> tuple[str, Condition]:
        return ("where", items[0])

    def order(self, items: list[Any]) -> tuple[str, Any]:
        return ("order", items)

    def order_item(self, items: list[Any]) -> tuple[list[str], bool, bool]:
        words = [str(i).upper() for i in items[1:]]
        descending = "DESC" in words
        nulls_last = (
            any(w.endswith("LAST") for w in words)
            if any(w.startswith("NULLS") for w in words)
            else descending
        )  # Salesforce: nulls first ascending, last descending
        return (items[0], descending, nulls_last)

    def limit(self, items: list[Token]) -> tuple[str, int]:
        return ("limit", int(items[0]))

    def offset(self, items: list[Token]) -> tuple[str, int]:
        return ("offset", int(items[0]))

    def any_of(self, items: list[Condition]) -> Condition:
        return Condition("any", parts=items)

    def all_of(self, items: list[Condition]) -> Condition:
        return Condition("all", parts=items)

    def negate(self, items: list[Condition]) -> Condition:
        return Condition("not", parts=items)

    def comparison(self, items: list[Any]) -> Condition:
        operator = "!=" if str(items[1]) == "<>" else str(items[1])
        return Condition("compare", items[0], operator, [items[2]])

    def like(self, items: list[Any]) -> Condition:
        return Condition("like", items[0], values=[_unquote(items[1])])

    def in_list(self, items: list[Any]) -> Condition:
        return Condition("in", items[0], values=items[1])

    def not_in_list(self, items: list[Any]) -> Condition:
        return Condition("not_in", items[0], values=items[1])

    def values(self, items: list[Any]) -> list[Any]:
        return items

    @v_args(inline=True)
    def string(self, token: Token) -> str:
        return _unquote(token)

    @v_args(inline=True)
    def number(self, token: Token) -> float:
        return float(token)

    @v_args(inline=True)
    def date(self, token: Token) -> dt.date:
        return dt.date.fromisoformat(str(token))

    @v_args(inline=True)
    def datetime(self, token: Token) -> dt.datetime:
        return dt.datetime.fromisoformat(str(token).replace("Z", "+00:00"))

    def null(self, _: list[Any]) -> None:
        return None

    def true(self, _: list[Any]) -> bool:
        return True

    def false(self, _: list[Any]) -> bool:
        return False

    def today(self, _: list[Any]) -> dt.date:
        return dt.datetime.now(dt.UTC).date()


def _unquote(token: Token | str) -> str:
    return re.sub(r"\\(.)", r"\1", str(token)[1:-1])


def parse(text: str) -> Query:
    try:
        tree = _PARSER.parse(text)
        built: Query = _Build().transform(tree)
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        near = str(token) if token is not None else text[exc.pos_in_stream or 0 :][:20]
        raise SalesforceError(
            400,
            "MALFORMED_QUERY",
            f"\n{text}\n^\nERROR at Row:{exc.line}:Column:{exc.column}\nunexpected token: '{near}'",
        ) from exc
    except VisitError as exc:
        raise SalesforceError(400, "MALFORMED_QUERY", str(exc.orig_exc)) from exc
    return built


# ---------------------------------------------------------------- execution


class Executor:
    """Runs a parsed query against the store and renders Salesforce's JSON records."""

    def __init__(
        self,
        store: Store,
        version: str,
        park: Callable[[list[Row]], str] | None = None,
        child_batch: int = 200,
    ) -> None:
        self.store = store
        self.version = version
        # Keeps the children past `child_batch` for queryMore; returns their locator.
        self.park = park
        self.child_batch = child_batch
        # Per run: children by parent id, and each condition's resolved field and values,
        # so a 1,000-opportunity packet query stays linear in the org's size.
        self._children_of: dict[tuple[str, str], dict[str, list[Row]]] = {}
        self._conditions: dict[int, tuple[FieldDef, list[Any], frozenset[Any]]] = {}

    def run(self, query: Query) -> list[Row]:
        obj = self.store.schema.get(query.source.lower())
        if obj is None or not obj.queryable:
            raise SalesforceError(
                400,
                "INVALID_TYPE",
                f"\n{query.source}\n^\nERROR at Row:1:Column:1\nsObject type "
                f"'{query.source}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
            )
        self._check(obj, query)
        rows = list(self.store.table(obj).values())
        return [self._render(obj, row, query) for row in self._select(obj, rows, query)]

    def _select(self, obj: ObjectDef, rows: list[Row], query: Query) -> list[Row]:
        if query.where is not None:
            where = query.where
            rows = [row for row in rows if self._holds(obj, row, where)]
        for path, descending, nulls_last in reversed(query.order):
            present = [r for r in rows if self._value(obj, r, path) is not None]
            absent = [r for r in rows if self._value(obj, r, path) is None]

            def key(row: Row, path: list[str] = path) -> Any:
                return _sort_key(self._value(obj, row, path))

            present.sort(key=key, reverse=descending)
            rows = present + absent if nulls_last else absent + present
        rows = rows[query.offset :]
        return rows if query.limit is None else rows[: query.limit]

    # ---------------------------------------------------------------- checks

    def _check(self, obj: ObjectDef, query: Query, parent: ObjectDef | None = None) -> None:
        for item in query.fields:
            if isinstance(item, Query):
                if parent is not None:
                    raise SalesforceError(
                        400, "MALFORMED_QUERY", "Nesting of semi join sub-selects is not supported"
                    )
                child = self._child_object(obj, item.source)
                self._check(child, item, parent=obj)
            else:
                self._resolve(obj, item)
        if query.where is not None:
            self._check_condition(obj, query.where)
        for path, _, _ in query.order:
            self._resolve(obj, path)

    def _check_condition(self, obj: ObjectDef, condition: Condition) -> None:
        if condition.parts:
            for part in condition.parts:
                self._check_condition(obj, part)
        else:
            definition = self._resolve(obj, condition.path)
            for value in condition.values:
                _check_filter_value(definition, value)

    def _child_object(self, obj: ObjectDef, relationship: str) -> ObjectDef:
        relation = obj.children.get(relationship.lower())
        if relation is None:
            raise SalesforceError(
                400,
                "INVALID_TYPE",
                f"Didn't understand relationship '{relationship}' in FROM part of query call. "
                "If you are attempting to use a custom relationship, be sure to append the "
                "'__r' after the custom relationship name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        return self.store.object(relation.child)

    def _resolve(self, obj: ObjectDef, path: list[str]) -> FieldDef:
        current = obj
        for hop in path[:-1]:
            lookup = current.relationship(hop)
            if lookup is None:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{hop}' in field path. If you are "
                    "attempting to use a custom relationship, be sure to append the '__r' "
                    "after the custom relationship name. Please reference your WSDL or the "
                    "describe call for the appropriate names.",
                )
            current = self.store.object(lookup.reference_to[0] if lookup.reference_to else "User")
        definition = current.field(path[-1])
        if definition is None:
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"\n{'.'.join(path)}\n^\nERROR at Row:1:Column:1\nNo such column "
                f"'{path[-1]}' on entity '{current.name}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        return definition

    # ---------------------------------------------------------------- values

    def _parent(self, obj: ObjectDef, row: Row, hop: str) -> tuple[ObjectDef, Row] | None:
        lookup = obj.relationship(hop)
        assert lookup is not None  # checked before running
        target_id = row.get(lookup.name)
        if not target_id:
            return None
        for target in lookup.reference_to or tuple(o.name for o in self.store.schema.values()):
            target_obj = self.store.schema.get(target.lower())
            if target_obj is not None and target_id in self.store.table(target_obj):
                return target_obj, self.store.table(target_obj)[target_id]
        return None

    def _value(self, obj: ObjectDef, row: Row, path: list[str]) -> Any:
        current, current_row = obj, row
        for hop in path[:-1]:
            found = self._parent(current, current_row, hop)
            if found is None:
                return None
            current, current_row = found
        definition = current.field(path[-1])
        assert definition is not None
        return current_row.get(definition.name)

    def _holds(self, obj: ObjectDef, row: Row, condition: Condition) -> bool:
        if condition.kind == "all":
            return all(self._holds(obj, row, p) for p in condition.parts)
        if condition.kind == "any":
            return any(self._holds(obj, row, p) for p in condition.parts)
        if condition.kind == "not":
            return not self._holds(obj, row, condition.parts[0])
        prepared = self._conditions.get(id(condition))
        if prepared is None:
            definition = self._resolve(obj, condition.path)
            values = [_comparable(definition, v) for v in condition.values]
            prepared = (definition, values, frozenset(values))
            self._conditions[id(condition)] = prepared
        definition, wanted, members = prepared
        actual = _comparable(definition, self._value(obj, row, condition.path))
        if condition.kind in ("in", "not_in"):
            return (actual in members) == (condition.kind == "in")
        if condition.kind == "like":
            pattern = re.escape(str(wanted[0])).replace("%", ".*").replace("_", ".")
            return actual is not None and re.fullmatch(pattern, str(actual), re.I) is not None
        return _compare(actual, condition.operator, wanted[0])

    # -------------------------------------------------------------- rendering

    def _render(self, obj: ObjectDef, row: Row, query: Query) -> Row:
        out: Row = {"attributes": self.attributes(obj, row)}
        for item in query.fields:
            if isinstance(item, Query):
                out[self._child_name(obj, item.source)] = self._children(obj, row, item)
            else:
                self._place(obj, row, item, out)
        return out

    def attributes(self, obj: ObjectDef, row: Row) -> dict[str, str]:
        return {
            "type": obj.name,
            "url": f"/services/data/v{self.version}/sobjects/{obj.name}/{row.get('Id')}",
        }

    def _place(self, obj: ObjectDef, row: Row, path: list[str], out: Row) -> None:
        if len(path) == 1:
            definition = obj.field(path[0])
            assert definition is not None
            out[definition.name] = row.get(definition.name)
            return
        lookup = obj.relationship(path[0])
        assert lookup is not None and lookup.relationship_name is not None
        key = lookup.relationship_name
        found = self._parent(obj, row, path[0])
        if found is None:
            out[key] = None
            return
        parent_obj, parent_row = found
        nested = out.get(key) or {"attributes": self.attributes(parent_obj, parent_row)}
        out[key] = nested
        self._place(parent_obj, parent_row, path[1:], nested)

    def _child_name(self, obj: ObjectDef, relationship: str) -> str:
        return obj.children[relationship.lower()].name

    def _children(self, obj: ObjectDef, row: Row, query: Query) -> Row | None:
        relation = obj.children[query.source.lower()]
        child = self.store.object(relation.child)
        key = (child.name, relation.field)
        if key not in self._children_of:
            grouped: dict[str, list[Row]] = {}
            for candidate in self.store.table(child).values():
                grouped.setdefault(candidate.get(relation.field) or "", []).append(candidate)
            self._children_of[key] = grouped
        rows = self._select(child, self._children_of[key].get(row["Id"], []), query)
        if not rows:
            return None  # Salesforce answers null, not an empty list, for no children
        rendered = [self._render(child, r, query) for r in rows]
        result: Row = {"totalSize": len(rendered), "done": True, "records": rendered}
        if self.park is not None and len(rendered) > self.child_batch:
            # A parent with many children gets only the first of them; the rest need a
            # queryMore of their own, as the real org answers such a subquery.
            locator = self.park(rendered)
            result["done"] = False
            result["nextRecordsUrl"] = (
                f"/services/data/v{self.version}/query/{locator}-{self.child_batch}"
            )
            result["records"] = rendered[: self.child_batch]
        return result


_TYPED = {
    "date": (dt.date,),
    "datetime": (dt.datetime,),
    "double": (float,),
    "currency": (float,),
    "percent": (float,),
    "int": (float,),
    "boolean": (bool,),
}


def _check_filter_value(definition: FieldDef, value: Any) -> None:
    """Salesforce refuses a filter value of the wrong kind instead of matching nothing:
    a quoted date, a bare number against text, an Id that is no id."""
    if value is None:
        return
    kinds = _TYPED.get(definition.type, (str,))
    fits = isinstance(value, kinds) and not (bool in kinds) ^ isinstance(value, bool)
    if definition.type == "date" and isinstance(value, dt.datetime):
        fits = False
    if not fits:
        kind = {"double": "number", "currency": "number", "percent": "number"}.get(
            definition.type, definition.type
        )
        quoted = "should not" if isinstance(value, str) else "should"
        raise SalesforceError(
            400,
            "INVALID_FIELD",
            f"value of filter criterion for field '{definition.name}' must be of type "
            f"{'string' if kinds == (str,) else kind} and {quoted} be enclosed in quotes",
        )
    if definition.type in ("id", "reference") and not looks_like_id(value):
        raise SalesforceError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")


def _comparable(definition: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if definition.type in ("id", "reference") and isinstance(value, str):
        return id18(value) if looks_like_id(value) else value
    if definition.type == "date":
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    if definition.type == "datetime":
        if isinstance(value, dt.datetime):
            return value
        text = str(value).replace("Z", "+00:00")
        if text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        return dt.datetime.fromisoformat(text)
    if definition.type in ("double", "currency", "percent", "int"):
        return float(value)
    if isinstance(value, str):
        return value.lower()  # SOQL text comparison is case-insensitive
    return value


def _compare(actual: Any, operator: str, wanted: Any) -> bool:
    if operator == "=":
        return bool(actual == wanted)
    if operator == "!=":
        return bool(actual != wanted)
    if actual is None or wanted is None:
        return False
    try:
        if operator == "<":
            return bool(actual < wanted)
        if operator == "<=":
            return bool(actual <= wanted)
        if operator == ">":
            return bool(actual > wanted)
        return bool(actual >= wanted)
    except TypeError:
        return False


def _sort_key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
