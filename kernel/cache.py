"""Small facts about a CRM account that many calls need, remembered for every process.

A portal's account details (id, time zone, UI domain) and its owners' ids by email are
asked for by every hand-off, yet change rarely. Asking HubSpot each time costs two of the
six or so calls a deal needs. The runtime hands connectors one `SharedCache` backed by the
queue's Redis, so every worker process asks once per time-to-live; one-off commands and
tests of a single connector get a `LocalCache` of their own (no module global to reset).

A cache never fails a call: Redis unreachable reads as a miss and a write is dropped, and
the CRM is asked as if nothing had been remembered.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis
import structlog

log = structlog.get_logger("fullkit.cache")

KEY_PREFIX = "fullkit:cache"


class SharedCache(Protocol):
    """Text values by key, each forgotten after its time-to-live."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, ttl: float) -> None: ...

    def forget(self, key: str) -> None: ...


def cache_key(*parts: str) -> str:
    """A key naming an account by a digest of what identifies it (never a token itself)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}:{digest}"


class RedisCache:
    """The cache every worker process shares, in the queue's Redis."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def get(self, key: str) -> str | None:
        try:
            value = self.connection.get(key)
        except redis.RedisError as exc:
            log.warning("cache unreachable; asking the CRM", error=type(exc).__name__)
            return None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def set(self, key: str, value: str, ttl: float) -> None:
        try:
            self.connection.set(key, value, px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            log.warning("cache unreachable; not remembered", error=type(exc).__name__)

    def forget(self, key: str) -> None:
        try:
            self.connection.delete(key)
        except redis.RedisError as exc:
            log.warning("cache unreachable; not forgotten", error=type(exc).__name__)


class LocalCache:
    """One object's own memory, for a connector built outside a runtime."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            found = self._values.get(key)
            if found is None:
                return None
            value, expires = found
            if expires <= self._clock():
                del self._values[key]
                return None
            return value

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._values[key] = (value, self._clock() + ttl)

    def forget(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)
