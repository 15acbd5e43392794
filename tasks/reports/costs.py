"""The money sections of `foldem report`: what each run cost and whether in-flight checking paid
for itself (the run summary's own figures, tasks/store/run_cost.py, so the report and the
summary never disagree), cost by stage and call kind, and the trend of the reported runs' jobs
run over run: acceptance rate, rejection mix, cost per accepted sample, tokens saved, each with
its change from the job's previous run, so a model or prompt regression shows the morning after.

The SQL reads only tables (ledger, samples, rejections, runs): it works with the read-only
`foldem_analyst` role. sql/queries/cost_by_stage.sql and run_trends.sql ask the same for psql;
tests/sql checks that both give the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from tasks.records.models import RunCost
from tasks.store.run_cost import summarize_cost

#: Runs of a job the trend shows, newest first.
TREND_RUNS = 10


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RunCostRow(_Row):
    run_id: str
    accepted: int
    cost: RunCost


class StageCostRow(_Row):
    stage: str
    call_kind: str
    calls: int
    unpriced_calls: int
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal | None  # None: no call of the group had a price
    pct_of_cost: float | None


class TrendRow(_Row):
    job_name: str
    run_id: str
    status: str
    started_at: datetime
    samples: int
    accepted_pct: float | None
    accepted_pct_change: float | None  # points, from the job's previous run
    rejection_mix: str  # "share% validator, ..." of the run's rejections, most first
    usd_per_accepted: Decimal | None
    usd_per_accepted_change_pct: float | None
    unpriced_calls: int
    tokens_saved: int
    saved_pct: float | None


class CostReport(BaseModel):
    runs: list[RunCostRow] = []
    stages: list[StageCostRow] = []
    trends: list[TrendRow] = []


_BY_STAGE = """
SELECT stage, call_kind, count(*) AS calls,
       count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(cached_prompt_tokens), 0) AS cached_prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd,
       round(100.0 * sum(cost_usd) / nullif(sum(sum(cost_usd)) OVER (), 0), 1) AS pct_of_cost
FROM ledger WHERE run_id = ANY(:run_ids)
GROUP BY stage, call_kind ORDER BY min(started_at), call_kind"""

# Per run of the jobs reported on: the job's last TREND_RUNS runs up to the newest reported
# (the `run_trends` view, migration 0015, compares each with the job's previous run).
_TRENDS = """
SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY job_name ORDER BY started_at DESC, run_id DESC)
              AS nth
    FROM run_trends WHERE job_name = ANY(:jobs) AND started_at <= :until) AS t
WHERE nth <= :keep ORDER BY job_name, started_at DESC, run_id DESC"""


def build_cost_report(session: Session, run_ids: list[str]) -> CostReport:
    """The reported runs' costs, their cost by stage, and their jobs' trends."""
    if not run_ids:
        return CostReport()
    accepted = dict(session.execute(sa.text(
        "SELECT r.run_id, (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id "
        "AND s.status = 'accepted') FROM runs r WHERE r.run_id = ANY(:run_ids)"),
        {"run_ids": run_ids}).tuples().all())
    runs = [RunCostRow(run_id=r, accepted=accepted.get(r, 0),
                       cost=summarize_cost(session, run_id=r, accepted=accepted.get(r, 0)))
            for r in run_ids]
    stages = [StageCostRow.model_validate(dict(row._mapping)) for row in session.execute(
        sa.text(_BY_STAGE), {"run_ids": run_ids})]
    jobs, until = session.execute(sa.text(
        "SELECT array_agg(DISTINCT job_name), max(started_at) FROM runs "
        "WHERE run_id = ANY(:run_ids)"), {"run_ids": run_ids}).one()
    trends = [TrendRow.model_validate(dict(row._mapping)) for row in session.execute(
        sa.text(_TRENDS), {"jobs": list(jobs or []), "until": until, "keep": TREND_RUNS})]
    return CostReport(runs=runs, stages=stages, trends=trends)


# ---------------------------------------------------------------------------------- rendering

#: A table as `foldem report` lays it out: key, title, headers, rows, note.
TableSpec = tuple[str, str, list[str], Sequence[Sequence[Any]], str]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _signed(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:+.1f}{unit}"


def cost_tables(cost: CostReport) -> list[TableSpec]:
    """What the runs cost, by stage and call kind, and the trend of their jobs (money as
    Decimal: the report formats it; None: no price known)."""
    return [
        ("cost", "Cost",
         ["run", "cost", "per accepted", "rejected: spent", "to finish (est.)",
          "early stops (est.)", "checks", "net saving (est.)", "calls not costed"],
         [(r.run_id, r.cost.total_usd, r.cost.per_accepted_usd, r.cost.rejected_usd,
           r.cost.rejected_finish_estimate_usd, r.cost.early_stop_estimate_usd,
           r.cost.checks_usd, r.cost.net_saving_estimate_usd, r.cost.unpriced_calls)
          for r in cost.runs],
         "at the prices in each call's ledger row (job spec or genai-prices; '-': no price "
         "known). est.: tokens a cut stream never generated (expected length), at its output "
         "price; checks: step-judge calls and judge stages; net: the estimated savings minus "
         "the checks (negative: a loss)."),
        ("cost_stages", "Cost by stage",
         ["stage", "call kind", "calls", "not costed", "prompt", "cached prompt", "completion",
          "cost", "% of cost"],
         [(r.stage, r.call_kind, r.calls, r.unpriced_calls, r.prompt_tokens,
           r.cached_prompt_tokens, r.completion_tokens, r.cost_usd, _pct(r.pct_of_cost))
          for r in cost.stages], ""),
        ("trends", "Run over run (the jobs' last runs, newest first)",
         ["job", "run", "status", "started (UTC)", "samples", "accepted %", "change",
          "rejection mix", "$ per accepted", "change", "not costed", "saved", "saved %"],
         [(r.job_name, r.run_id, r.status, f"{r.started_at.astimezone(UTC):%Y-%m-%d %H:%M}",
           r.samples, _pct(r.accepted_pct), _signed(r.accepted_pct_change, " pts"),
           r.rejection_mix or "-", r.usd_per_accepted,
           _signed(r.usd_per_accepted_change_pct, "%"), r.unpriced_calls, r.tokens_saved,
           _pct(r.saved_pct)) for r in cost.trends],
         "change: from the job's previous run; rejection mix: each validator's share of the "
         "run's rejections; saved: completion tokens cut streams did not generate (estimate)."),
    ]
