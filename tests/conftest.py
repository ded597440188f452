"""Shared fixtures: every test runs on SQLite + embedded Valkey, and again on the machine's
PostgreSQL + Redis when FULLKIT_TEST_DATABASE_URL / FULLKIT_TEST_REDIS_URL are set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask.testing import FlaskClient
from pydantic import SecretStr
from rq import Queue

from bridge.queue import QUEUE_NAME
from bridge.settings import Settings, load_settings
from bridge.valkey import STATE_FILE, EmbeddedValkey
from connectors.hubspot_setup import setup_properties
from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ADMIN_TOKEN = "test-admin-token-long-enough-to-guard"  # FULLKIT_ADMIN_TOKEN needs >= 32
SPEC_ENV = [
    "REDIS_URL", "DATABASE_URL", "FULLKIT_HOME", "FULLKIT_RULES_DIR", "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_CLIENT_SECRET", "HUBSPOT_APP_ID", "HUBSPOT_API_BASE", "HUBSPOT_APP_BASE",
    "SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME",
    "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_CLIENT_ID",
    "SALESFORCE_CLIENT_SECRET", "SALESFORCE_ORG_ID", "SALESFORCE_WEBHOOK_SECRET",
    "FULLKIT_ADMIN_TOKEN", "PORT", "FULLKIT_PUBLIC_URL", "FULLKIT_RETRY_WINDOW_SECONDS",
    "HUBSPOT_RATE_LIMIT", "FULLKIT_BATCH_SIZE", "FORWARDED_ALLOW_IPS",
    "HUBSPOT_ACCEPT_LEGACY_SIGNATURES", "HUBSPOT_PORTAL_ID",
]  # fmt: skip


def secret(value: SecretStr | None) -> str | None:
    """A secret setting's value, for handing it on to a child process in a test."""
    return value.get_secret_value() if value is not None else None


def _backends() -> list[str]:
    real = os.environ.get("FULLKIT_TEST_DATABASE_URL") and os.environ.get("FULLKIT_TEST_REDIS_URL")
    return ["embedded", "real"] if real else ["embedded"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; nothing leaks in from the shell."""
    for name in SPEC_ENV:
        monkeypatch.delenv(name, raising=False)


def _stop_embedded_servers(under: Path) -> None:
    """Stop every embedded Valkey whose home lies under `under`: a test's processes may
    have started one (serve, worker, demo) and exited without the last stop."""
    for state in under.rglob(STATE_FILE):
        try:
            EmbeddedValkey(state.parent).stop()
        except Exception:  # noqa: BLE001 - cleaning up; a half-written state file is fine
            pass


@pytest.fixture(autouse=True)
def _no_embedded_server_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    # Set up first, torn down last: after the test's own processes have stopped.
    uses = "tmp_path" in request.fixturenames
    home: Path | None = request.getfixturevalue("tmp_path") if uses else None
    yield
    if home is not None:
        _stop_embedded_servers(home)


@pytest.fixture(scope="session", autouse=True)
def _no_embedded_server_outlives_the_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    yield
    _stop_embedded_servers(tmp_path_factory.getbasetemp())


def _worker_index(request: pytest.FixtureRequest) -> int:
    name = getattr(request.config, "workerinput", {}).get("workerid", "gw0")
    return int(name.removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def embedded_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("valkey-home"))
    yield valkey.url()
    valkey.stop()


@pytest.fixture(scope="session")
def real_database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database of this xdist worker's own on the given PostgreSQL server."""
    base = os.environ.get("FULLKIT_TEST_DATABASE_URL")
    if not base:
        yield None
        return
    url = sa.make_url(base).set(drivername="postgresql+psycopg")
    name = f"fullkit_test_{_worker_index(request)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    own = url.set(database=name)
    from bridge import db

    engine = sa.create_engine(own)
    db.upgrade(engine)
    engine.dispose()
    yield own.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Backend:
    name: str
    redis_url: str
    database_url: str | None

    def env(self, home: Path) -> dict[str, Any]:
        values: dict[str, Any] = {"FULLKIT_HOME": str(home), "REDIS_URL": self.redis_url}
        if self.database_url:
            values["DATABASE_URL"] = self.database_url
        return values


@pytest.fixture(params=_backends())
def backend(
    request: pytest.FixtureRequest, embedded_redis_url: str, real_database_url: str | None
) -> Iterator[Backend]:
    if request.param == "embedded":
        chosen = Backend("embedded", embedded_redis_url, None)
    else:
        base = redis.Redis.from_url(os.environ["FULLKIT_TEST_REDIS_URL"])
        db_index = 1 + _worker_index(request)
        kwargs = base.connection_pool.connection_kwargs
        url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db_index}"
        chosen = Backend("real", url, real_database_url)
    redis.Redis.from_url(chosen.redis_url).flushdb()
    if chosen.database_url:
        _truncate(chosen.database_url)
    yield chosen


def _truncate(url: str) -> None:
    from bridge.models import Base

    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    with engine.begin() as connection:
        names = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def make_settings(backend: Backend, tmp_path: Path) -> Any:
    def build(**overrides: Any) -> Settings:
        values = {"FULLKIT_RULES_DIR": str(ROOT / "kit_rules"), **backend.env(tmp_path / "home")}
        values.update(overrides)
        return load_settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings(
        HUBSPOT_CLIENT_SECRET="test-client-secret", FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN
    )


# --- the receivers' tests: each module builds its `app`, and reads what got queued ------


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()


def queued(app: Any) -> list[tuple[Any, ...]]:
    queue = Queue(QUEUE_NAME, connection=app.config["FULLKIT"].redis)
    # Each intake job carries a delivery's changes.
    return [tuple(change) for job in queue.jobs for change in job.args[0]]


# --- one loopback HubSpot portal per test module, for the connector tests ------------

APP = "https://app.example.test"


def sandbox_settings(served: RunningSandbox, token: str | None = None) -> Settings:
    values: dict[str, Any] = {
        "HUBSPOT_ACCESS_TOKEN": token or served.access_token,
        "HUBSPOT_API_BASE": served.url,
        "HUBSPOT_APP_BASE": APP,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[RunningSandbox]:
    # One portal per module: stopping a server takes half a second. Tests use their own
    # deals; the rate limit is off here and tested on a sandbox of its own.
    served = start_sandbox(sandbox=HubSpotSandbox(rate_limit=None))
    served.sandbox.seed_default_portal()
    try:
        setup_properties(sandbox_settings(served))
        yield served
    finally:
        served.stop()


@pytest.fixture
def running(shared_sandbox: RunningSandbox) -> RunningSandbox:
    shared_sandbox.sandbox.reset_calls()
    return shared_sandbox
