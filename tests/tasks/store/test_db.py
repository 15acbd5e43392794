"""tasks/store/db.py and `foldem db`: URL resolution, errors users see, sessions, the embedded
server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, text

from foldem import PROJECT_ROOT
from foldem.cli.main import main
from foldem.core.errors import ConfigError, DatabaseError
from foldem.core.settings import Settings, get_settings
from tasks.store import db
from tasks.store.embedded_pg import one_line
from tasks.store.schema import runs


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
              database_url: str | None) -> Settings:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    if database_url is not None:
        monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("FOLDEM_STATE_DIR", str(tmp_path / "state"))
    return Settings()


@pytest.mark.parametrize(("env", "spec", "expected"), [
    ("postgresql://e:pw@envhost/db", "postgresql://s@spechost/db",
     "postgresql+psycopg://e:pw@envhost/db"),
    (None, "postgres://s@spechost:6543/db", "postgresql+psycopg://s@spechost:6543/db"),
    ("", "postgresql+psycopg://s@spechost/db", "postgresql+psycopg://s@spechost/db"),
    (None, None, "EMBEDDED"),
    ("  ", "", "EMBEDDED"),
])
def test_resolve_database_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         env: str | None, spec: str | None,
                                         expected: str) -> None:
    started: list[Path] = []

    def fake_embedded(state_dir: Path) -> str:
        started.append(state_dir)
        return "EMBEDDED"

    monkeypatch.setattr(db, "ensure_embedded_postgres", fake_embedded)
    settings = _settings(monkeypatch, tmp_path, env)
    assert db.resolve_database_url(spec_url=spec, settings=settings) == expected
    assert started == ([settings.resolved_state_dir] if expected == "EMBEDDED" else [])


@pytest.mark.parametrize(("url", "normalized"), [
    ("postgresql://u:p@h:5433/d", "postgresql+psycopg://u:p@h:5433/d"),
    ("postgres://u@h/d?sslmode=require", "postgresql+psycopg://u@h/d?sslmode=require"),
    ("postgresql+psycopg://u@/d?host=/run/pg", "postgresql+psycopg://u@/d?host=/run/pg"),
    (" postgresql://u:p%40ss@h/d ", "postgresql+psycopg://u:p%40ss@h/d"),
])
def test_normalize_url_accepts_postgres_schemes(url: str, normalized: str) -> None:
    assert db.normalize_url(url) == normalized
    assert db.libpq_url(url) == normalized.replace("postgresql+psycopg://", "postgresql://")


@pytest.mark.parametrize("url", [
    "sqlite:///results.db", "mysql://u:hunter2@h/d", "postgresql+psycopg2://u@h/d", "not a url",
])
def test_other_schemes_are_rejected_with_what_to_set(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, url: str) -> None:
    settings = _settings(monkeypatch, tmp_path, url)
    with pytest.raises(ConfigError) as err:
        db.resolve_database_url(settings=settings)
    assert "DATABASE_URL" in err.value.message and "postgresql://" in err.value.message
    assert "hunter2" not in err.value.message


@pytest.mark.parametrize(("url", "secret"), [
    ("postgresql://u:hunter2@h/d", "hunter2"),
    ("postgresql+psycopg://u:p%40ss%2Fw@h:1/d", "p%40ss"),
    ("postgres://user:s3cr3t@db.example:5432/x?sslmode=require", "s3cr3t"),
])
def test_redact_hides_the_password(url: str, secret: str) -> None:
    shown = db.redact(url)
    assert secret not in shown and "***" in shown


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("action", ["session", "migrate"])
def test_unreachable_database_is_a_database_error(action: str) -> None:
    port = _closed_loopback_port()
    url = f"postgresql://foldem:hunter2@127.0.0.1:{port}/foldem"
    with pytest.raises(DatabaseError) as err:
        if action == "migrate":
            db.migrate(url)
        else:
            with db.session_scope(db.get_engine(url)) as session:
                session.execute(text("SELECT 1"))
    message = err.value.message
    assert f"127.0.0.1:{port}" in message
    assert "refused" in message.lower()
    assert "DATABASE_URL" in message
    assert "hunter2" not in message and "\n" not in message


def test_cli_reports_unreachable_database_without_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://foldem:hunter2@127.0.0.1:{_closed_loopback_port()}/foldem"
    assert main(["db", "migrate", "--database-url", url]) == DatabaseError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("foldem: error: cannot connect to Postgres at 127.0.0.1:")
    assert "Traceback" not in err and "hunter2" not in err


def test_get_engine_is_cached_per_url() -> None:
    a = db.get_engine("postgres://u@h/d")
    assert db.get_engine("postgresql+psycopg://u@h/d") is a
    assert db.get_engine("postgresql+psycopg://u@h/other") is not a


def test_session_scope_commits_or_rolls_back(pg_url: str) -> None:
    kept, dropped = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    row = {"job_name": "j", "spec": {}, "spec_hash": "h", "code_version": "v",
           "status": "running", "samples_expected": 0}
    engine = db.get_engine(pg_url)
    with db.session_scope(engine) as session:
        session.execute(runs.insert().values(run_id=kept, **row))
    with pytest.raises(RuntimeError), db.session_scope(engine) as session:
        session.execute(runs.insert().values(run_id=dropped, **row))
        raise RuntimeError("boom")
    with db.session_scope(engine) as session:
        found = set(session.scalars(select(runs.c.run_id).where(runs.c.run_id.in_([kept,
                                                                                 dropped]))))
        session.execute(runs.delete().where(runs.c.run_id == kept))
    assert found == {kept}


def test_missing_schema_says_to_migrate(pg_url: str) -> None:
    with pytest.raises(DatabaseError, match="foldem db migrate"), \
            db.session_scope(db.get_engine(pg_url)) as session:
        session.execute(text("SELECT * FROM no_such_table_here"))


def test_embedded_server_is_shared_by_concurrent_starters_and_outlives_them(
        fresh_state_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Three `foldem db url --libpq` processes start at once on a fresh state dir: one server
    is initialised, all print the same URL, none hangs on the server holding its stdout (as in
    `psql "$(foldem db url --libpq)"`), and the server still answers after they all exited."""
    state = fresh_state_dir
    env = {**os.environ, "FOLDEM_STATE_DIR": str(state)}
    env.pop("DATABASE_URL", None)
    procs = [subprocess.Popen([sys.executable, "-m", "foldem.cli.main", "db", "url", "--libpq"],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=90) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outputs]
        urls = {out.strip() for out, _ in outputs}
        assert len(urls) == 1
        url = urls.pop()
        assert url.startswith("postgresql://postgres@/foldem?host=")
        with psycopg.connect(url) as conn:  # every process that started it has exited
            assert conn.execute("SELECT current_database()").fetchone() == ("foldem",)
        assert db.ensure_embedded_postgres(state) == url.replace("postgresql://",
                                                                 "postgresql+psycopg://")
    finally:
        monkeypatch.setenv("FOLDEM_STATE_DIR", str(state))
        monkeypatch.delenv("DATABASE_URL", raising=False)
        get_settings.cache_clear()
        try:
            assert main(["db", "stop"]) == 0
            assert main(["db", "stop"]) == 0
        finally:
            get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "stopped the embedded PostgreSQL" in out and "was not running" in out
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_embedded_start_failure_says_why(fresh_state_dir: Path) -> None:
    (fresh_state_dir / "postgres").write_text("a file where the data directory should be")
    with pytest.raises(DatabaseError) as err:
        db.ensure_embedded_postgres(fresh_state_dir)
    assert "cannot start the embedded Postgres" in err.value.message
    assert "Not a directory" in err.value.message and "DATABASE_URL" in err.value.message


@pytest.mark.parametrize(("message", "secret", "expected"), [
    ('at "127.0.0.1", port 4398 failed: is it accepting', "p",
     'at "127.0.0.1", port 4398 failed: is it accepting'),
    ("postgresql://u:p@h:1/db password=p\nagain", "p",
     "postgresql://u:***@h:1/db password=*** again"),
    ("password='s3.cr3t' rejected", "s3.cr3t", "password='***' rejected"),
    ("no secret here", None, "no secret here"),
])
def test_one_line_masks_the_password_field_not_its_characters(
        message: str, secret: str | None, expected: str) -> None:
    assert one_line(message, secret) == expected
