"""Settings every part reads the same way: one line per malformed value, secrets never echoed.

The core's settings hold only core values. Each connector (and each CRM's receiver) owns a
settings class of its own, under its own environment prefix, and reads it from the
process's settings with `settings.section(ItsSettings)`, as a Home Assistant integration
owns its config entry: adding a connector never edits the core's settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, PrivateAttr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class SettingsError(Exception):
    """A malformed setting: the process must stop with this one line."""


class Section(BaseSettings):
    """A connector's or receiver's own settings (give it an `env_prefix`)."""

    # field -> what stays off while it is unset, for `serve` to say at start.
    WHEN_UNSET: ClassVar[dict[str, str]] = {}

    def unset(self) -> list[str]:
        return [
            f"{env_name(type(self), field)} is not set: {effect}"
            for field, effect in self.WHEN_UNSET.items()
            if getattr(self, field) is None
        ]


class SharedSettings(BaseSettings):
    """The process's settings, from which every section is read.

    Values given to the constructor by their environment names (tests, the demo) and
    meant for a section are kept aside, never shown, and win over the environment there.
    """

    _given: dict[str, Any] = PrivateAttr(default_factory=dict)
    _sections: dict[type[BaseSettings], BaseSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        own = {env_name(type(self), name) for name in type(self).model_fields}
        self._given = {key: value for key, value in values.items() if key not in own}

    def section(self, cls: type[S]) -> S:
        """The section's settings (read once); raises SettingsError when one is malformed."""
        if cls not in self._sections:
            self._sections[cls] = load(cls, self._given)
        found = self._sections[cls]
        assert isinstance(found, cls)
        return found


def load(cls: type[S], given: Mapping[str, Any] | None = None) -> S:
    """Read `cls` from the environment, `given` (by environment name) winning; a malformed
    value raises SettingsError with one line per problem, naming the variable."""
    values = {
        name: given[env]
        for name in cls.model_fields
        if given and (env := env_name(cls, name)) in given
    }
    try:
        return cls(**values)
    except ValidationError as exc:
        raise explain(cls, exc) from None


def explain(cls: type[BaseSettings], exc: ValidationError) -> SettingsError:
    """The one line an operator reads for a malformed value of `cls`."""
    return SettingsError("; ".join(_plain(cls, error) for error in exc.errors(include_url=False)))


def http_url(value: str | None) -> str | None:
    """An http(s) base URL without its trailing slash; empty means unset."""
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


# `scheme://user:password@`: the password ends at the last `@` before a space, so one
# written with a raw `@`, `/` or `#` (which drivers accept) is hidden whole.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?!\*\*\*@)\S*@")
# `?password=` or `&password=`: redis-py's documented form for a unix socket, and libpq's.
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)(?!\*\*\*(?:[&#\s]|$))[^&#\s]*", re.I)


def hide_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it written ***, e.g. a database or queue
    URL that a driver's error or a library's log line repeats."""
    if "://" not in text:
        return text
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def env_name(cls: type[BaseSettings], field_name: str) -> str:
    """The environment variable a field is read from."""
    field = cls.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    prefix = str(cls.model_config.get("env_prefix", ""))
    return (prefix + field_name).upper()


# What a value must look like, in the operator's words rather than the validator's.
_MUST_BE = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "greater_than": "must be above {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be below {lt}",
    "less_than_equal": "must be at most {le}",
}
# Only values that cannot be secrets are echoed back.
_ECHOED = {"int_parsing", "int_from_float", "float_parsing", "bool_parsing"}


def _plain(cls: type[BaseSettings], error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    kind, context = error["type"], error.get("ctx", {})
    if kind == "value_error" and "error" in context:
        problem = str(context["error"])
    else:
        problem = _MUST_BE.get(kind, "is not valid").format(**context)
    if kind in _ECHOED:
        problem += f" (got {error.get('input')!r})"
    return f"invalid setting {env_name(cls, where)}: {problem}"
