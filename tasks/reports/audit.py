"""One run's audit: its funnel, tokens and money, and its samples — each with the text that was
streamed, where the stream stopped and, for a rejected one, which validator fired, why and on
which span — read from Postgres into an `AuditPage` (tasks/reports/audit_rows.py).
tasks/reports/audit_page.py renders it as a self-contained HTML file.

The page stays bounded for a big run: at most `SampleCaps` samples of each status are listed
(rejected ones taken in turn from each validator, so a rare validator is not crowded out by a
frequent one), each stage text at most `text_limit` characters (head, span and end kept);
the page says how many samples it leaves out.
Columns that may be NULL (a rejection's span, a call's price) are shown as absent, never as 0.
Only SELECTs: it works with the read-only `foldem_analyst` role.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from tasks.records.models import SampleStatus
from tasks.reports.analytics import RunNotFoundError, build_report
from tasks.reports.audit_rows import (
    AuditCall,
    AuditCost,
    AuditPage,
    AuditRejection,
    AuditSample,
    CostLine,
    StageView,
    StatusCount,
)
from tasks.reports.audit_text import text_pieces, valid_span
from tasks.store.run_summary import summarize_run

TEXT_LIMIT = 6000  # characters of one stage text on the page
PROBLEM_LIMIT = 2000


class SampleCaps(BaseModel):
    """How many samples of each status the page lists at most."""

    rejected: int = 1000
    accepted: int = 300
    superseded: int = 100
    failed: int = 200

    def cap(self, status: str) -> int:
        return int(getattr(self, status, 100))


# Rejected samples in turn from each validator: the n-th of every validator before the n+1-th.
_SAMPLES = """
SELECT s.prompt_id, s.sample_index, s.status, s.problem, s.reference_answer, s.stage_texts,
       s.final_answer, s.early_exit, s.error,
       r.stage AS r_stage, r.checkpoint, r.validator, r.reason_code, r.detail, r.step_index,
       r.tokens_at_fire, r.fraction_at_fire, r.span_start, r.span_end, r.span_text
FROM samples AS s LEFT JOIN rejections AS r USING (run_id, prompt_id, sample_index)
WHERE s.run_id = :run_id AND s.status = :status
ORDER BY row_number() OVER (PARTITION BY r.validator ORDER BY s.prompt_id, s.sample_index),
         r.validator, s.prompt_id, s.sample_index
LIMIT :cap"""
_CALLS = """
SELECT prompt_id, sample_index, stage, call_kind, endpoint, coalesce(served_model, model) AS model,
       completion_tokens, expected_tokens, tokens_saved, aborted, abort_reason, finish_reason,
       error, cost_usd
FROM ledger WHERE run_id = :run_id AND prompt_id = ANY(:prompt_ids)
ORDER BY started_at, call_id"""
_COST = """
SELECT endpoint, coalesce(served_model, model) AS model, count(*) AS calls,
       count(cost_usd) AS priced_calls, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       sum(cached_prompt_tokens) AS cached_prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens, sum(cost_usd) AS cost_usd,
       coalesce(string_agg(DISTINCT price_source, ', '), '') AS price_sources
FROM ledger WHERE run_id = :run_id
GROUP BY endpoint, coalesce(served_model, model) ORDER BY endpoint, model"""
# Listed in this order: what the page is for first.
STATUS_ORDER = [SampleStatus.REJECTED, SampleStatus.ACCEPTED, SampleStatus.SUPERSEDED,
                SampleStatus.FAILED]


def _money(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _end_note(call: AuditCall | None, cut: bool, rejection: AuditRejection | None) -> str:
    """What happened where the text ends, in words."""
    if call is None:
        return "stream cut here" if cut else "end of the stored text (no ledger row found)"
    expected = (f"; expected ~{call.expected_tokens:,}, ~{call.tokens_saved:,} not generated"
                if call.expected_tokens else "")
    if call.error:
        return f"the call failed after {call.completion_tokens:,} tokens: {call.error}"
    if cut or call.aborted:
        why = {"rejected": f"rejected by {rejection.validator}" if rejection else "rejected",
               "early_exit": "the answer was complete (early exit)",
               "agreement": "enough samples of the prompt already agreed",
               "interrupted": "the run was interrupted"}.get(call.abort_reason or "",
                                                             call.abort_reason or "closed early")
        return f"✂ stream cut here after {call.completion_tokens:,} tokens: {why}{expected}"
    ended = f"stream ended ({call.finish_reason or 'no finish reason'}) after " \
            f"{call.completion_tokens:,} tokens"
    if rejection is not None:
        return f"{ended}; the rejection fired on the complete text"
    return ended


def _rejection(row: Any) -> AuditRejection | None:
    if row.r_stage is None:
        return None
    return AuditRejection(
        stage=row.r_stage, checkpoint=row.checkpoint, validator=row.validator,
        reason_code=row.reason_code, detail=row.detail, step_index=row.step_index,
        tokens_at_fire=row.tokens_at_fire, fraction_at_fire=row.fraction_at_fire,
        span_start=row.span_start, span_end=row.span_end, span_text=row.span_text,
        span_note="the validator recorded no span" if row.span_start is None
        else f"the sample has no stored text of stage {row.r_stage!r} to highlight in")


def _stage_views(stage_texts: Any, calls: Sequence[AuditCall],
                 rejection: AuditRejection | None, text_limit: int) -> list[StageView]:
    entries = [e for e in stage_texts if isinstance(e, Mapping)] \
        if isinstance(stage_texts, list) else []
    by_stage: dict[str, list[AuditCall]] = defaultdict(list)
    for c in calls:
        if c.call_kind == "generate":
            by_stage[c.stage].append(c)
    last_of = {str(e.get("stage")): i for i, e in enumerate(entries)}
    visits: dict[str, int] = defaultdict(int)
    views = []
    for i, entry in enumerate(entries):
        stage, text = str(entry.get("stage")), str(entry.get("text") or "")
        stage_calls = by_stage.get(stage, [])
        call = stage_calls[visits[stage]] if visits[stage] < len(stage_calls) else None
        visits[stage] += 1
        rejected_here = rejection is not None and rejection.stage == stage and \
            last_of.get(stage) == i
        span = None
        if rejected_here and rejection is not None:
            span = valid_span(text, rejection.span_start, rejection.span_end)
            if rejection.span_start is not None and span is None:
                rejection.span_note = (f"span {rejection.span_start}-{rejection.span_end} is "
                                       f"outside the stored text ({len(text):,} characters)")
            elif span is not None:
                rejection.span_note = f"highlighted: characters {span[0]:,}-{span[1]:,}"
        cut = bool(entry.get("aborted"))
        views.append(StageView(stage=stage, pieces=text_pieces(text, span, text_limit),
                               chars=len(text), cut=cut, rejected_here=rejected_here,
                               end_note=_end_note(call, cut, rejection if rejected_here
                                                  else None)))
    return views


def _sample(row: Any, calls: list[AuditCall], text_limit: int) -> AuditSample:
    rejection = _rejection(row)
    costs = [c.cost_usd for c in calls if c.cost_usd is not None]
    problem = row.problem if len(row.problem) <= PROBLEM_LIMIT else \
        row.problem[:PROBLEM_LIMIT] + f" … ({len(row.problem) - PROBLEM_LIMIT:,} more characters)"
    return AuditSample(
        prompt_id=row.prompt_id, sample_index=row.sample_index, status=row.status,
        problem=problem, reference_answer=row.reference_answer, final_answer=row.final_answer,
        early_exit=row.early_exit, error=row.error, rejection=rejection, calls=calls,
        stages=_stage_views(row.stage_texts, calls, rejection, text_limit),
        completion_tokens=sum(c.completion_tokens for c in calls),
        tokens_saved=sum(c.tokens_saved for c in calls),
        cost_usd=sum(costs) if costs else None, cost_partial=0 < len(costs) < len(calls))


def _cost(session: Session, run_id: str) -> AuditCost:
    lines = [CostLine(**(dict(r._mapping) | {"cost_usd": _money(r.cost_usd)}))
             for r in session.execute(sa.text(_COST), {"run_id": run_id})]
    priced = [line.cost_usd for line in lines if line.cost_usd is not None]
    return AuditCost(calls=sum(line.calls for line in lines),
                     priced_calls=sum(line.priced_calls for line in lines),
                     cost_usd=sum(priced) if priced else None, lines=lines)


def build_audit(session: Session, *, run_id: str, caps: SampleCaps | None = None,
                text_limit: int = TEXT_LIMIT) -> AuditPage:
    """The audit of one run. Raises RunNotFoundError for a run the database does not have."""
    caps = caps or SampleCaps()
    run = session.execute(sa.text(
        "SELECT run_id, job_name, status, started_at, ended_at FROM runs WHERE run_id = :r"),
        {"r": run_id}).first()
    if run is None:
        raise RunNotFoundError(f"run {run_id!r} is not in the database")
    totals = dict(session.execute(sa.text(
        "SELECT status, count(*) FROM samples WHERE run_id = :r GROUP BY status"),
        {"r": run_id}).tuples().all())
    statuses = [*STATUS_ORDER, *sorted(set(totals) - set(STATUS_ORDER))]
    rows = [row for status in statuses if totals.get(status) for row in session.execute(
        sa.text(_SAMPLES), {"run_id": run_id, "status": status, "cap": caps.cap(status)})]
    calls: dict[tuple[str, int], list[AuditCall]] = defaultdict(list)
    for c in session.execute(sa.text(_CALLS), {
            "run_id": run_id, "prompt_ids": sorted({r.prompt_id for r in rows})}):
        calls[(c.prompt_id, c.sample_index)].append(AuditCall(
            **(dict(c._mapping) | {"cost_usd": _money(c.cost_usd)})))
    listed = [_sample(r, calls.get((r.prompt_id, r.sample_index), []), text_limit)
              for r in rows]
    listed_by: dict[str, int] = defaultdict(int)
    for s in listed:
        listed_by[s.status] += 1
    return AuditPage(
        run_id=run.run_id, job_name=run.job_name, status=run.status,
        started_at=run.started_at, ended_at=run.ended_at, generated_at=datetime.now(UTC),
        summary=summarize_run(session, run_id=run_id),
        analytics=build_report(session, run_id=run_id), cost=_cost(session, run_id),
        counts=[StatusCount(status=s, total=totals[s], listed=listed_by[s])
                for s in statuses if totals.get(s)],
        samples=listed, text_limit=text_limit)
