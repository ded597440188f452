"""The HubSpot connector's own settings: HUBSPOT_* (names as in the SPEC)."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section, http_url


class HubSpotSettings(Section):
    model_config = SettingsConfigDict(env_prefix="HUBSPOT_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {"access_token": "the HubSpot connector is disabled"}

    access_token: SecretStr | None = None
    api_base: str = "https://api.hubapi.com"
    # Unset: links use the portal's own uiDomain (account details), right for EU portals.
    app_base: str | None = None
    # The app's request limit in the portal, shared by every process through Redis:
    # "100/10s" (Free, Starter), "190/10s" (Professional, Enterprise); "off" (or 0): none.
    rate_limit: str = "100/10s"
    # How long one call may take to answer before it counts as failed (and is retried):
    # batch calls of 100 records can be slow. Chaos runs and tests set it shorter.
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("api_base", "app_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @property
    def rate(self) -> tuple[int, float] | None:
        """(requests, window seconds) of the shared HubSpot budget; None when off."""
        return parse_rate_limit(self.rate_limit)

    @property
    def enabled(self) -> bool:
        return self.access_token is not None


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
