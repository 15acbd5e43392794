"""The analytics views and the analyst role of migration 0005, on real Postgres.

Runs are made of made-up samples (`Spec`) saved with tasks.store.storage.save_results inside the
rolled-back `db_session`, each under a fresh run id and endpoint name, so the views' numbers can
be checked exactly whatever else the test database holds.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from foldem import PROJECT_ROOT
from tasks.records.models import RejectionRecord, SampleResult
from tasks.store import db
from tasks.store.storage import save_results
from tests.support.samples import DAY1, DAY2, Spec, save_run

ANALYTICS_VIEWS = sorted(p.stem for p in (PROJECT_ROOT / "sql" / "views" / "analytics")
                         .glob("*.sql"))


def _select(session: Session, sql: str, **params: Any) -> list[sa.Row[Any]]:
    return list(session.execute(sa.text(sql), params))


# ----------------------------------------------------------------------- rejection rates


RATE_CASES = {
    "one stage, two validators": (
        [Spec()] * 6 + [Spec(rejected_by="arithmetic", cut=True, completion=40)] * 3
        + [Spec(rejected_by="reference_answer")],
        {("2026-03-01", "solve", "m1", "arithmetic"): (3, 10, 30.0),
         ("2026-03-01", "solve", "m1", "reference_answer"): (1, 10, 10.0)},
        {("2026-03-01", "solve", "m1"): (10, 4, 3, 0)}),
    "rejected in the first of two stages": (
        [Spec(stages=("plan",), rejected_by="format")]
        + [Spec(stages=("plan", "solve"))] * 2
        + [Spec(stages=("plan", "solve"), rejected_by="arithmetic", cut=True)],
        {("2026-03-01", "plan", "m1", "format"): (1, 4, 25.0),
         ("2026-03-01", "solve", "m1", "arithmetic"): (1, 3, 33.33)},
        {("2026-03-01", "plan", "m1"): (4, 1, 0, 0), ("2026-03-01", "solve", "m1"): (3, 1, 1, 0)}),
    "days split at midnight UTC": (
        [Spec(day=DAY1), Spec(day=DAY1, rejected_by="x"),
         Spec(day=DAY2, rejected_by="x"), Spec(day=DAY2, rejected_by="x")],
        {("2026-03-01", "solve", "m1", "x"): (1, 2, 50.0),
         ("2026-03-02", "solve", "m1", "x"): (2, 2, 100.0)},
        {("2026-03-01", "solve", "m1"): (2, 1, 0, 0), ("2026-03-02", "solve", "m1"): (2, 2, 0, 0)}),
    "two models, an endpoint error": (
        [Spec(model="m1"), Spec(model="m1", error="timeout", failed=True),
         Spec(model="m1", rejected_by="x"), Spec(model="m2", rejected_by="x")],
        {("2026-03-01", "solve", "m1", "x"): (1, 3, 33.33),
         ("2026-03-01", "solve", "m2", "x"): (1, 1, 100.0)},
        {("2026-03-01", "solve", "m1"): (3, 1, 0, 1), ("2026-03-01", "solve", "m2"): (1, 1, 0, 0)}),
}


@pytest.mark.parametrize(("specs", "by_validator", "by_stage"), RATE_CASES.values(),
                         ids=RATE_CASES.keys())
def test_rejection_rates_by_validator_stage_model_and_day(
        db_session: Session, specs: list[Spec],
        by_validator: dict[tuple[str, ...], tuple[int, int, float]],
        by_stage: dict[tuple[str, ...], tuple[int, int, int, int]]) -> None:
    run_id, endpoint = save_run(db_session, specs)
    rows = _select(db_session, "SELECT * FROM rejection_rate_daily WHERE run_id = :r", r=run_id)
    assert {r.endpoint for r in rows} == {endpoint}
    assert {(str(r.day), r.stage, r.model, r.validator):
            (r.rejections, r.samples_in_stage, float(r.rejection_pct)) for r in rows} \
        == by_validator
    rows = _select(db_session, "SELECT * FROM stage_outcomes_daily WHERE run_id = :r", r=run_id)
    assert {(str(r.day), r.stage, r.model):
            (r.samples, r.rejected, r.aborted_calls, r.errored_calls) for r in rows} == by_stage


def test_a_rejection_without_an_endpoint_call_still_counts(db_session: Session) -> None:
    """A stage that calls no endpoint (e.g. a duplicate filter): NULL endpoint and rate."""
    run_id, _ = save_run(db_session, [Spec()])
    save_results(db_session, results=[SampleResult(
        run_id=run_id, prompt_id="dup", sample_index=0, status="rejected", problem="made-up",
        rejection=RejectionRecord(stage="dedup", checkpoint=0, validator="near_duplicate",
                                  reason_code="near_duplicate"))])
    row = _select(db_session, "SELECT * FROM rejection_rate_daily WHERE run_id = :r", r=run_id)
    assert [(r.stage, r.validator, r.rejections, r.endpoint, r.samples_in_stage)
            for r in row] == [("dedup", "near_duplicate", 1, None, None)]


# ----------------------------------------------------------------------------- tokens


TOKEN_CASES = {
    "accepted and a cut rejection": (
        [Spec(completion=100), Spec(completion=100),
         Spec(completion=30, cut=True, rejected_by="arithmetic")],
        {("solve", "server_usage"): (3, 1, 60, 230, 30, 70, 23.3)}),
    "estimated counts apart from server usage": (
        [Spec(completion=100), Spec(completion=40, cut=True, rejected_by="x",
                                    count_source="tokenizer_estimate", prompt=None),
         Spec(completion=100, rejected_by="reference_answer")],
        {("solve", "server_usage"): (2, 0, 40, 200, 100, 0, 0.0),
         ("solve", "tokenizer_estimate"): (1, 1, 0, 40, 40, 60, 60.0)}),
    "two stages": (
        [Spec(stages=("plan", "solve"), completion=50),
         Spec(stages=("plan", "solve"), completion=50, cut=True, rejected_by="x")],
        {("plan", "server_usage"): (2, 0, 40, 100, 50, 0, 0.0),
         ("solve", "server_usage"): (2, 1, 40, 100, 50, 50, 33.3)}),
}


@pytest.mark.parametrize(("specs", "expected"), TOKEN_CASES.values(), ids=TOKEN_CASES.keys())
def test_tokens_used_and_saved_per_run(db_session: Session, specs: list[Spec],
                                       expected: dict[tuple[str, str], tuple[Any, ...]]) -> None:
    run_id, _ = save_run(db_session, specs)
    rows = _select(db_session, "SELECT * FROM run_token_usage WHERE run_id = :r", r=run_id)
    assert {(r.stage, r.count_source): (
        r.calls, r.aborted_calls, r.prompt_tokens, r.completion_tokens,
        r.completion_tokens_rejected, r.tokens_saved, float(r.saved_pct)) for r in rows} == expected
    assert all(r.total_tokens == r.prompt_tokens + r.completion_tokens for r in rows)
    assert all(r.calls_cut_by_rejection == r.aborted_calls for r in rows)


# ------------------------------------------------------------------------ fire points


@pytest.mark.parametrize(("tokens", "fraction", "cut", "fraction_bucket", "tokens_bucket"), [
    (0, 0.0, True, "0.00-0.25", "0-31"),
    (31, 0.2499, True, "0.00-0.25", "0-31"),
    (32, 0.25, True, "0.25-0.50", "32-63"),
    (99, 0.9999, False, "0.75-1.00", "64-127"),
    (100, 1.0, False, "1.00-1.25", "64-127"),
    (255, 1.99, False, "1.75-2.00", "128-255"),
    (8191, 2.0, False, "2.00+", "4096-8191"),
    (8192, 7.5, False, "2.00+", "8192+"),
    (100_000, None, False, "unknown", "8192+"),
])
def test_where_rejections_fire_buckets(db_session: Session, tokens: int, fraction: float | None,
                                       cut: bool, fraction_bucket: str,
                                       tokens_bucket: str) -> None:
    run_id, _ = save_run(db_session, [
        Spec(rejected_by="v", tokens_at_fire=tokens, fraction_at_fire=fraction, cut=cut)])
    rows = _select(db_session, "SELECT * FROM rejection_fire_points WHERE run_id = :r", r=run_id)
    assert [(r.fraction_bucket, r.tokens_bucket, r.cut_stream, r.rejections,
             r.tokens_at_fire_total) for r in rows] == \
        [(fraction_bucket, tokens_bucket, cut, 1, tokens)]
    row = rows[0]
    if fraction is not None:  # the numeric bounds agree with the label
        upper = float("inf") if row.fraction_to is None else row.fraction_to
        assert row.fraction_from <= fraction < upper
    assert row.tokens_from <= tokens < (row.tokens_to or float("inf"))


def test_fire_points_add_up_by_validator(db_session: Session) -> None:
    run_id, _ = save_run(db_session, [
        Spec(rejected_by="a", tokens_at_fire=40, fraction_at_fire=0.3, cut=True),
        Spec(rejected_by="a", tokens_at_fire=50, fraction_at_fire=0.4, cut=True),
        Spec(rejected_by="a", tokens_at_fire=120, fraction_at_fire=1.2),
        Spec(rejected_by="b", tokens_at_fire=45, fraction_at_fire=0.45)])
    rows = _select(db_session, """
        SELECT validator, fraction_bucket, sum(rejections) AS n, sum(tokens_at_fire_total) AS t,
               coalesce(sum(rejections) FILTER (WHERE cut_stream), 0) AS cut
        FROM rejection_fire_points WHERE run_id = :r
        GROUP BY validator, fraction_bucket ORDER BY 1, 2""", r=run_id)
    assert [tuple(r) for r in rows] == [("a", "0.25-0.50", 2, 90, 2), ("a", "1.00-1.25", 1, 120, 0),
                                        ("b", "0.25-0.50", 1, 45, 0)]


# ------------------------------------------------------------------- endpoint health


HEALTH_CASES = {
    "percentiles, errors, retries": (
        [Spec(ttft_ms=t, duration_ms=d, attempts=a, error=e, failed=e is not None)
         for t, d, a, e in [(10, 100, 1, None), (20, 200, 1, None), (30, 300, 2, None),
                            (40, 400, 3, "HTTP 503"), (None, 1000, 1, "connect timeout")]],
        # p50/p95 as percentile_cont: linear between the closest ranks; NULL TTFTs left out
        (5, 2, 40.0, 8, 3, 2, 3, 4, 25.0, 38.5, 300.0, 880.0)),
    "one call": (
        [Spec(ttft_ms=12.5, duration_ms=2000, completion=100)],
        (1, 0, 0.0, 1, 0, 0, 1, 1, 12.5, 12.5, 2000.0, 2000.0)),
}


@pytest.mark.parametrize(("specs", "expected"), HEALTH_CASES.values(), ids=HEALTH_CASES.keys())
def test_endpoint_errors_and_latency_by_day(db_session: Session, specs: list[Spec],
                                            expected: tuple[Any, ...]) -> None:
    _, endpoint = save_run(db_session, specs)
    rows = _select(db_session, "SELECT * FROM endpoint_health_daily WHERE endpoint = :e",
                   e=endpoint)
    assert len(rows) == 1 and str(rows[0].day) == "2026-03-01" and rows[0].model == "m1"
    r = rows[0]
    assert (r.calls, r.errors, float(r.error_pct), r.attempts, r.retries, r.calls_retried,
            r.max_attempts, r.calls_with_ttft, float(r.p50_ttft_ms), float(r.p95_ttft_ms),
            float(r.p50_duration_ms), float(r.p95_duration_ms)) == expected
    assert float(r.tokens_per_s) == round(1000 * r.completion_tokens
                                          / sum(s.duration_ms for s in specs), 1)


def test_every_view_file_says_what_it_answers() -> None:
    assert len(ANALYTICS_VIEWS) == 5
    for stem in ANALYTICS_VIEWS:
        text = (PROJECT_ROOT / "sql" / "views" / "analytics" / f"{stem}.sql").read_text()
        assert text.startswith(f"-- {stem}: ") and "?" in text.split("CREATE")[0], stem
        assert f"CREATE OR REPLACE VIEW {stem} AS" in text


# ------------------------------------------------------------------------ analyst role


@pytest.fixture
def conn(pg_url: str) -> Iterator[sa.Connection]:
    """A connection in a transaction that is rolled back (role changes included)."""
    with db.get_engine(pg_url).connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


def _migration_0005() -> ModuleType:
    module = ScriptDirectory.from_config(db.alembic_config()).get_revision("0005").module
    assert module is not None
    return module


@pytest.mark.parametrize("relation", ["runs", "samples", "rejections", "ledger", "run_overview",
                                      "rejections_by_validator", *ANALYTICS_VIEWS])
def test_analyst_can_select_every_table_and_view(conn: sa.Connection, relation: str) -> None:
    conn.exec_driver_sql("SET LOCAL ROLE foldem_analyst")
    conn.exec_driver_sql(f"SELECT * FROM {relation} LIMIT 1").all()


@pytest.mark.parametrize("statement", [
    "INSERT INTO runs (run_id, job_name, spec, spec_hash, code_version, status, "
    "samples_expected) VALUES ('x', 'j', '{}', 'h', 'v', 'running', 1)",
    "UPDATE samples SET status = 'accepted'",
    "DELETE FROM ledger",
    "TRUNCATE rejections",
    "CREATE TABLE analyst_scratch (x int)",
    "DROP VIEW rejection_fire_points",
])
def test_analyst_cannot_write(conn: sa.Connection, statement: str) -> None:
    if statement.startswith("CREATE") and (conn.dialect.server_version_info or (0,)) < (15,):
        pytest.skip("before PostgreSQL 15 every role may create tables in schema public")
    conn.exec_driver_sql("SET LOCAL ROLE foldem_analyst")
    with pytest.raises(sa.exc.ProgrammingError) as caught:
        conn.exec_driver_sql(statement)
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)


def test_analyst_can_read_tables_created_later(conn: sa.Connection) -> None:
    """Default privileges: a table a later migration creates is readable without a new GRANT."""
    conn.exec_driver_sql("CREATE TABLE analytics_later (x int)")
    conn.exec_driver_sql("INSERT INTO analytics_later VALUES (7)")
    conn.exec_driver_sql("SET LOCAL ROLE foldem_analyst")
    assert conn.exec_driver_sql("SELECT x FROM analytics_later").scalar() == 7


def test_a_login_user_in_the_analyst_role_reads(conn: sa.Connection) -> None:
    """What sql/README.md tells an administrator to run for a person."""
    conn.exec_driver_sql("CREATE ROLE analytics_test_alice LOGIN PASSWORD 'pw' "
                         "IN ROLE foldem_analyst")
    conn.exec_driver_sql("SET LOCAL ROLE analytics_test_alice")
    conn.exec_driver_sql("SELECT count(*) FROM rejection_rate_daily").scalar()
    with pytest.raises(sa.exc.ProgrammingError):
        conn.exec_driver_sql("DELETE FROM runs")


def test_role_is_created_when_the_migrating_user_may(conn: sa.Connection) -> None:
    role = f"analytics_test_{uuid.uuid4().hex[:8]}"
    assert _migration_0005().grant_analyst_role(conn, role) is True
    login, = conn.execute(sa.text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"),
                          {"r": role}).one()
    assert login is False
    assert conn.execute(sa.text(
        "SELECT has_table_privilege(:r, 'rejection_rate_daily', 'SELECT'), "
        "has_table_privilege(:r, 'runs', 'INSERT')"), {"r": role}).one() == (True, False)


def test_role_is_skipped_with_a_notice_without_createrole(
        conn: sa.Connection, caplog: pytest.LogCaptureFixture) -> None:
    role = f"analytics_test_{uuid.uuid4().hex[:8]}"
    conn.exec_driver_sql("CREATE ROLE analytics_test_migrator NOCREATEROLE")
    conn.exec_driver_sql("SET LOCAL ROLE analytics_test_migrator")
    with caplog.at_level(logging.WARNING, logger="foldem.migrations"):
        assert _migration_0005().grant_analyst_role(conn, role) is False
    assert f"skipped creating the read-only role {role}" in caplog.text
    assert "analytics_test_migrator may not create roles" in caplog.text
    assert "sql/README.md" in caplog.text
    assert conn.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :r"),
                        {"r": role}).scalar() == 0


# --------------------------------------------------------------------- migration round trip


#: Every view at the head revision (run_trends: its text is in migration 0015).
AT_HEAD = {"run_overview", "rejections_by_validator", *ANALYTICS_VIEWS, "run_trends"}


def test_downgrade_drops_the_views_and_grants_but_keeps_a_shared_role(scratch_url: str) -> None:
    def state() -> tuple[set[str], bool, bool]:
        engine = db.get_engine(scratch_url)
        with engine.connect() as c:
            role = c.exec_driver_sql(
                "SELECT count(*) FROM pg_roles WHERE rolname = 'foldem_analyst'").scalar()
            grant = role and c.exec_driver_sql(
                "SELECT has_table_privilege('foldem_analyst', 'runs', 'SELECT')").scalar()
        return set(sa.inspect(engine).get_view_names()), bool(role), bool(grant)

    db.migrate(scratch_url)
    assert state() == (AT_HEAD, True, True)
    db.downgrade(scratch_url, "0004")
    # the role stays: the session's test database (pg_url) still grants it SELECT
    assert state() == ({"run_overview", "rejections_by_validator"}, True, False)
    db.migrate(scratch_url)
    assert state() == (AT_HEAD, True, True)
