"""Plain functions for a run's database and file I/O (the Prefect tasks wrap these)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from foldem import PROJECT_ROOT, __version__
from foldem.spec.job import JobSpec
from tasks.records.models import RunSummary, SampleResult, WorkItem
from tasks.run.claims import ShardRow, register_shards, reopen_shards
from tasks.store import storage
from tasks.store.db import get_engine, migrate, resolve_database_url, session_scope
from tasks.store.run_summary import summarize_run
from tasks.store.schema import runs
from tasks.store.storage import done_keys, finish_run, save_results, start_run


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def prepare_database(job: JobSpec, override_url: str | None = None) -> str:
    """Resolve the database (starting the embedded one if needed) and migrate it to head."""
    url = override_url or resolve_database_url(spec_url=job.database_url)
    migrate(url)
    return url


@dataclass(frozen=True, slots=True)
class RunStart:
    """What a flow run found when it began its part of a run."""

    resumed: bool  # the run existed already
    status: str  # the run's status now (a joining helper leaves a finished run alone)
    done: set[tuple[str, int]]  # (prompt_id, sample_index) already in a final state


def begin_run(database_url: str, job: JobSpec, *, run_id: str, samples_expected: int,
              flow_run_id: str | None, shards: Sequence[ShardRow] = (),
              join: bool = False, retry_failed: bool = True) -> RunStart:
    """Create the run row (or resume it, or with `join` find it) and record its shards in the
    same transaction; return what is already done. Resuming, samples that failed (endpoint
    errors) are generated again unless `retry_failed` is off; a joining peer changes nothing."""
    with session_scope(get_engine(database_url)) as session:
        resumed = start_run(session, run_id=run_id, job_name=job.name, spec=job.snapshot(),
                            spec_hash=job.spec_hash(), code_version=code_version(),
                            samples_expected=samples_expected, prefect_flow_run_id=flow_run_id,
                            join=join)
        if shards:
            register_shards(session, run_id=run_id, shards=shards)
        if resumed and retry_failed and not join and storage.forget_failed(session,
                                                                           run_id=run_id):
            reopen_shards(session, run_id=run_id)
    with session_scope(get_engine(database_url)) as session:
        status = session.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar()
        return RunStart(resumed, str(status), done_keys(session, run_id=run_id))


def pending(database_url: str, *, run_id: str, items: Sequence[WorkItem]) -> list[WorkItem]:
    """The items not yet in a final state (a retried or resumed shard skips what is written)."""
    with session_scope(get_engine(database_url)) as session:
        done = done_keys(session, run_id=run_id, prompt_ids=[i.prompt.prompt_id for i in items])
    return [i for i in items if (i.prompt.prompt_id, i.sample_index) not in done]


def accepted_answers(database_url: str, *, run_id: str,
                     items: Sequence[WorkItem]) -> dict[str, list[str | None]]:
    """The accepted final answers already stored for the items' prompts (seeds a resumed
    prompt's agreement)."""
    with session_scope(get_engine(database_url)) as session:
        return storage.accepted_answers(session, run_id=run_id,
                                        prompt_ids=[i.prompt.prompt_id for i in items])


def save_batch(database_url: str, results: Sequence[SampleResult]) -> None:
    with session_scope(get_engine(database_url)) as session:
        save_results(session, results=results)


def read_summary(database_url: str, *, run_id: str) -> RunSummary:
    """The run's summary as stored, changing nothing (a peer finalized it)."""
    with session_scope(get_engine(database_url)) as session:
        return summarize_run(session, run_id=run_id)


def run_progress(database_url: str, *, run_id: str) -> int:
    """The run's samples in a final state, written by any of its flow runs."""
    with session_scope(get_engine(database_url)) as session:
        return storage.count_final(session, run_id=run_id)


def mark_interrupted(database_url: str, *, run_id: str) -> bool:
    """Record that the run was stopped by an interrupt (Ctrl-C, SIGTERM): it stays resumable."""
    with session_scope(get_engine(database_url)) as session:
        return storage.mark_interrupted(session, run_id=run_id)


def complete_run(database_url: str, *, run_id: str, status: str) -> RunSummary:
    with session_scope(get_engine(database_url)) as session:
        finish_run(session, run_id=run_id, status=status)
    with session_scope(get_engine(database_url)) as session:
        return summarize_run(session, run_id=run_id)
