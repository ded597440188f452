"""The Salesforce receivers' own settings: which org may send, and the JSON callers' secret."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from bridge.deal_ids import InvalidDealId, salesforce_id18
from kernel.settings import Section

ORG_ID_PREFIX = "00D"  # Salesforce's key prefix of Organization records


def org_id18(raw: str) -> str:
    """An org id in its 18-character form, so a 15-character one compares equal."""
    try:
        value = salesforce_id18(raw)
    except InvalidDealId:
        raise ValueError("must be a Salesforce org id: 15 or 18 letters and digits") from None
    if not value.startswith(ORG_ID_PREFIX):
        raise ValueError(f"must be a Salesforce org id, which starts with {ORG_ID_PREFIX}")
    return value


class SalesforceReceiverSettings(Section):
    model_config = SettingsConfigDict(env_prefix="SALESFORCE_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {
        "org_id": "POST /webhooks/salesforce/outbound answers 503",
        "webhook_secret": "POST /webhooks/salesforce answers 503",
    }

    # Outbound messages carry no signature: the org id they name is what is checked.
    org_id: str | None = None
    webhook_secret: SecretStr | None = None  # signs JSON calls from Flows and Apex

    @field_validator("org_id", mode="before")
    @classmethod
    def _org_id(cls, value: object) -> str | None:
        if value is None or value == "":
            return None
        return org_id18(str(value))

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _secret(cls, value: object) -> object:
        # An empty secret would let anyone sign: it counts as unset.
        return None if value == "" else value
