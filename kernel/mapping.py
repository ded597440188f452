"""CRM field mappings (kit_rules/mappings/<crm>.yaml) and CRM value conversion."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FIELD_TYPES = ("string", "number", "date", "datetime", "bool", "list")
OBJECTS = ("deal", "company", "contact", "line_item")


@dataclass(frozen=True)
class FieldSpec:
    name: str  # canonical field name, as kits use it
    property: str  # the CRM's property / field API name
    type: str = "string"


@dataclass(frozen=True)
class Mapping:
    crm: str
    stages: dict[str, str] = field(default_factory=dict)  # canonical -> CRM stage id/name
    deal: tuple[FieldSpec, ...] = ()
    company: tuple[FieldSpec, ...] = ()
    contact: tuple[FieldSpec, ...] = ()
    line_item: tuple[FieldSpec, ...] = ()

    def fields(self, obj: str) -> tuple[FieldSpec, ...]:
        specs: tuple[FieldSpec, ...] = getattr(self, obj)
        return specs

    def properties(self, obj: str) -> list[str]:
        return sorted({spec.property for spec in self.fields(obj)})

    def stage_ref(self, canonical: str) -> str:
        """The CRM's name for a canonical stage (unmapped names pass through)."""
        return self.stages.get(canonical, canonical)

    def canonical_stage(self, ref: str) -> str | None:
        folded = self._fold(ref)
        for canonical, crm_ref in self.stages.items():
            if self._fold(crm_ref) == folded:
                return canonical
        return None

    def _fold(self, name: str) -> str:
        return name.lower() if self.crm == "salesforce" else name

    def to_canonical(self, obj: str, raw: dict[str, Any]) -> dict[str, Any]:
        """CRM property values -> canonical map; empty values are left out."""
        if self.crm == "salesforce":
            raw = {key.lower(): value for key, value in raw.items()}
        result: dict[str, Any] = {}
        for spec in self.fields(obj):
            key = spec.property.lower() if self.crm == "salesforce" else spec.property
            value = convert(raw.get(key), spec.type)
            if value is not None:
                result[spec.name] = value
        return result


def convert(raw: Any, kind: str) -> Any:
    """One CRM value (HubSpot sends strings, Salesforce JSON types) -> canonical, or None."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            return None
    try:
        return _CONVERTERS[kind](raw)
    except (ValueError, TypeError, OverflowError):
        return None


def _number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise TypeError("bool is not a number")
    return float(raw)


def _epoch_ms(raw: Any) -> dt.datetime | None:
    if isinstance(raw, int | float) or (isinstance(raw, str) and raw.lstrip("-").isdigit()):
        return dt.datetime.fromtimestamp(int(raw) / 1000, tz=dt.UTC)
    return None


def _datetime(raw: Any) -> dt.datetime:
    from_ms = _epoch_ms(raw)
    if from_ms is not None:
        return from_ms
    text = str(raw).replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":  # Salesforce's +0000
        text = f"{text[:-2]}:{text[-2:]}"
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _date(raw: Any) -> dt.date:
    from_ms = _epoch_ms(raw)
    if from_ms is not None:
        return from_ms.date()
    text = str(raw)
    return dt.date.fromisoformat(text[:10])


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _list(raw: Any) -> list[str] | None:
    items: Iterable[Any] = raw if isinstance(raw, list) else str(raw).split(";")
    values = [str(item).strip() for item in items if str(item).strip()]
    return values or None


_CONVERTERS: dict[str, Any] = {
    "string": str,
    "number": _number,
    "date": _date,
    "datetime": _datetime,
    "bool": _bool,
    "list": _list,
}
