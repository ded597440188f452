"""A per-attempt lease in Redis: one worker at a time, lost soon after its worker dies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

# Short, and renewed while the holder lives: a SIGKILLed worker's attempt is free again
# within LEASE_SECONDS, well inside the SPEC's 60-second resume promise.
LEASE_SECONDS = 15.0


def lease_key(attempt_id: int) -> str:
    return f"fullkit:lock:attempt:{attempt_id}"


@contextmanager
def attempt_lease(connection: redis.Redis, attempt_id: int) -> Iterator[bool]:
    """Yields True while this process holds the attempt, False when another one does."""
    # Not thread-local: the renewer thread must see the token the job thread acquired.
    lock = connection.lock(
        lease_key(attempt_id), timeout=LEASE_SECONDS, blocking=False, thread_local=False
    )
    if not lock.acquire():
        yield False
        return
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, stop), daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except LockError:
            pass  # it expired (the renewer could not reach Redis): nothing to release


def _renew(lock: redis.lock.Lock, stop: threading.Event) -> None:
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            lock.reacquire()
        except (LockError, redis.RedisError):
            return  # lost it: the optimistic version check stops a stale commit
