"""The core's settings, read once from the environment (names as in the SPEC).

Only what the core itself uses: each connector and receiver reads its own section
(`settings.section(...)`, see kernel/settings.py).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from kernel.settings import SettingsError, SharedSettings, explain, http_url

__all__ = ["Settings", "SettingsError", "load_settings"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    home: Path = Field(default=Path(".fullkit"), validation_alias=_env("FULLKIT_HOME"))
    rules_dir: Path = Field(default=Path("kit_rules"), validation_alias=_env("FULLKIT_RULES_DIR"))

    admin_token: SecretStr | None = Field(
        default=None, validation_alias=_env("FULLKIT_ADMIN_TOKEN")
    )
    port: int = Field(default=8000, ge=1, le=65535, validation_alias=_env("PORT"))
    public_url: str | None = Field(default=None, validation_alias=_env("FULLKIT_PUBLIC_URL"))

    # How long a retryable CRM failure is retried before the attempt is failed (SPEC: >= 15 min).
    retry_window_seconds: float = Field(
        default=20 * 60, gt=0, validation_alias=_env("FULLKIT_RETRY_WINDOW_SECONDS")
    )

    # Retry delays of a CRM failure: exponential from the base, capped, with jitter. Chaos
    # runs and tests shorten them; production keeps the defaults.
    backoff_base_seconds: float = Field(
        default=2.0, gt=0, validation_alias=_env("FULLKIT_BACKOFF_BASE_SECONDS")
    )
    backoff_cap_seconds: float = Field(
        default=300.0, gt=0, validation_alias=_env("FULLKIT_BACKOFF_CAP_SECONDS")
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

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

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


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; a malformed value raises SettingsError with one line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise explain(Settings, exc) from None
