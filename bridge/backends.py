"""The two servers every process leans on, the queue (`REDIS_URL`) and the ledger
(`DATABASE_URL`): how logs and errors name them, passwords hidden, and what it means when
one cannot be reached, said in one line that names the setting to look at."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from bridge.settings import Settings
from kernel.settings import hide_url_passwords


class Unreachable(Exception):
    """The queue or the ledger did not answer; the message names the setting."""


def masked(url: SecretStr | str) -> str:
    """The URL with its password replaced by ***, as every log line and error shows it.

    A database URL is read as SQLAlchemy reads it (which takes `/` or `#` in a password
    as they are), a queue URL as redis-py does, so what is hidden is the password that
    the client sends.
    """
    text = url.get_secret_value() if isinstance(url, SecretStr) else url
    if urlsplit(text).scheme.split("+")[0] in {"postgresql", "postgres", "sqlite"}:
        try:
            # Its query may name the password too (libpq's `?password=`).
            return hide_url_passwords(make_url(text).render_as_string(hide_password=True))
        except (ArgumentError, ValueError):
            return hide_url_passwords(text)
    parts = urlsplit(text)
    try:
        password = parts.password
    except ValueError:
        password = None
    if password is None:
        return hide_url_passwords(text)
    host = parts.netloc.rpartition("@")[2]
    shown = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return hide_url_passwords(shown)


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
    return hide_url_passwords(words)[:200]


def _passwords(settings: Settings | None) -> list[str]:
    """Both URLs' passwords, as written and as the drivers decode them, longest first."""
    if settings is None:
        return []
    found: set[str] = set()
    for secret in (settings.redis_url, settings.database_url):
        if secret is None:
            continue
        url = secret.get_secret_value()
        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            written = [parts.password, *parse_qs(parts.query).get("password", [])]
            found |= {word for word in written if word} | {unquote(w) for w in written if w}
        with contextlib.suppress(ArgumentError, ValueError):
            decoded = make_url(url).password
            if decoded:
                found.add(str(decoded))
    return sorted(found, key=len, reverse=True)


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
