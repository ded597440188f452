"""The asana ops target's own settings: ASANA_*."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section, http_url

_RATE = re.compile(r"(\d+)/(\d+(?:\.\d+)?)(s|m)")


class AsanaSettings(Section):
    model_config = SettingsConfigDict(env_prefix="ASANA_", extra="ignore")
    DISABLED: ClassVar[str] = "the asana ops target is disabled (kits naming it cannot be served)"

    # A bearer token used as given, or (better: OAuth access tokens last an hour) an OAuth
    # app's client id and secret and a refresh token, from which tokens are fetched.
    # Asana keeps tasks' `external` ids only for OAuth apps; with a personal access token
    # retries find a task by the hand-off line of its notes instead (a listing: more calls).
    access_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    oauth_token_url: str = "https://app.asana.com/-/oauth_token"
    api_base: str = "https://app.asana.com/api/1.0"
    # Asana's standard limit per token: 150 a minute on free domains, 1,500 on paid ones.
    # Shared by every process through Redis; "off": none.
    rate_limit: str = "150/1m"
    timeout_seconds: float = Field(default=30.0, gt=0)
    # How long a create waits for Asana's asynchronous project instantiation before it
    # leaves the attempt to a retry (which finds the project by its hand-off id).
    job_wait_seconds: float = Field(default=20.0, ge=0)

    @field_validator("api_base", "oauth_token_url")
    @classmethod
    def _http_url(cls, value: str) -> str | None:
        return http_url(value)

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def rate(self) -> tuple[int, float] | None:
        return parse_rate(self.rate_limit)

    @property
    def refreshable(self) -> bool:
        return bool(self.client_id and _set(self.client_secret) and _set(self.refresh_token))

    @property
    def enabled(self) -> bool:
        return _set(self.access_token) or self.refreshable

    def unset(self) -> list[str]:
        if self.enabled:
            return []
        partial = [
            name
            for name, value in (
                ("ASANA_CLIENT_ID", self.client_id),
                ("ASANA_CLIENT_SECRET", _set(self.client_secret) or None),
                ("ASANA_REFRESH_TOKEN", _set(self.refresh_token) or None),
            )
            if not value
        ]
        if len(partial) < 3:
            return [
                f"{', '.join(partial)} not set (the OAuth refresh needs all three): {self.DISABLED}"
            ]
        return [f"ASANA_ACCESS_TOKEN is not set: {self.DISABLED}"]


def _set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())


def parse_rate(value: str) -> tuple[int, float] | None:
    """ "150/1m" -> (150, 60.0); "1500/60s" -> (1500, 60.0); "off" or "0": None."""
    text = value.strip().lower().replace(" ", "")
    if text in {"", "0", "off"}:
        return None
    found = _RATE.fullmatch(text)
    if found is None:
        raise ValueError('must be requests per window, e.g. "150/1m", or "off"')
    requests, window = int(found[1]), float(found[2]) * (60 if found[3] == "m" else 1)
    if requests == 0:
        return None
    if window <= 0:
        raise ValueError("the window must be longer than zero")
    return requests, window
