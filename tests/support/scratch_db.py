"""Scratch databases on the test server (`pg_url`'s), for tests that need a database of their
own: empty, or migrated; dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tasks.store import db


@contextmanager
def scratch_database(pg_url: str, *, migrated: bool = False) -> Iterator[str]:
    """A fresh database on the server of `pg_url` (migrated to head if asked); yields its URL.
    Skips the test if the database user may not CREATE DATABASE."""
    name = f"foldem_scratch_{uuid.uuid4().hex[:10]}"
    admin = db.get_engine(pg_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.ProgrammingError:
        pytest.skip("the test database user may not CREATE DATABASE")
    url = sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            db.migrate(url)
        yield url
    finally:
        db.get_engine(url).dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')

