"""Engine, sessions and schema migrations of the ledger."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import sessionmaker

from bridge.home import exclusive, private_home
from bridge.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock key of the migrations: any fixed number other programs on the
# database are unlikely to pick; this one is crc32("fullkit migrations").
MIGRATION_LOCK_KEY = zlib.crc32(b"fullkit migrations")


class SchemaOutdated(Exception):
    pass


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        private_home(settings.home)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args={"connect_timeout": 3}
    )


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets the web app read while a worker writes; concurrent writers wait their turn.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to head, one process at a time.

    serve and worker started together on a fresh home both find no schema; unserialised,
    both create the tables and one dies (`table attempts already exists`). The second to
    get the lock finds the schema at head and has nothing left to do.
    """
    with migration_lock(engine):
        command.upgrade(alembic_config(engine), "head")


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Exclude other migrations of the same database, in any process on any machine that
    can reach it: a PostgreSQL advisory lock, or for SQLite a file lock beside the file."""
    if engine.dialect.name == "postgresql":
        # Its own connection, outside any transaction: the lock is the session's, so it
        # holds across the migration's own commits and goes with a process that dies.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield  # nothing another process could migrate at the same time
        return
    # Beside the file rather than in FULLKIT_HOME, so that it also serialises processes
    # with different homes sharing one DATABASE_URL=sqlite:///… (the default ledger is
    # in FULLKIT_HOME, and so is its lock).
    path = Path(database)
    with exclusive(path.with_name(f"{path.name}.migration-lock")):
        yield


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def prepare(engine: Engine, settings: Settings) -> None:
    """SQLite default: bring the schema up to date. A configured server: refuse an old one."""
    if settings.uses_default_database:
        upgrade(engine)
        return
    if current_revision(engine) != head_revision():
        raise SchemaOutdated("the ledger schema is not up to date: run `fullkit db upgrade`")
