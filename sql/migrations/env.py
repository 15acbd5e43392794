"""Alembic environment for foldem.

foldem runs migrations in code (`tasks.store.db.migrate`), handing over a connection that already
holds the migration advisory lock inside its transaction; Alembic then runs in that transaction
(it does not begin its own), so concurrent migrators queue up and the schema moves atomically.

Run by hand (`alembic -c sql/alembic.ini upgrade head`, or `revision --autogenerate`), it
connects to `sqlalchemy.url` from the ini file if set, else to the URL foldem itself would use
(DATABASE_URL, else the embedded server), and takes the same lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from tasks.store.schema import metadata

config = context.config
# For `alembic revision --autogenerate` (compare with tasks/store/schema.py).
target_metadata = metadata
MIGRATION_LOCK_KEY = 0x666F6C64656D  # the same key as tasks.store.db._MIGRATION_LOCK_KEY


def run_on(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or "postgresql+psycopg://"
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    from tasks.store.db import get_engine, resolve_database_url

    url = config.get_main_option("sqlalchemy.url") or resolve_database_url()
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        run_on(conn)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
