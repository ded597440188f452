"""Per-attempt leases in Redis: one worker at a time, lost soon after its worker dies."""

from __future__ import annotations

import threading

import redis
from redis.exceptions import LockError

# Short, and renewed while the holder lives: a SIGKILLed worker's attempt is free again
# within LEASE_SECONDS, well inside the SPEC's 60-second resume promise.
LEASE_SECONDS = 15.0


def lease_key(attempt_id: int) -> str:
    return f"fullkit:lock:attempt:{attempt_id}"


class Leases:
    """Leases on many attempts at once (a batch), renewed by one thread while held."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._locks: dict[int, redis.lock.Lock] = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def take(self, attempt_id: int) -> bool:
        """True when this process now holds the attempt; False when another one does."""
        lock = self.connection.lock(
            lease_key(attempt_id), timeout=LEASE_SECONDS, blocking=False, thread_local=False
        )
        if not lock.acquire():
            return False
        self._locks[attempt_id] = lock
        return True

    def keep(self) -> None:
        """Renew every lease taken so far until `release` (take them all first)."""
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew, daemon=True)
            self._renewer.start()

    @property
    def held(self) -> list[int]:
        return list(self._locks)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        for lock in self._locks.values():
            try:
                lock.release()
            except (LockError, redis.RedisError):
                pass  # lapsed: the version check stops any stale commit of ours
        self._locks.clear()

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            for lock in list(self._locks.values()):
                try:
                    lock.reacquire()
                except (LockError, redis.RedisError):
                    continue
