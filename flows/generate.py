"""The nightly generation flow: prompts → shards → one task per shard → summary and export."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.runtime import flow_run

from foldem.jobspec import load_job
from tasks.endpoints import endpoint_urls
from tasks.models import RunSummary, WorkItem
from tasks.prefect_tasks import (
    begin_run_task,
    complete_run_task,
    dedup_task,
    export_task,
    load_prompts_task,
    prepare_database_task,
    process_shard_task,
    quality_gate_task,
)
from tasks.probe_store import check_abort_probes
from tasks.progress import ProgressBoard
from tasks.prompts import shard, work_items
from tasks.quality_gate import gate_failure_message, gate_markdown
from tasks.reporting import summary_markdown
from tasks.run_context import RunContext, close_context, open_context


def new_run_id(job_name: str) -> str:
    return f"{job_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:60] or "run"


async def _report_progress(board: ProgressBoard, artifact_id: UUID, every: float = 2.0) -> None:
    logger = get_run_logger()
    last = -1
    while True:
        await asyncio.sleep(every)
        if board.finished != last:
            last = board.finished
            logger.info(board.line())
            await aupdate_progress_artifact(artifact_id, progress=round(board.fraction * 100, 1),
                                            description=board.line())


async def _fan_out(ctx: RunContext, items: list[WorkItem]) -> list[BaseException]:
    """One task per shard, all in this event loop (the endpoint semaphores span them);
    a progress artifact moves while they run. Returns the shards' failures."""
    board, run_id = ctx.board, ctx.run_id
    artifact = await acreate_progress_artifact(
        progress=round(board.fraction * 100, 1), key=f"{_slug(ctx.job.name)}-progress",
        description=f"run {run_id}")
    reporter = asyncio.create_task(_report_progress(board, artifact))
    try:
        outcomes = await asyncio.gather(*(
            process_shard_task.with_options(
                task_run_name=f"shard-{i:04d} ({len(s)} samples)")(run_id, i, s)
            for i, s in enumerate(shard(items, ctx.job.shard_size))), return_exceptions=True)
    finally:
        reporter.cancel()
    await aupdate_progress_artifact(artifact, progress=round(board.fraction * 100, 1),
                                    description=board.line())
    return [o for o in outcomes if isinstance(o, BaseException)]


@flow(name="generate", log_prints=True, persist_result=False)
async def generate(job_path: str, run_id: str | None = None,
                   database_url: str | None = None) -> RunSummary:
    """Generate samples for a job spec with in-flight rejection; resume `run_id` if it exists."""
    logger = get_run_logger()
    job = load_job(job_path)
    run_id = run_id or new_run_id(job.name)
    prompts = load_prompts_task(job)
    db_url = prepare_database_task(job, database_url)
    total = len(prompts) * job.samples_per_prompt
    server_tokens: int | None = None
    with endpoint_urls(job) as (urls, replay):
        ctx = open_context(job, run_id=run_id, database_url=db_url, base_urls=urls,
                           board=ProgressBoard(total=total))
        try:
            for client in ctx.engine.clients.values():
                await client.preflight()  # a dead endpoint fails here, before the run is recorded
            check_abort_probes(job, db_url)  # so does one whose aborts were measured not to work
            resumed, done = begin_run_task(db_url, job, run_id, total, flow_run.id)
            items = work_items(prompts, job.samples_per_prompt, done)
            ctx.board.done_before = total - len(items)
            logger.info(f"run {run_id}: {len(prompts)} prompts x {job.samples_per_prompt} "
                        f"samples; {'resuming, ' if resumed else ''}{len(items)} to generate")
            failures = await _fan_out(ctx, items)
            if replay is not None:
                server_tokens = replay.stats().total_completion_tokens
        finally:
            session_tokens = ctx.engine.session_completion_tokens
            await close_context(run_id)
    status = "failed" if failures else "completed"
    dedup = dedup_task(db_url, run_id, job.dedup) if not failures and job.dedup.enabled else None
    gate = None
    if not failures and job.quality_gate.enabled:
        gate = quality_gate_task(db_url, run_id, job.quality_gate)
        await acreate_markdown_artifact(gate_markdown(gate), key=f"{_slug(job.name)}-quality-gate",
                                        description=f"quality gate of run {run_id}")
        if not gate.passed:
            status = "quarantined"  # the data stays in Postgres for inspection; no export
            logger.warning(gate_failure_message(gate))
    summary = complete_run_task(db_url, run_id, status)
    summary.server_tokens_sent = server_tokens
    summary.quality_gate = None if gate is None else (
        "passed" if gate.passed else gate_failure_message(gate))
    summary.near_duplicates_removed = None if dedup is None else (
        dedup.removed_within_run + dedup.removed_against_earlier)
    if server_tokens is not None and server_tokens != session_tokens:
        logger.warning(f"the ledger counted {session_tokens} completion tokens this session; "
                       f"the replay endpoint says it sent {server_tokens}")
    manifest = export_task(db_url, run_id, job) if status == "completed" else None
    summary.exported_to = None if manifest is None else str(
        Path(job.export.dir.format(job=job.name, run_id=run_id)))
    await acreate_markdown_artifact(
        summary_markdown(summary, job_name=job.name),
        key=f"{_slug(job.name)}-summary", description=f"summary of run {run_id}")
    if failures:
        raise failures[0]
    return summary
