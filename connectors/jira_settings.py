"""The jira target's own settings: JIRA_* (a Jira Cloud site, an account email and its API
token)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section, http_url


class JiraSettings(Section):
    model_config = SettingsConfigDict(env_prefix="JIRA_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {
        "base_url": "the jira ops target is disabled (kits naming it fail their hand-offs)"
    }

    # The site, e.g. https://acme.atlassian.net: its REST API and the links ops clicks.
    base_url: str | None = None
    # Jira Cloud's basic auth: the account's email and an API token of that account.
    email: str | None = None
    # Checked even when unset, so a site without credentials is named by this variable.
    api_token: SecretStr | None = Field(default=None, validate_default=True)
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Jira's search index trails a create by seconds. A retry that finds no issue for its
    # hand-off id trusts that answer only once the create it may have sent is this old.
    search_settle_seconds: float = Field(default=30.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("api_token")
    @classmethod
    def _credentials(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("base_url") and (value is None or not info.data.get("email")):
            raise ValueError("JIRA_BASE_URL needs JIRA_EMAIL and JIRA_API_TOKEN")
        return value

    @property
    def enabled(self) -> bool:
        return self.base_url is not None
