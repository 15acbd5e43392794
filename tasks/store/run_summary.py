"""The run summary, read from Postgres in one place: counts by status, tokens from the ledger,
rejections by validator and stage, the stage funnel, per-endpoint figures, what early exit by
agreement saved, and the run's cost (tasks/store/run_cost.py). The flow, the CLI,
`foldem report` and the benchmarks all get their `RunSummary` from here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from foldem.core.errors import DatabaseError
from tasks.records.models import EndpointFigures, RunSummary, StageFigures
from tasks.store.run_cost import summarize_cost
from tasks.store.schema import ledger, rejections, runs, samples


def _stage_funnel(session: Session, run_id: str, rejected_at: dict[str, int]
                  ) -> list[StageFigures]:
    """Per stage, in the order samples met them: samples that reached it (a ledger row there),
    were rejected there, failed there (a failed sample's call that ended in an error)."""
    key = tuple_(ledger.c.prompt_id, ledger.c.sample_index)
    failed_at = {row.stage: row.n for row in session.execute(
        select(ledger.c.stage, func.count(func.distinct(key)).label("n"))
        .join(samples, (samples.c.run_id == ledger.c.run_id)
              & (samples.c.prompt_id == ledger.c.prompt_id)
              & (samples.c.sample_index == ledger.c.sample_index))
        .where(ledger.c.run_id == run_id, samples.c.status == "failed",
               ledger.c.error.is_not(None))
        .group_by(ledger.c.stage))}
    superseded_at = {row.stage: row.n for row in session.execute(
        select(ledger.c.stage, func.count(func.distinct(key)).label("n"))
        .where(ledger.c.run_id == run_id, ledger.c.abort_reason == "agreement")
        .group_by(ledger.c.stage))}
    stages = []
    for row in session.execute(
            select(ledger.c.stage, func.count(func.distinct(key)).label("reached"))
            .where(ledger.c.run_id == run_id).group_by(ledger.c.stage)
            .order_by(func.min(ledger.c.started_at))):
        rejected, failed = rejected_at.get(row.stage, 0), failed_at.get(row.stage, 0)
        cut = superseded_at.get(row.stage, 0)
        stages.append(StageFigures(stage=row.stage, reached=row.reached, rejected=rejected,
                                   failed=failed, superseded=cut,
                                   passed=row.reached - rejected - failed - cut))
    return stages


def _agreement_figures(session: Session, run_id: str, superseded: int) -> tuple[int, int]:
    """(calls cut because k siblings agreed, completion tokens agreement saved, estimated):
    the cut calls' own tokens_saved, plus for each superseded sample that never started the
    mean completion tokens of the run's generated samples (what it would have cost)."""
    cut = session.execute(select(
        func.count().filter(ledger.c.call_kind == "generate").label("calls"),
        func.coalesce(func.sum(ledger.c.tokens_saved), 0).label("saved"))
        .where(ledger.c.run_id == run_id, ledger.c.abort_reason == "agreement")).one()
    if not superseded:
        return int(cut.calls), int(cut.saved)
    same_sample = ((samples.c.run_id == ledger.c.run_id)
                   & (samples.c.prompt_id == ledger.c.prompt_id)
                   & (samples.c.sample_index == ledger.c.sample_index))
    started = session.execute(
        select(func.count(func.distinct(tuple_(ledger.c.prompt_id, ledger.c.sample_index))))
        .select_from(ledger.join(samples, same_sample))
        .where(ledger.c.run_id == run_id, samples.c.status == "superseded")).scalar() or 0
    generated = session.execute(select(
        func.count(func.distinct(tuple_(ledger.c.prompt_id, ledger.c.sample_index)))
        .label("samples"),
        func.coalesce(func.sum(ledger.c.completion_tokens), 0).label("tokens"))
        .select_from(ledger.join(samples, same_sample))
        .where(ledger.c.run_id == run_id, samples.c.status != "superseded")).one()
    mean = int(generated.tokens) / generated.samples if generated.samples else 0.0
    return int(cut.calls), int(cut.saved) + round((superseded - started) * mean)


def summarize_run(session: Session, *, run_id: str) -> RunSummary:
    """Counts by status, token sums from the ledger, rejections by validator and by stage,
    per-endpoint calls, failures, tokens and mean time to first token."""
    status = session.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar()
    if status is None:
        raise DatabaseError(f"run {run_id!r} is not in the database")
    by_status: dict[str, int] = {
        row.status: row.n for row in session.execute(
            select(samples.c.status, func.count().label("n"))
            .where(samples.c.run_id == run_id).group_by(samples.c.status))
    }
    tokens = session.execute(select(
        func.coalesce(func.sum(ledger.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(ledger.c.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(ledger.c.tokens_saved), 0).label("tokens_saved"),
        func.count().label("calls"),
        # generations closed early (a step judge's verdict read only to its score line is
        # an aborted call too, but not a saving)
        func.count().filter(ledger.c.aborted & (ledger.c.call_kind == "generate"))
        .label("aborted_calls"),
    ).where(ledger.c.run_id == run_id)).one()

    per_endpoint = [EndpointFigures(
        endpoint=row.endpoint, calls=row.calls, failed_calls=row.failed_calls,
        prompt_tokens=int(row.prompt_tokens), completion_tokens=int(row.completion_tokens),
        mean_ttft_ms=None if row.mean_ttft_ms is None else round(float(row.mean_ttft_ms), 1))
        for row in session.execute(select(
            ledger.c.endpoint, func.count().label("calls"),
            func.count().filter(ledger.c.error.is_not(None)).label("failed_calls"),
            func.coalesce(func.sum(ledger.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(ledger.c.completion_tokens), 0).label("completion_tokens"),
            func.avg(ledger.c.ttft_ms).label("mean_ttft_ms"),
        ).where(ledger.c.run_id == run_id).group_by(ledger.c.endpoint)
            .order_by(ledger.c.endpoint))]

    def rejections_by(column: Any) -> dict[str, int]:
        rows = session.execute(select(column, func.count()).where(rejections.c.run_id == run_id)
                               .group_by(column).order_by(func.count().desc(), column))
        return {key: n for key, n in rows.tuples()}

    superseded = by_status.get("superseded", 0)
    cut_calls, agreement_saved = _agreement_figures(session, run_id, superseded)
    return RunSummary(
        superseded=superseded, agreement_cut_calls=cut_calls,
        agreement_tokens_saved=agreement_saved,
        stages=_stage_funnel(session, run_id, rejections_by(rejections.c.stage)),
        run_id=run_id, status=status, samples=sum(by_status.values()),
        accepted=by_status.get("accepted", 0), rejected=by_status.get("rejected", 0),
        failed=by_status.get("failed", 0), prompt_tokens=int(tokens.prompt_tokens),
        completion_tokens=int(tokens.completion_tokens), tokens_saved=int(tokens.tokens_saved),
        calls=tokens.calls, aborted_calls=tokens.aborted_calls,
        rejections_by_validator=rejections_by(rejections.c.validator),
        rejections_by_stage=rejections_by(rejections.c.stage), endpoints=per_endpoint,
        cost=summarize_cost(session, run_id=run_id, accepted=by_status.get("accepted", 0)),
    )
