"""`fullkit serve`: gunicorn hosting the app factory, as the Procfile's web process does."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import Any

import structlog
from gunicorn.app.base import BaseApplication
from gunicorn.config import Config

from bridge import backends, db, gunicorn_config
from bridge.logging import configure_logging
from bridge.settings import MIN_ADMIN_TOKEN_LENGTH, Settings
from bridge.valkey import EmbeddedValkey
from kernel.settings import Section

log = structlog.get_logger("fullkit.serve")

# What each unset secret switches off, so an operator learns it from the first lines;
# receivers and connectors say it of their own (Section.WHEN_UNSET).
UNSET_SECRETS = (("admin_token", "FULLKIT_ADMIN_TOKEN", "the hand-off API refuses every request"),)


class CannotServe(Exception):
    """serve must not start; the message is the one line to show."""


class PortUnavailable(CannotServe):
    """serve cannot listen where it was asked to."""


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from bridge.app import create_app

        return create_app()


def serve_forever(
    settings: Settings,
    host: str,
    port: int,
    workers: int | None,
    sections: Sequence[type[Section]] = (),
    notes: Sequence[str] = (),
) -> None:
    configure_logging()
    check_admin_token(settings)
    check_port(host, port)
    for line in [*unset_secrets(settings, sections), *notes]:
        log.warning(line)
    _report_backends(settings)
    url = f"http://{host}:{port}"

    def when_ready(server: Any) -> None:
        log.info(f"listening on {url}", workers=server.num_workers)

    def on_exit(_server: Any) -> None:
        if not settings.redis_url:
            EmbeddedValkey(settings.home).stop_if_unused()

    def on_starting(_server: Any) -> None:
        gunicorn_config.raise_open_file_limit()
        gunicorn_config.prepare_metrics_dir(gunicorn_config.metrics_dir(settings.home))

    _Gunicorn(
        {
            **gunicorn_settings(),
            "bind": f"{host}:{port}",
            # The app trusts X-Forwarded-Host/-For from these peers; gunicorn, the scheme.
            "forwarded_allow_ips": settings.forwarded_allow_ips,
            "workers": workers or gunicorn_config.workers,
            "on_starting": on_starting,
            "when_ready": when_ready,
            "on_exit": on_exit,
        }
    ).run()


def gunicorn_settings() -> dict[str, Any]:
    """The Procfile's settings (bridge/gunicorn_config.py), as gunicorn reads a config module."""
    known = Config().settings
    return {
        name: value
        for name, value in vars(gunicorn_config).items()
        if name in known and not name.startswith("_")
    }


def unset_secrets(settings: Settings, sections: Sequence[type[Section]] = ()) -> list[str]:
    own = [
        f"{name} is not set: {effect}"
        for attribute, name, effect in UNSET_SECRETS
        if getattr(settings, attribute) is None
    ]
    return own + [line for cls in sections for line in settings.section(cls).unset()]


def check_admin_token(settings: Settings) -> None:
    """A short admin token is a guessable password in front of every deal's history."""
    if settings.admin_token_too_short:
        raise CannotServe(
            f"FULLKIT_ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters: set a "
            "random one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`, "
            "or unset it to close the API"
        )


def check_port(host: str, port: int) -> None:
    """Refuse at once, in one line, where gunicorn would retry for seconds and then log five."""
    try:
        family, kind, _proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    with socket.socket(family, kind) as sock:
        # As gunicorn binds: connections of an earlier server in TIME_WAIT do not block it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortUnavailable(
                    f"port {port} on {host} is in use: stop what listens there "
                    "or choose another with --port or PORT"
                ) from None
            raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _report_backends(settings: Settings) -> None:
    """serve starts anyway (the SPEC): the log says what /healthz will answer 503 for."""
    try:
        backends.ping_queue(settings)
    except backends.Unreachable as exc:
        log.warning(f"{exc}; receivers answer 503 until it is back")
    engine = db.make_engine(settings)
    try:
        backends.ping_ledger(settings, engine)
    except backends.Unreachable as exc:
        log.warning(f"{exc}; /healthz answers 503 until it is back")
    finally:
        engine.dispose()
