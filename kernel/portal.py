"""The CRM account (HubSpot portal) a deployment serves, as a worker learned it.

Only workers call the CRM, so only they can learn which portal the access token belongs
to (from its account details). They keep the id in Redis, where the receivers read it to
refuse events of another portal that an app installed in several portals signs with the
same client secret. An operator's `HUBSPOT_PORTAL_ID` wins over it.
"""

from __future__ import annotations

import redis

KEY_PREFIX = "fullkit:portal:"


def remember(connection: redis.Redis, crm: str, portal_id: str) -> None:
    try:
        connection.set(KEY_PREFIX + crm, portal_id)
    except redis.RedisError:
        pass  # learned again by the next process that reads the account details


def recall(connection: redis.Redis, crm: str) -> str | None:
    """The stored id, or None; raises RedisError when Redis cannot be reached."""
    value = connection.get(KEY_PREFIX + crm)
    return value.decode() if isinstance(value, bytes) else value
