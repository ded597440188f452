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
    """Tries per client (right ones given back), kept in Redis for WINDOW_SECONDS after the first.

    When Redis cannot be reached the throttle lets requests through: the token's length
    (bridge/settings.py) is the real guard, and the API must not go down with the queue.
    """

    def __init__(self, connection: Callable[[], redis.Redis]) -> None:
        # A callable: finding the embedded server may itself fail (QueueUnavailable),
        # and that must mean "throttle unavailable" like any other Redis error.
        self.redis = connection

    def admit(self, client: str) -> int | None:
        """Count this try against `client`; seconds until it may try again, or None now.

        The try is counted before its token is compared, in one round trip: a guesser's
        parallel requests would otherwise all read a count below the limit and all be
        compared. A right token gives its try back (`give_back`).
        """
        try:
            pipe = self.redis().pipeline(transaction=True)
            # The window starts at the first try; later ones do not extend it.
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

    def give_back(self, client: str) -> None:
        """Uncount a try that guessed nothing: the right token, or no token at all."""
        try:
            # Only within a window still open: a DECR on an expired key would leave a
            # count of -1 with no expiry, one extra try forever.
            self.redis().eval(_GIVE_BACK, 1, _KEY + client)
        except (redis.RedisError, QueueUnavailable):
            log.warning("admin login throttle unavailable: Redis unreachable")


_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def authorize(header: str, token: SecretStr | None, client: str, throttle: Throttle) -> None:
    """Raise Refused unless `header` carries the admin token (None: the API is closed)."""
    _not_throttled(client, throttle)
    if not header.startswith("Bearer "):
        throttle.give_back(client)
        ADMIN_AUTH_FAILURES.labels(reason="missing").inc()
        raise Refused(401, "bearer token required")
    _compare(header[len("Bearer ") :], token, client, throttle)


def check(given: str, token: SecretStr | None, client: str, throttle: Throttle) -> None:
    """Raise Refused unless `given` (typed into the console's login form) is the token.

    The same throttle as the API's: a guesser gains nothing by switching doors.
    """
    _not_throttled(client, throttle)
    _compare(given, token, client, throttle)


def _not_throttled(client: str, throttle: Throttle) -> None:
    wait = throttle.admit(client)
    if wait is not None:
        ADMIN_AUTH_FAILURES.labels(reason="throttled").inc()
        raise Refused(429, "too many wrong tokens; try again later", retry_after=wait)


def _compare(given_text: str, token: SecretStr | None, client: str, throttle: Throttle) -> None:
    given = given_text.encode()
    if token is None or not hmac.compare_digest(given, token.get_secret_value().encode()):
        ADMIN_AUTH_FAILURES.labels(reason="wrong").inc()
        # Who and how often, never what was tried: a near-miss token is half a secret.
        log.warning("admin token refused", client=client)
        raise Refused(403, "wrong token")
    throttle.give_back(client)
