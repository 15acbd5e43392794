"""Export a run's accepted samples as training data, read straight from Postgres.

Two forms, each as JSONL and Parquet, all loadable as they are with Hugging Face `datasets`
(`load_dataset("json" | "parquet", data_files=...)`):
- chat (chat.jsonl, chat.parquet): `messages` = [system (when a system prompt is given),
  user = the problem, assistant = the final solution text] — what chat fine-tuning expects;
- plain (plain.jsonl, plain.parquet): problem, solution, answer, reference_answer, run_id,
  prompt_id, sample_index — for analysis and for joining back to the database.
Both list the samples in the same order (prompt_id, sample_index): row i of one is row i of the
other. manifest.json (an `ExportManifest`) names the run, its spec hash, counts and each file's
sha256; it is written last, so a directory with a manifest holds a complete export.

Rows are streamed from a server-side cursor in batches into one sink per file (one sink class per
format, tasks/outputs/sinks.py), so memory stays bounded however large the run. Every file is
written under a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from foldem.core.errors import ConfigError, DatabaseError
from foldem.spec.sections import EXPORT_FORMATS, ExportFormat
from tasks.outputs.manifest import FORMS, MANIFEST_NAME, ExportManifest
from tasks.outputs.sinks import SINKS, Sink
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import runs, samples
from tasks.store.solutions import solution_text, solve_stage_names

FETCH_ROWS = 1000  # rows per round trip from the server-side cursor


def _accepted_batches(session: Session, run_id: str, solve_stages: frozenset[str],
                      ) -> Iterator[list[dict[str, Any]]]:
    """The run's accepted samples as plain rows, FETCH_ROWS at a time (server-side cursor)."""
    stmt = (select(samples.c.prompt_id, samples.c.sample_index, samples.c.problem,
                   samples.c.reference_answer, samples.c.stage_texts, samples.c.final_answer)
            .where(samples.c.run_id == run_id, samples.c.status == "accepted")
            .order_by(samples.c.prompt_id, samples.c.sample_index)
            .execution_options(yield_per=FETCH_ROWS))
    for part in session.execute(stmt).partitions():
        yield [{"problem": r.problem, "solution": solution_text(r.stage_texts, solve_stages),
                "answer": r.final_answer, "reference_answer": r.reference_answer,
                "run_id": run_id, "prompt_id": r.prompt_id, "sample_index": r.sample_index}
               for r in part]


def _chat_rows(plain: Iterable[dict[str, Any]], system_prompt: str | None,
               ) -> list[dict[str, Any]]:
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [{"messages": [*head, {"role": "user", "content": r["problem"]},
                          {"role": "assistant", "content": r["solution"]}]} for r in plain]


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


def export_run(database_url: str, *, run_id: str, out_dir: Path,
               system_prompt: str | None = None,
               formats: Iterable[str] = EXPORT_FORMATS) -> ExportManifest:
    """Write the run's accepted samples to out_dir (chat/plain × chosen formats) and
    manifest.json; return the manifest. Raises DatabaseError for an unknown run and
    ConfigError for an unknown format or an out_dir that cannot be written."""
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
        sinks: list[Sink] = []
        try:
            for form in FORMS:
                for fmt in chosen:
                    sinks.append(SINKS[fmt](out_dir, form))
            for plain in _accepted_batches(session, run_id, solve_stage_names(run.spec)):
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
    # The manifest is the commit point: drop the old one before any file changes, so a
    # directory with a manifest never holds files other than the ones it describes.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    files = [sink.finish() for sink in sinks]
    manifest = ExportManifest(
        run_id=run_id, job_name=run.job_name, spec_hash=run.spec_hash,
        code_version=run.code_version, run_status=run.status, rows=files[0].rows,
        samples_by_status=by_status, system_prompt=system_prompt or None, files=files,
        created_at=datetime.now(UTC))
    _write_atomically(out_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
    return manifest
