"""Per-attempt leases in Redis: one worker at a time, lost soon after its worker dies."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

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

    def take_many(self, attempt_ids: Sequence[int]) -> list[int]:
        """`take` for many attempts in one round trip; the ids this process now holds.

        The same SET NX PX and token a redis-py Lock uses, so each lease is then a Lock
        like those `take` makes (renewed and released the same way).
        """
        tokens = {attempt_id: uuid.uuid4().hex.encode() for attempt_id in attempt_ids}
        pipe = self.connection.pipeline(transaction=False)
        for attempt_id, token in tokens.items():
            pipe.set(lease_key(attempt_id), token, nx=True, px=round(LEASE_SECONDS * 1000))
        taken: list[int] = []
        for (attempt_id, token), acquired in zip(tokens.items(), pipe.execute(), strict=True):
            if not acquired:
                continue
            lock = self.connection.lock(
                lease_key(attempt_id), timeout=LEASE_SECONDS, blocking=False, thread_local=False
            )
            lock.local.token = token
            self._locks[attempt_id] = lock
            taken.append(attempt_id)
        return taken

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
        if self._locks:
            # One round trip for the batch: each lease is deleted only while it is still
            # ours (redis-py's own compare-and-delete script), as Lock.release does.
            pipe = self.connection.pipeline(transaction=False)
            for lock in self._locks.values():
                release = lock.lua_release  # registered when the first Lock was made
                assert release is not None
                release(keys=[lock.name], args=[lock.local.token], client=pipe)
            try:
                pipe.execute(raise_on_error=False)
            except redis.RedisError:
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
