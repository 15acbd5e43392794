"""Persistence of runs, samples, rejections and the token ledger.

Every function takes the caller's session first and never commits: the caller's transaction
(`tasks.store.db.session_scope`) decides, so a batch of samples, their rejections and their
ledger rows land together or not at all. Writes are idempotent — re-saving results (a retried
shard, a resumed run) never duplicates a row, and a sample already in a final state is never
overwritten (a resume that retries failed samples removes them first: `forget_failed`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, Insert, insert
from sqlalchemy.orm import Session

from foldem.core.errors import DatabaseError, RunConflictError
from tasks.records.models import (
    FINAL_STATUSES,
    SampleResult,
)
from tasks.store.schema import RUN_STATUSES, ledger, rejections, runs, samples

SampleKey = tuple[str, int]  # (prompt_id, sample_index)


def start_run(session: Session, *, run_id: str, job_name: str, spec: dict[str, Any],
              spec_hash: str, code_version: str, samples_expected: int,
              prefect_flow_run_id: str | None = None, join: bool = False) -> bool:
    """Create the run, or resume it if it exists with the same spec; True when resuming.

    Several flow runs may resume one run at once: they are peers that share its shards
    (tasks/run/claims.py). With `join`, the run must exist already and is left as it is (a helper
    flow run never creates, restarts or re-labels a run).

    Raises RunConflictError if the run exists with a different spec_hash, or (`join`) does not
    exist.
    """
    created = None if join else session.execute(
        insert(runs).values(run_id=run_id, job_name=job_name, spec=spec, spec_hash=spec_hash,
                            code_version=code_version, prefect_flow_run_id=prefect_flow_run_id,
                            status="running", samples_expected=samples_expected)
        .on_conflict_do_nothing(index_elements=[runs.c.run_id])
        .returning(runs.c.run_id)).first()
    if created is not None:
        return False
    # FOR UPDATE: two processes resuming the same run at once see each other's status change.
    existing = session.execute(select(runs.c.spec_hash, runs.c.job_name)
                               .where(runs.c.run_id == run_id).with_for_update()).first()
    if existing is None:
        raise RunConflictError(run_id, "there is no such run to join; start it first")
    if existing.spec_hash != spec_hash:
        raise RunConflictError(
            run_id, f"it exists with a different job spec (job {existing.job_name!r}, spec hash "
            f"{existing.spec_hash}; this spec hashes to {spec_hash}). Resume it with the spec it "
            "was started with, or start a new run with another --run-id")
    if join:
        return True
    changes: dict[str, Any] = {"status": "running", "ended_at": None,
                               "samples_expected": samples_expected}
    if prefect_flow_run_id is not None:
        changes["prefect_flow_run_id"] = prefect_flow_run_id
    session.execute(update(runs).where(runs.c.run_id == run_id).values(**changes))
    return True


def done_keys(session: Session, *, run_id: str,
              prompt_ids: Sequence[str] | None = None) -> set[SampleKey]:
    """(prompt_id, sample_index) of the run's samples in a final state: skip these on resume.
    `prompt_ids` narrows the read to those prompts (one shard's, say)."""
    query = select(samples.c.prompt_id, samples.c.sample_index).where(
        samples.c.run_id == run_id, samples.c.status.in_(FINAL_STATUSES))
    if prompt_ids is not None:
        query = query.where(samples.c.prompt_id.in_(sorted(set(prompt_ids))))
    return {(r.prompt_id, r.sample_index) for r in session.execute(query)}


def accepted_answers(session: Session, *, run_id: str,
                     prompt_ids: Sequence[str]) -> dict[str, list[str | None]]:
    """The final answers of the run's accepted samples, per prompt id (of those given): what
    a resumed prompt under `early_exit: {agreement: k}` has agreed on so far."""
    found: dict[str, list[str | None]] = {}
    for row in session.execute(
            select(samples.c.prompt_id, samples.c.final_answer)
            .where(samples.c.run_id == run_id, samples.c.status == "accepted",
                   samples.c.prompt_id.in_(sorted(set(prompt_ids))))
            .order_by(samples.c.prompt_id, samples.c.sample_index)):
        found.setdefault(row.prompt_id, []).append(row.final_answer)
    return found


def forget_failed(session: Session, *, run_id: str) -> int:
    """Remove the run's failed samples so that a resume generates them again; their ledger rows
    stay (those calls happened and cost what they cost). Returns how many were removed."""
    done = session.execute(delete(samples).where(samples.c.run_id == run_id,
                                                 samples.c.status == "failed"))
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


def count_final(session: Session, *, run_id: str) -> int:
    """How many of the run's samples are in a final state (every flow run's)."""
    return int(session.execute(select(func.count()).select_from(samples).where(
        samples.c.run_id == run_id, samples.c.status.in_(FINAL_STATUSES))).scalar() or 0)


def _clean_text(text: str) -> str:
    if "\x00" in text:  # Postgres text and jsonb cannot store NUL
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a "\ud800" escape in a JSON chunk
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _scrub(value: Any) -> Any:
    """Make a row storable whatever the model wrote (its output is untrusted): text without NUL
    or lone surrogates, non-finite floats (not JSON) as NULL. One bad string must not sink a
    whole batch."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON array. The fast path serialises once and checks the whole text;
    only a batch holding a NUL, a lone surrogate or a NaN pays for the walk in _scrub."""
    try:
        text = json.dumps(rows, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        if "\\u0000" not in text:
            return text
    except ValueError:
        pass
    return json.dumps(_scrub(rows), ensure_ascii=False)


def _bulk_insert(table: Table, *conflict_key: str) -> Insert:
    """INSERT ... SELECT FROM jsonb_populate_recordset(NULL::table, :rows) ON CONFLICT DO NOTHING.

    One statement with one parameter (a JSON array of rows) per batch: Postgres unpacks and
    types the rows itself, and the statement text never changes, so psycopg prepares it once.
    For 50-sample batches this measured 1.4-2x faster than executemany, and ~3x faster than
    a multi-row VALUES (whose long, ever-new text psycopg re-parses on every batch).
    Columns left out (ids, created_at) take their server defaults.
    """
    columns = [c.name for c in table.columns
               if c.server_default is None and c.autoincrement is not True]
    source = func.jsonb_populate_recordset(literal_column(f"NULL::{table.name}"),
                                           cast(bindparam("rows", type_=Text), JSONB)
                                           ).table_valued(*columns, name="src")
    return (insert(table).from_select(columns, select(*[source.c[c] for c in columns]))
            .on_conflict_do_nothing(index_elements=list(conflict_key)))


_INSERT_SAMPLES = _bulk_insert(samples, "run_id", "prompt_id", "sample_index").returning(
    samples.c.run_id, samples.c.prompt_id, samples.c.sample_index)
_INSERT_REJECTIONS = _bulk_insert(rejections, "run_id", "prompt_id", "sample_index")
_INSERT_LEDGER = _bulk_insert(ledger, "call_id")


def _sample_row(r: SampleResult) -> dict[str, Any]:
    return {
        "run_id": r.run_id, "prompt_id": r.prompt_id, "sample_index": r.sample_index,
        "status": r.status, "problem": r.problem, "reference_answer": r.reference_answer,
        "stage_texts": [s.model_dump(mode="json") for s in r.stages],
        "final_answer": r.final_answer, "early_exit": r.early_exit, "error": r.error,
    }


def save_results(session: Session, *, results: Sequence[SampleResult]) -> int:
    """Write samples, their rejections and ledger rows in the caller's transaction.

    Three bulk statements per batch. Returns how many samples were new; a sample whose key is
    already stored keeps its stored row (every stored status is final), and its rejection is
    not written again. Ledger rows are keyed by call_id and are written even for a sample that
    was stored already: the calls happened and cost tokens either way.
    """
    if not results:
        return 0
    ledger_rows = [entry.model_dump(mode="json") for r in results for entry in r.ledger]
    results = [r for r in results if not r.interrupted]  # of those, only the calls are kept
    # Every status the CHECK constraint allows is final, so "do not overwrite a final sample"
    # is ON CONFLICT DO NOTHING; RETURNING tells which samples this call actually wrote.
    inserted = {
        (row.run_id, row.prompt_id, row.sample_index)
        for row in session.execute(_INSERT_SAMPLES,
                                   {"rows": _rows_json([_sample_row(r) for r in results])})
    } if results else set()
    rejection_rows = [
        {"run_id": r.run_id, "prompt_id": r.prompt_id, "sample_index": r.sample_index,
         **r.rejection.model_dump(mode="json")}
        for r in results
        if r.rejection is not None and (r.run_id, r.prompt_id, r.sample_index) in inserted
    ]
    if rejection_rows:
        session.execute(_INSERT_REJECTIONS, {"rows": _rows_json(rejection_rows)})
    if ledger_rows:
        session.execute(_INSERT_LEDGER, {"rows": _rows_json(ledger_rows)})
    return len(inserted)


def mark_interrupted(session: Session, *, run_id: str) -> bool:
    """Mark a run that is still 'running' as 'interrupted' (resumable); False if it was not
    running (finished already, or never started)."""
    done = session.execute(update(runs).where(runs.c.run_id == run_id, runs.c.status == "running")
                           .values(status="interrupted", ended_at=func.now()))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def finish_run(session: Session, *, run_id: str, status: str) -> None:
    """Record the run's final status and end time."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    done = session.execute(update(runs).where(runs.c.run_id == run_id)
                           .values(status=status, ended_at=func.now()))
    if done.rowcount == 0:  # type: ignore[attr-defined]
        raise DatabaseError(f"run {run_id!r} is not in the database; it was never started")
