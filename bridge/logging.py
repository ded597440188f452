"""structlog set-up: one JSON-ish line per event, secrets never passed in.

As a second line of defence every line, Fullkit's own and the libraries' (gunicorn, RQ,
SQLAlchemy, redis-py), has the password of any URL in it written *** before it is
written out: a driver's error may repeat the database or queue URL it was given.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from kernel.settings import hide_url_passwords

_configured = False


def hide_passwords(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: URL passwords in any string value of the event written ***."""
    return {
        key: hide_url_passwords(value) if isinstance(value, str) else value
        for key, value in event.items()
    }


class PasswordFilter(logging.Filter):
    """For the standard library's records: the formatted message with URL passwords hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = hide_url_passwords(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's last line repeats the exception's message, URL and all.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = hide_url_passwords(text)
        return True


def configure_logging(level: int = logging.INFO) -> None:
    global _configured
    # Every call: gunicorn sets up its own handlers after the first one (in its workers).
    _filter_handlers()
    if _configured:
        return
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    _filter_handlers()
    # Migration chatter on every start of serve/worker tells an operator nothing.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            hide_passwords,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    _configured = True


def _filter_handlers() -> None:
    # gunicorn's loggers do not propagate: their handlers need the filter of their own.
    for name in ("", "gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, PasswordFilter) for f in handler.filters):
                handler.addFilter(PasswordFilter())
