"""Alembic environment: runs on the engine Fullkit hands over (see bridge.db)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from bridge.models import Base

engine = context.config.attributes["engine"]


def run(connection: Connection) -> None:
    with connection.begin():
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        context.run_migrations()


with engine.connect() as connection:
    if connection.dialect.name != "sqlite":
        run(connection)
    else:
        # SQLite alters a table by copying it and dropping the original, which other
        # tables' rows refer to. Its foreign keys can only be switched off outside a
        # transaction, so they are, for the migration, and checked as a whole after it.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
        try:
            run(connection)
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration left rows without their parent: {broken}")
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
