"""The Alembic migrations: upgrade/downgrade round trip, concurrency, and agreement with the
Core tables in tasks/store/schema.py (the migration is the source of truth)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql

from foldem import PROJECT_ROOT
from foldem.core.errors import DatabaseError
from tasks.store import db
from tasks.store.schema import metadata
from tasks.store.storage import start_run

# Views from sql/views, and those whose text lives in their migration (0015: run_trends).
VIEWS = {p.stem for p in (PROJECT_ROOT / "sql" / "views").rglob("*.sql")} | {"run_trends"}
TABLES = set(metadata.tables)


def _relations(url: str) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(db.get_engine(url))
    return set(inspector.get_table_names()), set(inspector.get_view_names())


def test_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    assert db.current_revision(scratch_url) is None
    db.migrate(scratch_url)
    assert db.current_revision(scratch_url) == db.head_revision()
    assert _relations(scratch_url) == (TABLES | {"alembic_version"}, VIEWS)

    db.downgrade(scratch_url, "base")
    assert db.current_revision(scratch_url) is None
    tables, views = _relations(scratch_url)
    assert tables <= {"alembic_version"} and views == set()

    db.migrate(scratch_url)
    db.migrate(scratch_url)  # at head already: a no-op
    assert _relations(scratch_url) == (TABLES | {"alembic_version"}, VIEWS)
    with db.session_scope(db.get_engine(scratch_url)) as session:
        assert start_run(session, run_id="r", job_name="j", spec={}, spec_hash="h",
                         code_version="v", samples_expected=1) is False


def test_concurrent_migrations_do_not_collide(scratch_url: str) -> None:
    code = "import sys; from tasks.store.db import migrate; migrate(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, scratch_url], cwd=PROJECT_ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert db.current_revision(scratch_url) == db.head_revision()
    with db.get_engine(scratch_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


def test_database_newer_than_the_code_is_a_clear_error(scratch_url: str) -> None:
    db.migrate(scratch_url)
    with db.get_engine(scratch_url).begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(DatabaseError, match="9999_future"):
        db.migrate(scratch_url)


def test_migrations_form_one_line() -> None:
    scripts = ScriptDirectory.from_config(db.alembic_config())
    assert len(scripts.get_heads()) == 1
    assert [s.revision for s in scripts.walk_revisions()][-1] == "0001"


def _ddl_type(column: sa.Column[object]) -> str:
    name = str(column.type.compile(dialect=postgresql.dialect()))
    return {"FLOAT": "DOUBLE PRECISION"}.get(name, name)


def test_core_tables_match_the_migrated_schema(pg_url: str) -> None:
    migrated = sa.MetaData()
    migrated.reflect(db.get_engine(pg_url), only=sorted(TABLES))
    inspector = sa.inspect(db.get_engine(pg_url))
    for name, core in metadata.tables.items():
        real = migrated.tables[name]
        assert [c.name for c in core.columns] == [c.name for c in real.columns], name
        for col in core.columns:
            other = real.c[col.name]
            assert (_ddl_type(col), col.nullable) == (_ddl_type(other), other.nullable), \
                f"{name}.{col.name}"
        assert [c.name for c in core.primary_key] == [c.name for c in real.primary_key]
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
        assert {tuple(c.name for c in u.columns) for u in core.constraints
                if isinstance(u, sa.UniqueConstraint)} == uniques, name
        assert {(fk.parent.name, fk.target_fullname) for fk in core.foreign_keys} == \
            {(fk.parent.name, fk.target_fullname) for fk in real.foreign_keys}, name
        assert {tuple(c.name for c in i.columns) for i in core.indexes} == \
            {tuple(i["column_names"]) for i in inspector.get_indexes(name)
             if not i.get("duplicates_constraint")}, name
