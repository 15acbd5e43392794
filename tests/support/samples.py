"""Made-up samples (SampleResult) and runs of them, for the tests of what reads the results
database: storage, the quality gate, dedup, export, the analytics views and the report.

* `ledger_entry` / `sample_result`: one call / one sample, with defaults a test overrides;
* `commit_run`: a run of samples saved and committed under a fresh run id;
* `Spec` / `save_run`: samples described by what the analytics views count (stages, cut,
  rejected by, tokens, day), saved in a given session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tasks.records.models import (
    CountSource,
    LedgerEntry,
    RejectionRecord,
    SampleResult,
    SampleStatus,
    StageText,
)
from tasks.store.db import get_engine, session_scope
from tasks.store.storage import finish_run, save_results, start_run

_DERIVED: Any = object()  # final_answer: `answer` if accepted, else None


def ledger_entry(run_id: str, prompt_id: str, sample_index: int = 0, stage: str = "solve",
                 **fields: Any) -> LedgerEntry:
    """One made-up endpoint call; by default 10 completion tokens from endpoint 'e' (model 'm'),
    started now."""
    values: dict[str, Any] = {"endpoint": "e", "model": "m", "completion_tokens": 10,
                              "started_at": datetime.now(UTC)} | fields
    return LedgerEntry(run_id=run_id, prompt_id=prompt_id, sample_index=sample_index,
                       stage=stage, **values)


def sample_result(run_id: str, prompt_id: str, sample_index: int = 0,
                  status: SampleStatus = "accepted", *, problem: str | None = None,
                  stages: Sequence[StageText] = (), answer: str = "4",
                  final_answer: str | None = _DERIVED, rejection: RejectionRecord | None = None,
                  error: str | None = None, ledger: Sequence[LedgerEntry] | None = None,
                  **fields: Any) -> SampleResult:
    """One made-up sample. What depends on the status is given for that status: the final
    answer is `answer` when accepted (unless `final_answer` says otherwise), `rejection` is kept
    when rejected (by default the arithmetic validator at solve's first checkpoint), `error`
    when failed. The ledger is one solve call (`ledger_entry`) unless given."""
    if status == "rejected" and rejection is None:
        rejection = RejectionRecord(stage="solve", checkpoint=1, validator="arithmetic",
                                    reason_code="bad_arithmetic")
    return SampleResult(
        run_id=run_id, prompt_id=prompt_id, sample_index=sample_index, status=status,
        problem=problem if problem is not None else f"Made-up problem {prompt_id}",
        stages=list(stages),
        final_answer=(answer if status == "accepted" else None) if final_answer is _DERIVED
        else final_answer,
        rejection=rejection if status == "rejected" else None,
        error=error if status == "failed" else None,
        ledger=[ledger_entry(run_id, prompt_id, sample_index)] if ledger is None else list(ledger),
        **fields)


def commit_run(url: str,
               results: Sequence[SampleResult] | Callable[[str], Sequence[SampleResult]], *,
               prefix: str, spec: dict[str, Any], run_id: str | None = None,
               finish: str | None = None, samples_expected: int | None = None,
               spec_hash: str = "h", code_version: str = "test") -> str:
    """Start a run (job `<prefix>-test`; id `<prefix>-<random>` unless given), save `results`
    (or what `results(run_id)` makes) under its id, finish it with status `finish` if given, and
    commit. Returns the run id."""
    run_id = run_id or f"{prefix}-{uuid.uuid4().hex[:12]}"
    made = list(results(run_id) if callable(results) else results)
    with session_scope(get_engine(url)) as session:
        start_run(session, run_id=run_id, job_name=f"{prefix}-test", spec=spec,
                  spec_hash=spec_hash, code_version=code_version,
                  samples_expected=len(made) if samples_expected is None else samples_expected)
        save_results(session, results=[_under(r, run_id) for r in made])
        if finish is not None:
            finish_run(session, run_id=run_id, status=finish)
    return run_id


def _under(result: SampleResult, run_id: str) -> SampleResult:
    if result.run_id == run_id and all(e.run_id == run_id for e in result.ledger):
        return result
    return result.model_copy(update={"run_id": run_id, "ledger": [
        e.model_copy(update={"run_id": run_id}) for e in result.ledger]})


# --- samples described by what the analytics views count -----------------------------------

DAY1 = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)  # one second before midnight UTC
DAY2 = DAY1 + timedelta(seconds=2)


@dataclass
class Spec:
    """One made-up sample: the stages it ran (one endpoint call each, in order) and, if it was
    rejected, by which validator in its last stage and how far in."""

    stages: tuple[str, ...] = ("solve",)
    rejected_by: str | None = None
    reason: str = "bad"
    tokens_at_fire: int = 50
    fraction_at_fire: float | None = 0.5
    cut: bool = False  # the rejection aborted the call (tokens_saved = 100 - completion)
    completion: int = 100
    prompt: int | None = 20
    count_source: CountSource = "server_usage"
    model: str = "m1"
    day: datetime = DAY1
    ttft_ms: float | None = 50.0
    duration_ms: float = 1000.0
    attempts: int = 1
    error: str | None = None
    failed: bool = False


def build_samples(run_id: str, endpoint: str, specs: list[Spec]) -> list[SampleResult]:
    results = []
    for i, s in enumerate(specs):
        ledger = [LedgerEntry(
            run_id=run_id, prompt_id=f"p{i}", sample_index=0, stage=stage, endpoint=endpoint,
            model=s.model, prompt_tokens=s.prompt, completion_tokens=s.completion,
            count_source=s.count_source, aborted=s.cut and n == len(s.stages) - 1,
            abort_reason="rejected" if s.cut and n == len(s.stages) - 1 else None,
            expected_tokens=100, tokens_saved=max(0, 100 - s.completion)
            if s.cut and n == len(s.stages) - 1 else 0,
            ttft_ms=s.ttft_ms, duration_ms=s.duration_ms, attempts=s.attempts, error=s.error,
            started_at=s.day + timedelta(milliseconds=n)) for n, stage in enumerate(s.stages)]
        rejection = None if s.rejected_by is None else RejectionRecord(
            stage=s.stages[-1], checkpoint=1, validator=s.rejected_by, reason_code=s.reason,
            tokens_at_fire=s.tokens_at_fire, fraction_at_fire=s.fraction_at_fire)
        status = "failed" if s.failed else "rejected" if rejection else "accepted"
        results.append(SampleResult(run_id=run_id, prompt_id=f"p{i}", sample_index=0,
                                    status=status, problem=f"made-up problem {i}",
                                    rejection=rejection, ledger=ledger))
    return results


def save_run(session: Session, specs: list[Spec], *, run_id: str | None = None,
             endpoint: str | None = None) -> tuple[str, str]:
    """Start a run in `session` and save the samples of `specs`, under a fresh run id and
    endpoint name unless given; returns (run_id, endpoint name)."""
    run_id = run_id or f"analytics-{uuid.uuid4().hex[:12]}"
    endpoint = endpoint or f"ep-{uuid.uuid4().hex[:8]}"
    start_run(session, run_id=run_id, job_name="analytics-test", spec={}, spec_hash="h",
              code_version="test", samples_expected=len(specs))
    save_results(session, results=build_samples(run_id, endpoint, specs))
    return run_id, endpoint
