"""Who may use the admin API: the bearer token, and a throttle on wrong guesses.

Wrong tokens are counted per client in Redis, so every gunicorn process and every web
instance sees the same count; after MAX_FAILURES in WINDOW_SECONDS the client is answered
429 until the window ends, even with the right token (a guesser cannot tell a hit).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import redis
import structlog
from pydantic import SecretStr

from bridge.metrics import ADMIN_AUTH_FAILURES
from bridge.queue import QueueUnavailable

log = structlog.get_logger("fullkit.admin")

MAX_FAILURES = 10
WINDOW_SECONDS = 15 * 60
_KEY = "fullkit:admin-auth-failures:"


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Throttle:
    """Failed attempts per client, kept in Redis for WINDOW_SECONDS after the first one.

    When Redis cannot be reached the throttle lets requests through: the token's length
    (bridge/settings.py) is the real guard, and the API must not go down with the queue.
    """

    def __init__(self, connection: Callable[[], redis.Redis]) -> None:
        # A callable: finding the embedded server may itself fail (QueueUnavailable),
        # and that must mean "throttle unavailable" like any other Redis error.
        self.redis = connection

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may try now."""
        try:
            pipe = self.redis().pipeline(transaction=False)
            pipe.get(_KEY + client)
            pipe.ttl(_KEY + client)
            count, ttl = pipe.execute()
        except (redis.RedisError, QueueUnavailable):
            log.warning("admin login throttle unavailable: Redis unreachable")
            return None
        if count is None or int(count) < MAX_FAILURES:
            return None
        return max(int(ttl), 1)

    def failed(self, client: str) -> int | None:
        """Count a wrong token; seconds to wait when it is past the limit, else None.

        Counting and judging are one step: parallel guesses that each read the count
        first and recorded their failure later would all be judged under the limit.
        """
        try:
            pipe = self.redis().pipeline(transaction=True)
            # The window starts at the first failure; later ones do not extend it.
            pipe.set(_KEY + client, 0, ex=WINDOW_SECONDS, nx=True)
            pipe.incr(_KEY + client)
            pipe.ttl(_KEY + client)
            _, count, ttl = pipe.execute()
        except (redis.RedisError, QueueUnavailable):
            log.warning("admin login throttle unavailable: Redis unreachable")
            return None
        if int(count) <= MAX_FAILURES:
            return None
        return max(int(ttl), 1)


def authorize(header: str, token: SecretStr | None, client: str, throttle: Throttle) -> None:
    """Raise Refused unless `header` carries the admin token (None: the API is closed)."""
    if not header.startswith("Bearer "):
        _not_throttled(client, throttle)
        ADMIN_AUTH_FAILURES.labels(reason="missing").inc()
        raise Refused(401, "bearer token required")
    _judge(header[len("Bearer ") :], token, client, throttle)


def check(given: str, token: SecretStr | None, client: str, throttle: Throttle) -> None:
    """Raise Refused unless `given` (typed into the console's login form) is the token.

    The same throttle as the API's: a guesser gains nothing by switching doors.
    """
    _judge(given, token, client, throttle)


def _not_throttled(client: str, throttle: Throttle) -> None:
    wait = throttle.retry_after(client)
    if wait is not None:
        _throttled(wait)


def _throttled(wait: int) -> None:
    ADMIN_AUTH_FAILURES.labels(reason="throttled").inc()
    raise Refused(429, "too many wrong tokens; try again later", retry_after=wait)


def _judge(given_text: str, token: SecretStr | None, client: str, throttle: Throttle) -> None:
    """Compare, then ask the throttle: a wrong guess is answered by the count its own
    failure made; a right token is refused (429, so no hit shows) once the limit is reached.
    A client's parallel right-token requests never count against it."""
    given = given_text.encode()
    if token is not None and hmac.compare_digest(given, token.get_secret_value().encode()):
        _not_throttled(client, throttle)
        return
    wait = throttle.failed(client)
    if wait is not None:
        _throttled(wait)
    ADMIN_AUTH_FAILURES.labels(reason="wrong").inc()
    # Who and how often, never what was tried: a near-miss token is half a secret.
    log.warning("admin token refused", client=client)
    raise Refused(403, "wrong token")
