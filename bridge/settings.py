"""Settings read once from the environment (names as in the SPEC)."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A malformed setting: the process must stop with this one line."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    home: Path = Field(default=Path(".fullkit"), validation_alias=_env("FULLKIT_HOME"))
    rules_dir: Path = Field(default=Path("kit_rules"), validation_alias=_env("FULLKIT_RULES_DIR"))

    hubspot_access_token: SecretStr | None = Field(
        default=None, validation_alias=_env("HUBSPOT_ACCESS_TOKEN")
    )
    hubspot_client_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("HUBSPOT_CLIENT_SECRET")
    )
    hubspot_app_id: str | None = Field(default=None, validation_alias=_env("HUBSPOT_APP_ID"))
    hubspot_api_base: str = Field(
        default="https://api.hubapi.com", validation_alias=_env("HUBSPOT_API_BASE")
    )
    # Unset: links use the portal's own uiDomain (account details), right for EU portals.
    hubspot_app_base: str | None = Field(default=None, validation_alias=_env("HUBSPOT_APP_BASE"))

    # The app's request limit in the portal, shared by every process through Redis:
    # "100/10s" (Free, Starter), "190/10s" (Professional, Enterprise); "off" (or 0): none.
    hubspot_rate_limit: str = Field(default="100/10s", validation_alias=_env("HUBSPOT_RATE_LIMIT"))

    salesforce_instance_url: str | None = Field(
        default=None, validation_alias=_env("SALESFORCE_INSTANCE_URL")
    )
    salesforce_access_token: SecretStr | None = Field(
        default=None, validation_alias=_env("SALESFORCE_ACCESS_TOKEN")
    )
    salesforce_username: str | None = Field(
        default=None, validation_alias=_env("SALESFORCE_USERNAME")
    )
    salesforce_password: SecretStr | None = Field(
        default=None, validation_alias=_env("SALESFORCE_PASSWORD")
    )
    salesforce_security_token: SecretStr | None = Field(
        default=None, validation_alias=_env("SALESFORCE_SECURITY_TOKEN")
    )
    salesforce_client_id: str | None = Field(
        default=None, validation_alias=_env("SALESFORCE_CLIENT_ID")
    )
    salesforce_client_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("SALESFORCE_CLIENT_SECRET")
    )
    salesforce_org_id: str | None = Field(default=None, validation_alias=_env("SALESFORCE_ORG_ID"))
    salesforce_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("SALESFORCE_WEBHOOK_SECRET")
    )

    admin_token: SecretStr | None = Field(
        default=None, validation_alias=_env("FULLKIT_ADMIN_TOKEN")
    )
    port: int = Field(default=8000, ge=1, le=65535, validation_alias=_env("PORT"))
    public_url: str | None = Field(default=None, validation_alias=_env("FULLKIT_PUBLIC_URL"))

    # How long a retryable CRM failure is retried before the attempt is failed (SPEC: >= 15 min).
    retry_window_seconds: float = Field(
        default=20 * 60, gt=0, validation_alias=_env("FULLKIT_RETRY_WINDOW_SECONDS")
    )

    # Attempts one batching job advances together. HubSpot's batch endpoints take 100;
    # 1 gives the old one-deal-per-job path (for comparison in the benchmark).
    batch_size: int = Field(default=100, ge=1, le=100, validation_alias=_env("FULLKIT_BATCH_SIZE"))

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in {"redis", "rediss", "unix", "valkey", "valkeys"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value or None

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        kind = parts.scheme.split("+")[0]
        if kind not in {"postgresql", "postgres", "sqlite"}:
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        # An empty URL would silently mean "the local socket, a database named after
        # the user" (PostgreSQL) or an in-memory ledger lost on exit (SQLite).
        if kind == "sqlite" and parts.path in {"", "/", "/:memory:"}:
            raise ValueError("names no file, e.g. sqlite:////var/lib/fullkit/ledger.sqlite3")
        if kind != "sqlite" and not parts.hostname and parts.path in {"", "/"}:
            raise ValueError(
                "names no server or database, e.g. postgresql://user@host:5432/fullkit"
            )
        return value

    @field_validator(
        "hubspot_api_base", "hubspot_app_base", "public_url", "salesforce_instance_url"
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None if value == "" else value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("hubspot_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("salesforce_org_id")
    @classmethod
    def _org_id(cls, value: str | None) -> str | None:
        if value and (len(value) not in (15, 18) or not value.isalnum()):
            raise ValueError("must be a 15- or 18-character Salesforce id")
        return value or None

    @cached_property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.home / 'ledger.sqlite3').resolve()}"

    @property
    def uses_default_database(self) -> bool:
        return not self.database_url

    @property
    def hubspot_rate(self) -> tuple[int, float] | None:
        """(requests, window seconds) of the shared HubSpot budget; None when off."""
        return parse_rate_limit(self.hubspot_rate_limit)

    @property
    def hubspot_enabled(self) -> bool:
        return self.hubspot_access_token is not None


_RATE = re.compile(r"(\d+)(?:/(\d+(?:\.\d+)?)(ms|s)?)?")


def parse_rate_limit(value: str) -> tuple[int, float] | None:
    """ "100/10s" -> (100, 10.0); a bare number is per 10 s, HubSpot's window; 0/off: None."""
    text = value.strip().lower().replace(" ", "")
    if text in {"", "0", "off"}:
        return None
    found = _RATE.fullmatch(text)
    if found is None:
        raise ValueError('must be requests per window, e.g. "100/10s", or "off"')
    requests, window, unit = int(found[1]), float(found[2] or 10), found[3] or "s"
    window = window / 1000 if unit == "ms" else window
    if requests == 0:
        return None
    if window <= 0:
        raise ValueError("the window must be longer than zero")
    return requests, window


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a malformed value raises SettingsError with one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [_plain(error) for error in exc.errors(include_url=False)]
        raise SettingsError("; ".join(problems)) from None


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


def _plain(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    kind, context = error["type"], error.get("ctx", {})
    if kind == "value_error" and "error" in context:
        problem = str(context["error"])
    else:
        problem = _MUST_BE.get(kind, "is not valid").format(**context)
    if kind in _ECHOED:
        problem += f" (got {error.get('input')!r})"
    return f"invalid setting {_env_name(where)}: {problem}"


def _env_name(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return field_name.upper()
