"""The HubSpot receiver's own settings: what checking and filtering webhooks needs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section


class HubSpotReceiverSettings(Section):
    model_config = SettingsConfigDict(env_prefix="HUBSPOT_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {"client_secret": "POST /webhooks/hubspot answers 503"}

    client_secret: SecretStr | None = None  # signs webhooks (v3, v2, v1)
    app_id: str | None = None  # its own writes (changeSource INTEGRATION) are ignored
    # v2/v1 signatures (no timestamp, so replayable) only for senders that cannot sign v3.
    accept_legacy_signatures: bool = False
    # The one portal whose events count; events naming another are refused (400). Unset:
    # the portal a worker learned from the access token's account details, once it has.
    portal_id: int | None = Field(default=None, ge=1)
