"""Rejection analytics views and the read-only analyst role.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

Views are read from sql/views/analytics/<view name>.sql (the file stem is the view's name; they
depend only on tables, so their order does not matter). As with 0001: if a later migration
changes a table so that the current view files no longer fit this revision's tables, copy the old
view text into this file instead of reading the files.

The role `foldem_analyst` (NOLOGIN) may read every table and view of the schema, now and later
(default privileges for tables this migrating user creates), and nothing else. Roles belong to
the whole server, not one database, so creating it needs CREATEROLE (or superuser): a migrating
user without it skips the role with a warning, and an administrator runs the GRANTs in
sql/README.md by hand. If the role exists already (another database on the same server, or an
administrator made it), the grants are applied whatever the migrating user's rights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYTICS_VIEWS_DIR = Path(__file__).resolve().parents[2] / "views" / "analytics"
ANALYST_ROLE = "foldem_analyst"
log = logging.getLogger("foldem.migrations")


def view_files() -> list[Path]:
    return sorted(ANALYTICS_VIEWS_DIR.glob("*.sql"))


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _role_exists(conn: sa.Connection, role: str) -> bool:
    return bool(conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                             {"r": role}).scalar())


def grant_analyst_role(conn: sa.Connection, role: str = ANALYST_ROLE) -> bool:
    """Create `role` (NOLOGIN) if needed and allowed, and let it read the current schema.

    Returns False, after a warning saying what to run by hand, when the role does not exist and
    the current user may not create roles."""
    if not _role_exists(conn, role):
        may_create = conn.execute(sa.text(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )).scalar()
        if not may_create:
            log.warning(
                "NOTICE: skipped creating the read-only role %s: database user %s may not "
                "create roles (needs CREATEROLE). The analytics views are in place; an "
                "administrator can create the role and run the GRANTs listed in sql/README.md "
                "(\"A read-only role for analysts\").",
                role, conn.execute(sa.text("SELECT current_user")).scalar())
            return False
        # Another database on this server may be migrating at the same moment: a role that
        # appeared in between is fine.
        conn.execute(sa.text(
            f"DO $$ BEGIN CREATE ROLE {_quote(conn, role)} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
    schema = _quote(conn, conn.execute(sa.text("SELECT current_schema()")).scalar_one())
    quoted = _quote(conn, role)
    for statement in (
        f"GRANT USAGE ON SCHEMA {schema} TO {quoted}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {quoted}",  # views included
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {quoted}",
    ):
        conn.execute(sa.text(statement))
    return True


def revoke_analyst_role(conn: sa.Connection, role: str = ANALYST_ROLE) -> None:
    """Undo grant_analyst_role in this database; drop the role only if nothing else on the
    server still uses it (grants in another database, or login users that are its members)."""
    if not _role_exists(conn, role):
        return
    schema = _quote(conn, conn.execute(sa.text("SELECT current_schema()")).scalar_one())
    quoted = _quote(conn, role)
    for statement in (
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM {quoted}",
        f"REVOKE SELECT ON ALL TABLES IN SCHEMA {schema} FROM {quoted}",
        f"REVOKE USAGE ON SCHEMA {schema} FROM {quoted}",
    ):
        conn.execute(sa.text(statement))
    has_members = conn.execute(sa.text(
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "WHERE r.rolname = :r"), {"r": role}).scalar()
    if has_members:
        log.warning("kept role %s: other roles are members of it", role)
        return
    # DROP ROLE fails while another database still grants it something; keep it then.
    conn.execute(sa.text(
        f"DO $$ BEGIN DROP ROLE {quoted}; "
        "EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN "
        f"RAISE NOTICE 'kept role {role}: still in use'; END $$"))


def upgrade() -> None:
    for path in view_files():
        # Escaped colons: text() must not read `:name` in the view as a bind parameter.
        op.execute(sa.text(path.read_text(encoding="utf-8").replace(":", "\\:")))
    grant_analyst_role(op.get_bind())


def downgrade() -> None:
    revoke_analyst_role(op.get_bind())
    for path in reversed(view_files()):
        op.execute(f'DROP VIEW IF EXISTS "{path.stem}"')
