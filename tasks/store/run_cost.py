"""A run's cost, read from the ledger's prices and costs (part of the run summary,
tasks/store/run_summary.py): the total and per accepted sample, what the rejected samples cost,
what finishing them and the other cut streams would have cost (estimates), and what the
model-based checks cost (step-judge calls and `judge` stages), so that a judge that costs more
than it saves shows as a loss.

Sums are of the rows' `cost_usd` as stored, so they equal any SQL sum of the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Numeric, and_, false, func, select
from sqlalchemy.orm import Session

from tasks.records.models import RunCost
from tasks.store.schema import ledger, runs, samples

#: A cost in the ledger's precision (USD, nine decimal places).
_USD = Numeric(18, 9)


def judge_stage_names(spec: Mapping[str, Any]) -> list[str]:
    """The `judge` stages of a run's spec snapshot: their calls are checks, not generation."""
    stages = spec.get("stages") if isinstance(spec, Mapping) else None
    return [str(s["name"]) for s in stages or ()
            if isinstance(s, Mapping) and s.get("kind") == "judge" and "name" in s]


def _usd(total: Any) -> Decimal | None:
    return None if total is None else Decimal(total)


def summarize_cost(session: Session, *, run_id: str, accepted: int) -> RunCost:
    """The run's cost figures (`accepted`: its accepted samples, for the cost per sample)."""
    spec = session.execute(select(runs.c.spec).where(runs.c.run_id == run_id)).scalar() or {}
    judge_stages = judge_stage_names(spec)
    in_judge_stage: ColumnElement[bool] = (ledger.c.stage.in_(judge_stages) if judge_stages
                                           else false())
    step_judge = ledger.c.call_kind == "step_judge"
    generation = ~step_judge & ~in_judge_stage
    priced = ledger.c.cost_usd.is_not(None)
    # tokens a cut call did not generate, at its output price
    saved_usd = func.round(ledger.c.tokens_saved * ledger.c.price_output_per_mtok / 1_000_000, 9)

    def usd(amount: Any, where: ColumnElement[bool]) -> Any:
        return func.sum(amount).filter(where).cast(_USD)

    row = session.execute(
        select(
            func.count().filter(priced).label("priced_calls"),
            func.count().filter(~priced).label("unpriced_calls"),
            func.array_agg(func.distinct(ledger.c.endpoint)).filter(~priced)
            .label("unpriced_endpoints"),
            func.array_agg(func.distinct(ledger.c.price_source)).filter(priced)
            .label("price_sources"),
            func.sum(ledger.c.cost_usd).label("total_usd"),
            usd(ledger.c.cost_usd, generation & (samples.c.status == "rejected"))
            .label("rejected_usd"),
            usd(saved_usd, ledger.c.abort_reason == "rejected").label("rejected_finish"),
            usd(saved_usd, ledger.c.abort_reason.is_not(None)
                & (ledger.c.abort_reason != "rejected")).label("early_stop"),
            usd(ledger.c.cost_usd, step_judge).label("step_judge_usd"),
            usd(ledger.c.cost_usd, in_judge_stage & ~step_judge).label("judge_stage_usd"),
        ).select_from(ledger.outerjoin(samples, and_(
            samples.c.run_id == ledger.c.run_id, samples.c.prompt_id == ledger.c.prompt_id,
            samples.c.sample_index == ledger.c.sample_index)))
        .where(ledger.c.run_id == run_id)).one()
    total = None if row.total_usd is None else Decimal(row.total_usd)
    return RunCost(
        priced_calls=row.priced_calls, unpriced_calls=row.unpriced_calls,
        unpriced_endpoints=sorted(row.unpriced_endpoints or []),
        price_sources=sorted(row.price_sources or []), total_usd=total,
        per_accepted_usd=(None if total is None or not accepted
                          else (total / accepted).quantize(Decimal("0.000000001"))),
        rejected_usd=_usd(row.rejected_usd),
        rejected_finish_estimate_usd=_usd(row.rejected_finish),
        early_stop_estimate_usd=_usd(row.early_stop),
        step_judge_usd=_usd(row.step_judge_usd), judge_stage_usd=_usd(row.judge_stage_usd))
