"""The two servers every process leans on, the queue (`REDIS_URL`) and the ledger
(`DATABASE_URL`): how logs and errors name them, passwords hidden, and what it means when
one cannot be reached, said in one line that names the setting to look at."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from bridge.settings import Settings


class Unreachable(Exception):
    """The queue or the ledger did not answer; the message names the setting."""


def masked(url: str) -> str:
    """The URL with its password replaced by ***, as every log line and error shows it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def queue_name(settings: Settings) -> str:
    if settings.redis_url:
        return f"REDIS_URL {masked(settings.redis_url)}"
    return f"the embedded Valkey under FULLKIT_HOME {settings.home.resolve()}"


def ledger_name(settings: Settings) -> str:
    if settings.database_url:
        return f"DATABASE_URL {masked(settings.database_url)}"
    return f"the SQLite ledger {(settings.home / 'ledger.sqlite3').resolve()}"


def reason(exc: BaseException, settings: Settings | None = None) -> str:
    """The last, most specific clause of a driver's error, without any secret in it."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    lines = str(exc).strip().splitlines()
    words = lines[0] if lines else type(exc).__name__
    words = re.sub(r"^Error -?\d+ connecting to \S+\.\s+", "", words)  # redis-py's prefix
    words = words.rsplit(" failed: ", 1)[-1]  # libpq: "connection to server ... failed: why"
    words = words.strip().rstrip(".") or type(exc).__name__
    for secret in _passwords(settings):
        words = words.replace(secret, "***")
    return words[:200]


def _passwords(settings: Settings | None) -> list[str]:
    if settings is None:
        return []
    urls = (settings.redis_url, settings.database_url)
    return [p for p in (urlsplit(u).password for u in urls if u) if p]


def queue_unreachable(settings: Settings, exc: BaseException) -> Unreachable:
    return Unreachable(f"cannot reach the queue at {queue_name(settings)}: {reason(exc, settings)}")


def ledger_unreachable(settings: Settings, exc: BaseException) -> Unreachable:
    return Unreachable(
        f"cannot reach the ledger at {ledger_name(settings)}: {reason(exc, settings)}"
    )


def ping_queue(settings: Settings, connection: Callable[[], redis.Redis] | None = None) -> None:
    """Raise Unreachable unless the queue answers PING (starting the embedded one if need be)."""
    from bridge.queue import QueueClient, QueueUnavailable, connect

    try:
        client = (
            connection()
            if connection
            else connect(settings, QueueClient(connect_timeout=1.5, read_timeout=2.0))
        )
        try:
            client.ping()
        finally:
            if connection is None:
                client.close()  # an idle connection would keep the embedded server "in use"
    except (redis.RedisError, QueueUnavailable, OSError) as exc:
        raise queue_unreachable(settings, exc) from None


def ping_ledger(settings: Settings, engine: Engine) -> None:
    """Raise Unreachable unless the ledger's database answers."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise ledger_unreachable(settings, exc) from None
