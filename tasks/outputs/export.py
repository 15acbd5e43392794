"""Export a run's accepted samples as training data, read straight from Postgres.

Two forms, each as JSONL and Parquet, all loadable as they are with Hugging Face `datasets`
(`load_dataset("json" | "parquet", data_files=...)`):
- chat (chat.jsonl, chat.parquet): `messages` = [system, user = the problem, assistant = the
  final solution text] — what chat fine-tuning expects. The system message is the export's
  `system_prompt` when given, else the one the job's solve stage sent (none if it had none);
- plain (plain.jsonl, plain.parquet): problem, solution, answer, reference_answer — for
  analysis.
Both forms carry the trace columns (`TRACE_COLUMNS`): run_id, prompt_id, sample_index (the
sample's key in the database), the endpoint and model of the call that wrote the solution (the
model the endpoint named, e.g. the recorded generator behind a replay of `*`, else the one asked
for) and early_exit (the stream was stopped at a complete final answer); the chat form also has
the final answer. Extra columns beside `messages` are what common chat datasets carry too.
Both list the samples in the same order (prompt_id, sample_index): row i of one is row i of the
other. manifest.json (an `ExportManifest`) names the run, its job (endpoints and the models they
served, sampling, stages and validators), counts and each file's sha256; it is written last, so
a directory with a manifest holds a complete export.

`strip_calculator_markup` removes GSM8K-style calculator annotations (`<<48/2=24>>`) from the
solution text; off by default, since they are what the recorded text said.

Rows are streamed from a server-side cursor in batches into one sink per file (one sink class per
format, tasks/outputs/sinks.py), so memory stays bounded however large the run. Every file is
written under a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from foldem.core.errors import ConfigError, DatabaseError
from foldem.spec.sections import EXPORT_FORMATS, ExportFormat
from tasks.outputs.manifest import (
    FORMS,
    MANIFEST_NAME,
    ExportCounts,
    ExportManifest,
    job_endpoints,
    job_sampling,
    job_stages,
)
from tasks.outputs.sinks import SINKS, Sink
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import runs, samples
from tasks.store.solutions import solution_text, solve_stage_names

FETCH_ROWS = 1000  # rows per round trip from the server-side cursor
CALCULATOR_MARKUP = re.compile(r"<<[^<>\n]*>>")

# The call that wrote each sample's solution: the latest generation call of a solve stage (an
# earlier one moved to another endpoint before its first token). One sorted pass over the run's
# ledger, not a lookup per sample.
_ACCEPTED = """
WITH solve_calls AS (
    SELECT DISTINCT ON (prompt_id, sample_index)
           prompt_id, sample_index, endpoint, coalesce(served_model, model) AS model
    FROM ledger
    WHERE run_id = :run_id AND call_kind = 'generate'
      AND (cardinality(CAST(:solve AS text[])) = 0 OR stage = ANY(CAST(:solve AS text[])))
    ORDER BY prompt_id, sample_index, started_at DESC
)
SELECT s.prompt_id, s.sample_index, s.problem, s.reference_answer, s.stage_texts,
       s.final_answer, s.early_exit, c.endpoint, c.model
FROM samples AS s LEFT JOIN solve_calls AS c USING (prompt_id, sample_index)
WHERE s.run_id = :run_id AND s.status = 'accepted'
ORDER BY s.prompt_id, s.sample_index"""
_SERVED = """
SELECT endpoint, served_model FROM ledger
WHERE run_id = :run_id AND served_model IS NOT NULL
GROUP BY endpoint, served_model ORDER BY endpoint, served_model"""


def strip_calculator_markup(text: str) -> str:
    """`48/2 = <<48/2=24>>24` -> `48/2 = 24`."""
    return CALCULATOR_MARKUP.sub("", text)


def _accepted_batches(session: Session, run_id: str, solve_stages: frozenset[str],
                      strip_markup: bool = False) -> Iterator[list[dict[str, Any]]]:
    """The run's accepted samples as plain rows, FETCH_ROWS at a time (server-side cursor)."""
    stmt = sa.text(_ACCEPTED).execution_options(yield_per=FETCH_ROWS)
    result = session.execute(stmt, {"run_id": run_id, "solve": sorted(solve_stages)})
    for part in result.partitions():
        batch = []
        for r in part:
            solution = solution_text(r.stage_texts, solve_stages)
            batch.append({
                "problem": r.problem,
                "solution": strip_calculator_markup(solution) if strip_markup else solution,
                "answer": r.final_answer, "reference_answer": r.reference_answer,
                "run_id": run_id, "prompt_id": r.prompt_id, "sample_index": r.sample_index,
                "endpoint": r.endpoint, "model": r.model, "early_exit": r.early_exit})
        yield batch


def _chat_rows(plain: Iterable[dict[str, Any]], system_prompt: str | None,
               ) -> list[dict[str, Any]]:
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [{"messages": [*head, {"role": "user", "content": r["problem"]},
                          {"role": "assistant", "content": r["solution"]}],
             "run_id": r["run_id"], "prompt_id": r["prompt_id"],
             "sample_index": r["sample_index"], "endpoint": r["endpoint"], "model": r["model"],
             "early_exit": r["early_exit"], "answer": r["answer"]} for r in plain]


def job_system_prompt(spec: Any) -> str | None:
    """The system message the job's (last) solve stage sent, from the stored spec."""
    solve = solve_stage_names(spec)
    stages = [s for s in job_stages(spec) if not solve or s.name in solve]
    return stages[-1].system if stages else None


def _check_formats(formats: Iterable[str]) -> tuple[ExportFormat, ...]:
    chosen = tuple(dict.fromkeys(formats))
    bad = [f for f in chosen if f not in EXPORT_FORMATS]
    if bad or not chosen:
        raise ConfigError(f"export formats must be one or more of {list(EXPORT_FORMATS)}, "
                          f"got {list(chosen)}")
    return tuple(f for f in EXPORT_FORMATS if f in chosen)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_files(session: Session, chosen: Sequence[ExportFormat], run_id: str, spec: Any,
                 system_prompt: str | None, strip_markup: bool, out_dir: Path) -> list[Sink]:
    """Every file of the export under its temporary name; on any failure, none of them."""
    sinks: list[Sink] = []
    try:
        for form in FORMS:
            for fmt in chosen:
                sinks.append(SINKS[fmt](out_dir, form))
        for plain in _accepted_batches(session, run_id, solve_stage_names(spec), strip_markup):
            chat = _chat_rows(plain, system_prompt)
            for sink in sinks:
                sink.write(chat if sink.form == "chat" else plain)
        for sink in sinks:
            sink.close()
    except BaseException as exc:
        for sink in sinks:
            sink.discard()
        if isinstance(exc, OSError):  # disk full, permissions: the user's to fix
            raise ConfigError(f"cannot write the export to {out_dir}: "
                              f"{exc.strerror or exc}") from None
        raise
    return sinks


def export_run(database_url: str, *, run_id: str, out_dir: Path,
               system_prompt: str | None = None,
               formats: Iterable[str] = EXPORT_FORMATS,
               strip_calculator_markup: bool = False) -> ExportManifest:
    """Write the run's accepted samples to out_dir (chat/plain × chosen formats) and
    manifest.json; return the manifest. `system_prompt` None: the job's solve stage's own.
    Raises DatabaseError for an unknown run and ConfigError for an unknown format or an
    out_dir that cannot be written."""
    chosen = _check_formats(formats)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the export directory {out_dir}: {exc.strerror}"
                          ) from None
    with session_scope(get_engine(database_url)) as session:
        run = session.execute(select(runs.c.job_name, runs.c.spec_hash, runs.c.code_version,
                                     runs.c.status, runs.c.spec)
                              .where(runs.c.run_id == run_id)).first()
        if run is None:
            raise DatabaseError(f"run {run_id!r} is not in the database; nothing to export")
        by_status = {s: n for s, n in session.execute(
            select(samples.c.status, func.count()).where(samples.c.run_id == run_id)
            .group_by(samples.c.status)).tuples()}
        served: dict[str, list[str]] = {}
        for endpoint, model in session.execute(sa.text(_SERVED), {"run_id": run_id}):
            served.setdefault(endpoint, []).append(model)
        system_prompt = system_prompt or job_system_prompt(run.spec)
        sinks = _write_files(session, chosen, run_id, run.spec, system_prompt,
                             strip_calculator_markup, out_dir)
    # The manifest is the commit point: drop the old one before any file changes, so a
    # directory with a manifest never holds files other than the ones it describes.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    files = [sink.finish() for sink in sinks]
    manifest = ExportManifest(
        run_id=run_id, job_name=run.job_name, spec_hash=run.spec_hash,
        code_version=run.code_version, run_status=run.status, rows=files[0].rows,
        counts=ExportCounts(**{k: by_status.get(k, 0) for k in ("accepted", "rejected",
                                                                "failed", "superseded")},
                            exported=files[0].rows),
        samples_by_status=by_status, endpoints=job_endpoints(run.spec, served),
        sampling=job_sampling(run.spec), stages=job_stages(run.spec),
        system_prompt=system_prompt or None, strip_calculator_markup=strip_calculator_markup,
        files=files, created_at=datetime.now(UTC))
    _write_atomically(out_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
    return manifest
