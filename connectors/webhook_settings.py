"""The webhook target's own settings: FULLKIT_WEBHOOK_*."""

from __future__ import annotations

import base64
import binascii
import re
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section

SECRET_PREFIX = "whsec_"
# Standard Webhooks: a symmetric secret is random, at least 24 bytes and at most 64.
SECRET_BYTES = (24, 64)
_RATE = re.compile(r"(\d+)/(\d+(?:\.\d+)?)s")


def check_secret(value: str) -> str | None:
    """What is wrong with a `whsec_...` signing secret; None when it is usable.

    The library decodes leniently (it skips characters that are not base64), so a typo
    would sign with a different key than the receiver holds: check strictly here.
    """
    raw = value.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX} followed by base64"
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        return f"must decode to {low} to {high} bytes (got {len(key)})"
    return None


def parse_rate(value: str) -> tuple[int, float] | None:
    """ "20/1s" -> (20, 1.0); "off" or 0 -> None."""
    text = value.strip().lower().replace(" ", "")
    if text in {"", "0", "off"}:
        return None
    found = _RATE.fullmatch(text)
    if found is None or int(found[1]) == 0 or float(found[2]) <= 0:
        raise ValueError('must be requests per window in seconds, e.g. "20/1s", or "off"')
    return int(found[1]), float(found[2])


class WebhookSettings(Section):
    model_config = SettingsConfigDict(env_prefix="FULLKIT_WEBHOOK_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {
        "secret": "the webhook ops target is disabled (unless a kit names its own secret_env)"
    }

    # The default signing secret (`whsec_` + base64, 24-64 bytes); a kit's
    # `ops.secret_env` names another variable, so each receiver can hold its own.
    secret: SecretStr | None = None
    # Standard Webhooks recommends 15-30 s for the receiver to answer.
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Deliveries per receiver (scheme, host and port), shared by every worker process.
    rate_limit: str = "20/1s"

    @field_validator("secret", mode="before")
    @classmethod
    def _secret(cls, value: object) -> object:
        if value in (None, ""):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        problem = check_secret(text)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def rate(self) -> tuple[int, float] | None:
        return parse_rate(self.rate_limit)
