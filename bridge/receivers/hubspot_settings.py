"""The HubSpot receiver's own settings: what checking and filtering webhooks needs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from kernel.settings import Section


class HubSpotReceiverSettings(Section):
    model_config = SettingsConfigDict(env_prefix="HUBSPOT_", extra="ignore")
    WHEN_UNSET: ClassVar[dict[str, str]] = {"client_secret": "POST /webhooks/hubspot answers 503"}

    client_secret: SecretStr | None = None  # signs webhooks (v3, v2, v1)
    app_id: str | None = None  # its own writes (changeSource INTEGRATION) are ignored
