"""tasks/store/storage.py against a real (migrated) Postgres: runs, idempotent saves, summaries,
and the views and user queries in sql/."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select, text
from sqlalchemy.orm import Session

from foldem import PROJECT_ROOT
from foldem.core.errors import DatabaseError, RunConflictError
from tasks.records.models import (
    CountSource,
    LedgerEntry,
    RejectionRecord,
    SampleResult,
    SampleStatus,
    StageText,
)
from tasks.store.run_summary import summarize_run
from tasks.store.schema import ledger, rejections, runs, samples
from tasks.store.storage import (
    accepted_answers,
    done_keys,
    finish_run,
    save_results,
    start_run,
)
from tests.support.samples import ledger_entry, sample_result

QUERIES = sorted((PROJECT_ROOT / "sql" / "queries").glob("*.sql"))


def _start(session: Session, run_id: str, spec_hash: str = "hash-a") -> bool:
    return start_run(session, run_id=run_id, job_name="unit", spec={"name": "unit", "n": 1},
                     spec_hash=spec_hash, code_version="0.1.0+test", samples_expected=6)


def _call(run_id: str, prompt_id: str, index: int, stage: str, completion: int,
          *, aborted: bool = False, saved: int = 0,
          source: CountSource = "server_usage") -> LedgerEntry:
    return ledger_entry(run_id, prompt_id, index, stage, endpoint="replay", prompt_tokens=20,
                        completion_tokens=completion, count_source=source,
                        aborted=aborted, abort_reason="rejected" if aborted else None,
                        expected_tokens=completion + saved, tokens_saved=saved, ttft_ms=5.0,
                        duration_ms=50.0)


def _result(run_id: str, prompt_id: str, index: int, status: SampleStatus,
            validator: str = "arithmetic", stage: str = "solve") -> SampleResult:
    """A made-up sample: a 10-token problem call, then a 100-token solve call (aborted at 40
    tokens with 60 saved when rejected)."""
    rejected = status == "rejected"
    calls = [_call(run_id, prompt_id, index, "problem", 10),
             _call(run_id, prompt_id, index, stage, 40 if rejected else 100, aborted=rejected,
                   saved=60 if rejected else 0,
                   source="tokenizer_estimate" if rejected else "server_usage")]
    return sample_result(
        run_id, prompt_id, index, status,
        problem=f"Tom has {index + 3} apples and eats 2. How many are left?",
        reference_answer=str(index + 1),
        stages=[StageText(stage=stage, text="Tom starts with apples... #### 1",
                          aborted=rejected, final_answer=None if rejected else "1")],
        final_answer=None if rejected else "1",  # a failed sample keeps its answer here
        rejection=RejectionRecord(stage=stage, checkpoint=1, validator=validator,
                                  reason_code="bad_arithmetic", detail="3 - 2 != 5",
                                  step_index=2, tokens_at_fire=40, fraction_at_fire=0.4),
        error="endpoint 'replay': gave up after 3 attempts", ledger=calls)


# statuses of the six samples the tests save: (prompt_id, sample_index) -> status
MIX: dict[tuple[str, int], SampleStatus] = {
    ("p1", 0): "accepted", ("p1", 1): "rejected", ("p2", 0): "accepted",
    ("p2", 1): "rejected", ("p3", 0): "failed", ("p3", 1): "accepted",
}


def _mix(run_id: str) -> list[SampleResult]:
    validators = iter(["arithmetic", "magnitude"])
    return [_result(run_id, p, i, s, validator=next(validators) if s == "rejected" else "")
            for (p, i), s in MIX.items()]


def _count(session: Session, table: Table, run_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(table)
                              .where(table.c.run_id == run_id)) or 0)


@pytest.fixture
def run_id(db_session: Session) -> str:
    rid = f"test-{uuid.uuid4().hex[:12]}"
    assert _start(db_session, rid) is False
    return rid


def test_start_run_creates_then_resumes(db_session: Session, run_id: str) -> None:
    finish_run(db_session, run_id=run_id, status="failed")
    assert _start(db_session, run_id) is True
    row = db_session.execute(select(runs).where(runs.c.run_id == run_id)).one()
    assert (row.status, row.ended_at, row.spec) == ("running", None, {"name": "unit", "n": 1})


def test_start_run_with_another_spec_conflicts(db_session: Session, run_id: str) -> None:
    with pytest.raises(RunConflictError) as err:
        _start(db_session, run_id, spec_hash="hash-b")
    assert "hash-a" in err.value.message and "hash-b" in err.value.message
    assert err.value.run_id == run_id


def test_save_results_is_idempotent(db_session: Session, run_id: str) -> None:
    results = _mix(run_id)
    assert save_results(db_session, results=results) == 6
    assert save_results(db_session, results=results) == 0
    assert save_results(db_session, results=results[2:4]) == 0
    assert _count(db_session, samples, run_id) == 6
    assert _count(db_session, rejections, run_id) == 2
    assert _count(db_session, ledger, run_id) == 12
    assert save_results(db_session, results=[]) == 0


def test_a_final_sample_is_never_overwritten(db_session: Session, run_id: str) -> None:
    save_results(db_session, results=[_result(run_id, "p1", 0, "accepted")])
    late = _result(run_id, "p1", 0, "rejected")  # a racing duplicate with another outcome
    assert save_results(db_session, results=[late]) == 0
    status = db_session.scalar(select(samples.c.status).where(samples.c.run_id == run_id))
    assert status == "accepted"
    assert _count(db_session, rejections, run_id) == 0
    assert _count(db_session, ledger, run_id) == 4  # its calls still cost tokens


def test_done_keys_are_the_saved_samples(db_session: Session, run_id: str) -> None:
    assert done_keys(db_session, run_id=run_id) == set()
    save_results(db_session, results=_mix(run_id)[:4])
    assert done_keys(db_session, run_id=run_id) == set(list(MIX)[:4])


def test_stored_sample_round_trips(db_session: Session, run_id: str) -> None:
    hostile = "quote' \"dq\" ; DROP TABLE samples; -- émoji 🦊 \\ $1 %s :name \\u0000 {}"
    bad = "nul\x00 lone surrogate \ud800."
    result = _result(run_id, "p1", 1, "rejected").model_copy(
        update={"problem": hostile, "error": bad})
    result.ledger[0].ttft_ms = float("nan")
    save_results(db_session, results=[result])
    ttfts = db_session.scalars(select(ledger.c.ttft_ms).where(ledger.c.run_id == run_id)
                               .order_by(ledger.c.stage)).all()
    assert ttfts == [None, 5.0]  # ("problem", "solve"): NaN is not JSON; stored as unknown
    row = db_session.execute(select(samples).where(samples.c.run_id == run_id)).one()
    assert row.problem == hostile
    assert row.error == "nul\ufffd lone surrogate ?."
    assert row.stage_texts == [{"stage": "solve", "text": "Tom starts with apples... #### 1",
                                "aborted": True, "final_answer": None}]
    rej = db_session.execute(select(rejections).where(rejections.c.run_id == run_id)).one()
    assert (rej.validator, rej.checkpoint, rej.step_index, rej.tokens_at_fire,
            rej.fraction_at_fire) == ("arithmetic", 1, 2, 40, 0.4)


def test_summarize_run_counts(db_session: Session, run_id: str) -> None:
    save_results(db_session, results=_mix(run_id))
    finish_run(db_session, run_id=run_id, status="completed")
    summary = summarize_run(db_session, run_id=run_id)
    assert summary.model_dump() == {
        "run_id": run_id, "samples": 6, "accepted": 3, "rejected": 2, "failed": 1,
        "prompt_tokens": 12 * 20, "completion_tokens": 6 * 10 + 4 * 100 + 2 * 40,
        "tokens_saved": 2 * 60, "server_tokens_sent": None, "status": "completed",
        "superseded": 0, "agreement_cut_calls": 0, "agreement_tokens_saved": 0,
        "rejections_by_validator": {"arithmetic": 1, "magnitude": 1},
        "rejections_by_stage": {"solve": 2}, "calls": 12, "aborted_calls": 2,
        "quality_gate": None, "near_duplicates_removed": None, "exported_to": None,
        "audit_page": None,
        "endpoints": [{"endpoint": "replay", "calls": 12, "failed_calls": 0,
                       "prompt_tokens": 240, "completion_tokens": 540, "mean_ttft_ms": 5.0,
                       "breaker_trips": None}],
        # The made-up failed sample has no erroring call, so no stage counts it as failed.
        "stages": [{"stage": "problem", "reached": 6, "rejected": 0, "failed": 0,
                    "superseded": 0, "passed": 6},
                   {"stage": "solve", "reached": 6, "rejected": 2, "failed": 0,
                    "superseded": 0, "passed": 4}],
        # no call had a price: not costed, and said so (never a silent 0)
        "cost": {"priced_calls": 0, "unpriced_calls": 12, "unpriced_endpoints": ["replay"],
                 "price_sources": [], "total_usd": None, "per_accepted_usd": None,
                 **dict.fromkeys(["rejected_usd", "rejected_finish_estimate_usd",
                                  "early_stop_estimate_usd", "step_judge_usd",
                                  "judge_stage_usd", "checks_usd", "net_saving_estimate_usd"])},
    }


def test_summary_counts_superseded_samples_and_what_agreement_saved(
        db_session: Session, run_id: str) -> None:
    """Two superseded samples beside the mix: one cut while streaming (30 tokens streamed,
    the ledger's 90 of its expected 120 saved), one never started (it would have cost what
    a generated sample of the run cost on average)."""
    cut = _call(run_id, "p4", 1, "problem", 10)
    streaming = ledger_entry(run_id, "p4", 1, "solve", endpoint="replay", prompt_tokens=20,
                             completion_tokens=30, count_source="server_usage", aborted=True,
                             abort_reason="agreement", expected_tokens=120, tokens_saved=90)
    save_results(db_session, results=[
        *_mix(run_id),
        sample_result(run_id, "p4", 1, "superseded", ledger=[cut, streaming]),
        sample_result(run_id, "p4", 2, "superseded", ledger=[])])
    summary = summarize_run(db_session, run_id=run_id)
    assert (summary.samples, summary.superseded, summary.agreement_cut_calls) == (8, 2, 1)
    per_generated_sample = (6 * 10 + 4 * 100 + 2 * 40) / 6  # the mix: 6 generated samples
    assert summary.agreement_tokens_saved == 90 + round(per_generated_sample)
    solve = next(st for st in summary.stages if st.stage == "solve")
    assert (solve.reached, solve.superseded, solve.passed) == (7, 1, 4)
    assert summary.tokens_saved == 2 * 60 + 90  # the ledger's own figure includes the cut


def test_accepted_answers_per_prompt_seed_a_resume(db_session: Session, run_id: str) -> None:
    save_results(db_session, results=_mix(run_id))
    assert accepted_answers(db_session, run_id=run_id, prompt_ids=["p1", "p3", "p9"]) == {
        "p1": ["1"], "p3": ["1"]}


def test_run_overview_view_agrees_with_summary(db_session: Session, run_id: str) -> None:
    save_results(db_session, results=_mix(run_id))
    summary = summarize_run(db_session, run_id=run_id)
    view = db_session.execute(text("SELECT * FROM run_overview WHERE run_id = :r"),
                              {"r": run_id}).mappings().one()
    for key in ("samples", "accepted", "rejected", "failed", "prompt_tokens",
                "completion_tokens", "tokens_saved", "calls", "aborted_calls"):
        assert view[key] == getattr(summary, key), key
    assert float(view["saved_pct"]) == pytest.approx(100 * 120 / (540 + 120), abs=0.05)
    by_validator = db_session.execute(text(
        "SELECT validator, rejections FROM rejections_by_validator WHERE run_id = :r"),
        {"r": run_id}).tuples().all()
    assert dict(by_validator) == summary.rejections_by_validator


@pytest.mark.parametrize("status", ["done", "", "COMPLETED"])
def test_finish_run_rejects_unknown_status(db_session: Session, run_id: str,
                                           status: str) -> None:
    with pytest.raises(ValueError, match="run status"):
        finish_run(db_session, run_id=run_id, status=status)


def test_unknown_run_is_a_database_error(db_session: Session) -> None:
    with pytest.raises(DatabaseError, match="not in the database"):
        summarize_run(db_session, run_id="no-such-run")
    with pytest.raises(DatabaseError, match="never started"):
        finish_run(db_session, run_id="no-such-run", status="completed")


def test_queries_say_what_they_answer() -> None:
    assert len(QUERIES) >= 3
    for path in QUERIES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("-- ") and len(first) > 20, path.name


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.stem)
def test_user_queries_run(db_session: Session, run_id: str, path: Path) -> None:
    """Each file runs as psql would run it (with -v run_id=...) and returns rows. (The psql
    block that picks the latest run without -v run_id is tested through psql in
    tests/sql/test_queries.py.)"""
    # the mix, and a sample its prompt's agreeing siblings made unnecessary
    save_results(db_session, results=[*_mix(run_id),
                                      sample_result(run_id, "p1", 2, "superseded")])
    sql = re.sub(r"(?m)^\\ir .*\n", "", path.read_text(encoding="utf-8"))
    sql = sql.replace(":'run_id'", f"'{run_id}'").replace("%", "%%")  # psycopg: no params
    rows = db_session.connection().exec_driver_sql(sql).all()
    assert rows, path.name
