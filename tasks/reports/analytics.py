"""`foldem report`: what a run (or the runs since a day) rejected, why, where, and what it cost.

Reads the analytics views of migration 0005 (sql/views/analytics/) plus `run_overview` and
`rejections_by_validator`, for a set of runs chosen by `select_runs`; the money sections and
the run-over-run trend come from tasks/reports/costs.py. `build_report` returns a pydantic
`AnalyticsReport` (its row models: tasks/reports/rows.py); tasks/reports/tables.py lays it out
as tables for the terminal; tasks/reports/charts.py writes what `--out` asks for (PNG charts and
report.md).
Only SELECTs: it works with the read-only `foldem_analyst` role.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from foldem.core.errors import DatabaseError, FoldemError
from tasks.reports.costs import build_cost_report
from tasks.reports.rows import (
    AnalyticsReport,
    FireRow,
    LatencyRow,
    RunRow,
    StageRow,
    TokenRow,
    ValidatorRow,
    _Row,
)


class RunNotFoundError(FoldemError):
    """`--run ID` names a run the database does not have."""

    exit_code = 2


# ------------------------------------------------------------------------------------ queries

_RUNS = """
SELECT o.*, coalesce(s.superseded, 0) AS superseded
FROM run_overview AS o
LEFT JOIN (SELECT run_id, count(*) AS superseded FROM samples
           WHERE status = 'superseded' AND run_id = ANY(:run_ids) GROUP BY run_id) AS s
    USING (run_id)
WHERE o.run_id = ANY(:run_ids) ORDER BY o.started_at, o.run_id"""
# sums come back as numeric: pydantic turns integral Decimals into ints (and refuses others)
_STAGES = """
SELECT stage, sum(samples) AS samples, sum(rejected) AS rejected,
       round(100.0 * sum(rejected) / nullif(sum(samples), 0), 2) AS rejection_pct,
       sum(aborted_calls) AS aborted_calls, sum(errored_calls) AS errored_calls
FROM stage_outcomes_daily WHERE run_id = ANY(:run_ids) GROUP BY stage ORDER BY stage"""
_VALIDATORS = """
WITH by_validator AS (
    SELECT stage, validator, sum(rejections) AS rejections
    FROM rejection_rate_daily WHERE run_id = ANY(:run_ids) GROUP BY stage, validator
), stage_samples AS (  -- the denominator: every sample that ran the stage, rejected or not
    SELECT stage, sum(samples) AS samples
    FROM stage_outcomes_daily WHERE run_id = ANY(:run_ids) GROUP BY stage
), reasons AS (
    SELECT stage, validator,
           string_agg(reason_code || ' ' || n, ', ' ORDER BY n DESC, reason_code) AS reasons
    FROM (SELECT stage, validator, reason_code, sum(rejections) AS n FROM rejections_by_validator
          WHERE run_id = ANY(:run_ids) GROUP BY stage, validator, reason_code) AS per_reason
    GROUP BY stage, validator
)
SELECT v.stage, v.validator, v.rejections, coalesce(r.reasons, '') AS reasons,
       round(100.0 * v.rejections / nullif(s.samples, 0), 2) AS pct_of_stage,
       round(100.0 * v.rejections / sum(v.rejections) OVER (), 2) AS pct_of_rejections
FROM by_validator AS v
LEFT JOIN stage_samples AS s USING (stage) LEFT JOIN reasons AS r USING (stage, validator)
ORDER BY v.rejections DESC, v.stage, v.validator"""
_TOKENS = """
WITH usage AS (
    SELECT stage, count_source, sum(calls) AS calls, sum(aborted_calls) AS aborted_calls,
           sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
           sum(completion_tokens_rejected) AS completion_tokens_rejected,
           sum(tokens_saved) AS tokens_saved
    FROM run_token_usage WHERE run_id = ANY(:run_ids) GROUP BY stage, count_source
), failed AS (  -- the view does not split off failed samples; the charts draw them grey
    SELECT l.stage, l.count_source,
           coalesce(sum(l.completion_tokens) FILTER (WHERE s.status = 'failed'), 0)
               AS completion_tokens_failed,
           coalesce(sum(l.completion_tokens) FILTER (WHERE s.status = 'superseded'), 0)
               AS completion_tokens_superseded
    FROM ledger AS l JOIN samples AS s USING (run_id, prompt_id, sample_index)
    WHERE l.run_id = ANY(:run_ids) AND s.status IN ('failed', 'superseded')
    GROUP BY l.stage, l.count_source
)
SELECT u.*, coalesce(f.completion_tokens_failed, 0) AS completion_tokens_failed,
       coalesce(f.completion_tokens_superseded, 0) AS completion_tokens_superseded
FROM usage AS u LEFT JOIN failed AS f USING (stage, count_source)
ORDER BY stage, count_source"""
_FIRE = """
SELECT {label} AS bucket, validator, sum(rejections) AS rejections,
       coalesce(sum(rejections) FILTER (WHERE cut_stream), 0) AS in_flight
FROM rejection_fire_points WHERE run_id = ANY(:run_ids)
GROUP BY {order}, {label}, validator ORDER BY {order} NULLS LAST, validator"""
# Percentiles do not add up across days or runs, so latency comes from the ledger itself; per
# the model the endpoint named (a replay of `*` names each recorded generator).
_LATENCY = """
SELECT endpoint, coalesce(served_model, model) AS model, count(*) AS calls,
       count(*) FILTER (WHERE error IS NOT NULL) AS errors,
       sum(attempts - 1) AS retries,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS p50_ttft_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS p95_ttft_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_duration_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms
FROM ledger WHERE run_id = ANY(:run_ids)
GROUP BY endpoint, coalesce(served_model, model) ORDER BY endpoint, model"""

RowT = TypeVar("RowT", bound=_Row)


def _rows(session: Session, sql: str, model: type[RowT], run_ids: list[str]) -> list[RowT]:
    result = session.execute(sa.text(sql), {"run_ids": run_ids})
    return [model.model_validate(dict(row._mapping)) for row in result]


def _check_schema(session: Session) -> bool:
    """False for a database foldem never migrated; an error if the analytics views are missing."""
    runs, views = session.execute(sa.text(
        "SELECT to_regclass('runs') IS NOT NULL, to_regclass('rejection_fire_points') IS NOT NULL"
    )).one()
    if runs and not views:
        raise DatabaseError("this database has no analytics views yet (migration 0005); run "
                            "`foldem db migrate`")
    return bool(runs)


def select_runs(session: Session, *, run_id: str | None = None,
                since: date | None = None) -> tuple[list[str], str]:
    """The run ids to report on and the scope in words: one run, the runs started on or after
    `since` (UTC), or by default the latest run. Raises RunNotFoundError for an unknown id."""
    if run_id is not None:
        if session.execute(sa.text("SELECT 1 FROM runs WHERE run_id = :r"), {"r": run_id}
                           ).scalar() is None:
            recent = session.execute(sa.text(
                "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 5")).scalars().all()
            hint = f"recent runs: {', '.join(recent)}" if recent else "the database has no runs"
            raise RunNotFoundError(f"run {run_id!r} is not in the database ({hint})")
        return [run_id], f"run {run_id}"
    if since is not None:
        start = datetime.combine(since, time(), tzinfo=UTC)
        ids = session.execute(sa.text(
            "SELECT run_id FROM runs WHERE started_at >= :start ORDER BY started_at, run_id"),
            {"start": start}).scalars().all()
        return list(ids), f"{len(ids)} run(s) started since {since.isoformat()} (UTC)"
    latest = session.execute(sa.text(
        "SELECT run_id FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1")).scalar()
    if latest is None:
        return [], "the latest run"
    return [latest], f"run {latest} (the latest; choose with --run ID or --since DATE)"


def build_report(session: Session, *, run_id: str | None = None,
                 since: date | None = None) -> AnalyticsReport:
    """Everything `foldem report` shows, for one run, the runs since a day, or the latest."""
    if not _check_schema(session):
        return AnalyticsReport(scope="nothing", empty_reason="the database is empty (foldem "
                               "never ran against it): run `foldem run JOB.yaml` first")
    run_ids, scope = select_runs(session, run_id=run_id, since=since)
    if not run_ids:
        reason = (f"no runs started on or after {since.isoformat()}" if since is not None
                  else "the database has no runs yet: run `foldem run JOB.yaml` first")
        return AnalyticsReport(scope=scope, empty_reason=reason)

    def fire(label: str, order: str) -> list[FireRow]:
        return _rows(session, _FIRE.format(label=label, order=order), FireRow, run_ids)

    return AnalyticsReport(
        scope=scope,
        runs=_rows(session, _RUNS, RunRow, run_ids),
        stages=_rows(session, _STAGES, StageRow, run_ids),
        validators=_rows(session, _VALIDATORS, ValidatorRow, run_ids),
        tokens=_rows(session, _TOKENS, TokenRow, run_ids),
        fire_by_fraction=fire("fraction_bucket", "fraction_from"),
        fire_by_tokens=fire("tokens_bucket", "tokens_from"),
        latency=_rows(session, _LATENCY, LatencyRow, run_ids),
        cost=build_cost_report(session, run_ids),
    )
