"""The Salesforce connector's own settings: SALESFORCE_* (names as in the SPEC)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section, http_url

DEFAULT_API_VERSION = "59.0"


class SalesforceSettings(Section):
    model_config = SettingsConfigDict(env_prefix="SALESFORCE_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {"instance_url": "the Salesforce connector is disabled"}

    # Used exactly as given, scheme included: an http:// URL (a loopback sandbox) is
    # reached over plain HTTP although simple-salesforce builds https:// URLs itself.
    instance_url: str | None = None
    # Three ways in, tried in this order: a ready session, client credentials through an
    # External Client App (server-to-server, Salesforce's way since connected apps went),
    # or username + password + security token for orgs that still allow it.
    access_token: SecretStr | None = None
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    api_version: str = DEFAULT_API_VERSION
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Case target: the object and (optional) record type's DeveloperName of the onboarding
    # record; a kit's `ops` keys override them.
    case_object: str = "Case"
    case_record_type: str | None = None

    @field_validator("instance_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value.rstrip("/")) if value else None

    @model_validator(mode="after")
    def _one_login(self) -> SalesforceSettings:
        if self.instance_url is None:
            return self
        if self.client_id is not None and self.client_secret is None:
            raise ValueError("SALESFORCE_CLIENT_ID needs SALESFORCE_CLIENT_SECRET")
        if self.username is not None and self.password is None:
            raise ValueError("SALESFORCE_USERNAME needs SALESFORCE_PASSWORD")
        return self

    @property
    def login_mode(self) -> str | None:
        """'token', 'client_credentials' or 'password'; None: no credentials at all."""
        if self.access_token is not None:
            return "token"
        if self.client_id is not None and self.client_secret is not None:
            return "client_credentials"
        if self.username is not None and self.password is not None:
            return "password"
        return None

    @property
    def enabled(self) -> bool:
        return self.instance_url is not None and self.login_mode is not None
