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
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bridge.proxies import TrustedProxies
from kernel.settings import SettingsError, SharedSettings, explain, http_url

__all__ = ["Settings", "SettingsError", "load_settings"]

# 32 characters of a random token are beyond guessing even without the login throttle;
# a shorter one is a password somebody chose.
MIN_ADMIN_TOKEN_LENGTH = 32


# Never the value: what fails to parse may be the password.
_UNPARSED = (
    "is not a URL that can be read (write special characters of the password "
    "percent-encoded, e.g. / as %2F, @ as %40)"
)


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    # Secrets: their passwords. Read with get_secret_value() where a client connects, and
    # shown only through bridge.backends.masked().
    redis_url: SecretStr | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    database_url: SecretStr | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    home: Path = Field(default=Path(".fullkit"), validation_alias=_env("FULLKIT_HOME"))
    rules_dir: Path = Field(default=Path("kit_rules"), validation_alias=_env("FULLKIT_RULES_DIR"))

    admin_token: SecretStr | None = Field(
        default=None, validation_alias=_env("FULLKIT_ADMIN_TOKEN")
    )
    port: int = Field(default=8000, ge=1, le=65535, validation_alias=_env("PORT"))
    public_url: str | None = Field(default=None, validation_alias=_env("FULLKIT_PUBLIC_URL"))
    # Proxies whose X-Forwarded-* headers count (gunicorn's syntax: IPs, networks or *).
    forwarded_allow_ips: str = Field(default="", validation_alias=_env("FORWARDED_ALLOW_IPS"))

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

    # RQ worker processes of `fullkit worker`. Each runs one job at a time, and jobs mostly
    # wait on CRM calls, so a 2-core machine serves four comfortably; a CRM call that
    # hangs then holds one of them, not every hand-off.
    worker_processes: int = Field(
        default=4, ge=1, le=64, validation_alias=_env("FULLKIT_WORKER_PROCESSES")
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, secret: SecretStr | None) -> SecretStr | None:
        value = secret.get_secret_value() if secret else ""
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix", "valkey", "valkeys"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        try:
            parts.port  # noqa: B018 - redis-py reads it the same way, and says the password
        except ValueError:
            raise ValueError(_UNPARSED) from None
        return secret

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, secret: SecretStr | None) -> SecretStr | None:
        value = secret.get_secret_value() if secret else ""
        if not value:
            return None
        try:
            # SQLAlchemy's own parser, so that this is the URL the ledger connects to.
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(_UNPARSED) from None
        kind = url.get_backend_name()
        if kind not in {"postgresql", "postgres", "sqlite"}:
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        # An empty URL would silently mean "the local socket, a database named after
        # the user" (PostgreSQL) or an in-memory ledger lost on exit (SQLite).
        if kind == "sqlite" and url.database in {None, "", ":memory:"}:
            raise ValueError("names no file, e.g. sqlite:////var/lib/fullkit/ledger.sqlite3")
        if kind != "sqlite" and not url.host and not url.database:
            raise ValueError(
                "names no server or database, e.g. postgresql://user@host:5432/fullkit"
            )
        return secret

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("admin_token")
    @classmethod
    def _empty_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # `FULLKIT_ADMIN_TOKEN=` in an env file means "not set", not "the empty password".
        return value if value is not None and value.get_secret_value() else None

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: str) -> str:
        try:
            TrustedProxies(value)
        except ValueError as exc:
            raise ValueError(f"must be IP addresses or networks, comma-separated ({exc})") from None
        return value

    @cached_property
    def trusted_proxies(self) -> TrustedProxies:
        return TrustedProxies(self.forwarded_allow_ips)

    @property
    def api_token(self) -> SecretStr | None:
        """The admin token, when it is long enough to guard the API (shorter counts as unset)."""
        token = self.admin_token
        return token if token and len(token.get_secret_value()) >= MIN_ADMIN_TOKEN_LENGTH else None

    @property
    def admin_token_too_short(self) -> bool:
        return self.admin_token is not None and self.api_token is None

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The ledger's URL for create_engine, password included: never show it."""
        if self.database_url:
            url = self.database_url.get_secret_value()
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
