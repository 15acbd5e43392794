"""Prefect tasks: thin wrappers over the plain functions. Retries sit on I/O tasks only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NONE

from foldem.core.errors import FoldemError
from foldem.spec.job import JobSpec
from foldem.spec.sections import DedupSettings, QualityGateSettings
from tasks.outputs.export import ExportManifest, export_run
from tasks.probe.store import check_abort_probes
from tasks.quality.dedup import DedupResult, dedup_run
from tasks.quality.gate import GateResult, run_quality_gate, save_gate_result
from tasks.records.models import Prompt, RunSummary, SampleResult, SampleStatus, WorkItem
from tasks.reports.audit_page import audit_page_path, write_audit_page
from tasks.reports.summary import summary_markdown
from tasks.run import lifecycle
from tasks.run.claims import ShardRow
from tasks.run.context import get_context
from tasks.run.prompts import load_prompts
from tasks.run.shard import process_items
from tasks.store.db import get_engine, session_scope


@task(name="load-prompts", cache_policy=NONE)
def load_prompts_task(job: JobSpec) -> list[Prompt]:
    return load_prompts(job)


@task(name="prepare-database", retries=2, retry_delay_seconds=3, cache_policy=NONE)
def prepare_database_task(job: JobSpec, override_url: str | None) -> str:
    return lifecycle.prepare_database(job, override_url)


@task(name="begin-run", retries=2, retry_delay_seconds=3, cache_policy=NONE)
def begin_run_task(database_url: str, job: JobSpec, run_id: str, samples_expected: int,
                   flow_run_id: str | None, shards: Sequence[ShardRow] = (),
                   join: bool = False, retry_failed: bool = True) -> lifecycle.RunStart:
    return lifecycle.begin_run(database_url, job, run_id=run_id,
                               samples_expected=samples_expected, flow_run_id=flow_run_id,
                               shards=shards, join=join, retry_failed=retry_failed)


@task(name="process-shard", retries=2, retry_delay_seconds=5, cache_policy=NONE)
async def process_shard_task(run_id: str, shard_no: int,
                             items: Sequence[WorkItem]) -> dict[str, int]:
    """Run one shard's samples; on a retry, samples already written are skipped (and under
    agreement, each prompt's stored accepted answers count towards its k)."""
    ctx = get_context(run_id)
    pending = await asyncio.to_thread(lifecycle.pending, ctx.database_url, run_id=run_id,
                                      items=items)

    def save(batch: Sequence[SampleResult]) -> None:
        lifecycle.save_batch(ctx.database_url, batch)

    agreement = ctx.job.early_exit
    agreed = (await asyncio.to_thread(lifecycle.accepted_answers, ctx.database_url,
                                      run_id=run_id, items=pending)
              if agreement is not None and pending else None)
    results = await process_items(ctx.engine, pending, save=save, board=ctx.board,
                                  agreement=agreement, agreed=agreed)
    counts = {str(status): 0 for status in SampleStatus}
    for r in results:
        counts[r.status] += 1
    counts["skipped"] = len(items) - len(pending)
    return counts


@task(name="complete-run", retries=2, retry_delay_seconds=3, cache_policy=NONE)
def complete_run_task(database_url: str, run_id: str, status: str) -> RunSummary:
    return lifecycle.complete_run(database_url, run_id=run_id, status=status)


@task(name="read-summary", retries=2, retry_delay_seconds=3, cache_policy=NONE)
def read_summary_task(database_url: str, run_id: str) -> RunSummary:
    return lifecycle.read_summary(database_url, run_id=run_id)


@task(name="quality-gate", retries=1, retry_delay_seconds=3, cache_policy=NONE)
def quality_gate_task(database_url: str, run_id: str,
                      settings: QualityGateSettings) -> GateResult:
    """Great Expectations over the run's rows; the result is stored with the run."""
    result = run_quality_gate(database_url, run_id=run_id, settings=settings)
    with session_scope(get_engine(database_url)) as session:
        save_gate_result(session, result=result)
    return result


@task(name="dedup", retries=1, retry_delay_seconds=3, cache_policy=NONE)
def dedup_task(database_url: str, run_id: str, settings: DedupSettings) -> DedupResult:
    """MinHash near-duplicate removal over the run's accepted samples (idempotent)."""
    return dedup_run(database_url, run_id=run_id, settings=settings)


@task(name="export", retries=1, cache_policy=NONE)
def export_task(database_url: str, run_id: str, job: JobSpec) -> ExportManifest:
    out_dir = Path(job.export.dir.format(job=job.name, run_id=run_id))
    return export_run(database_url, run_id=run_id, out_dir=out_dir,
                      system_prompt=job.export.system_prompt, formats=job.export.formats,
                      strip_calculator_markup=job.export.strip_calculator_markup)


@task(name="write-audit-page", cache_policy=NONE)
def write_audit_page_task(database_url: str, run_id: str, job: JobSpec) -> str | None:
    """The run's audit page, next to its export; None (and a warning) when it cannot be
    written. The run is finished and its data in Postgres by then, so a page that fails never
    fails the run: `foldem report --run ID --html` writes it again."""
    try:
        with session_scope(get_engine(database_url)) as session:
            return str(write_audit_page(session, run_id=run_id,
                                        path=audit_page_path(job.export.dir, job_name=job.name,
                                                             run_id=run_id)))
    except FoldemError as exc:
        get_run_logger().warning(f"no audit page for run {run_id}: {exc.message}")
    except Exception:  # noqa: BLE001 - a report is not worth failing a finished run for
        get_run_logger().exception(f"no audit page for run {run_id} (a bug: please report it)")
    return None


@task(name="check-abort-probes", cache_policy=NONE)
def check_abort_probes_task(job: JobSpec, database_url: str) -> None:
    """Fail before the run when an endpoint's recorded abort probe says hanging up does not
    stop it (in-flight rejection would save nothing there)."""
    check_abort_probes(job, database_url)


@task(name="publish-summary", cache_policy=NONE)
async def publish_summary_task(summary: RunSummary, job_name: str, key: str) -> None:
    """The run summary as a markdown artifact of the flow run."""
    await acreate_markdown_artifact(summary_markdown(summary, job_name=job_name), key=key,
                                    description=f"summary of run {summary.run_id}")
