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
from prefect.deployments import arun_deployment
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_UI_URL

from foldem.core.errors import ConfigError, DatabaseError
from foldem.spec.job import JobSpec, load_job
from tasks.prefect_tasks import (
    begin_run_task,
    check_abort_probes_task,
    complete_run_task,
    dedup_task,
    export_task,
    load_prompts_task,
    prepare_database_task,
    process_shard_task,
    publish_summary_task,
    quality_gate_task,
    read_summary_task,
    write_audit_page_task,
)
from tasks.records.models import RunSummary
from tasks.run.claims import PlannedShard, ShardClaims, plan_shards, this_process
from tasks.run.context import RunContext, close_context, open_context
from tasks.run.embedded_endpoints import endpoint_urls
from tasks.run.lifecycle import run_progress
from tasks.run.preflight import preflight_run
from tasks.run.progress import ProgressBoard
from tasks.run.prompts import work_items
from tasks.run.shard_pool import Share, lanes_for, shard_streams, work_through


def new_run_id(job_name: str) -> str:
    return f"{job_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:60] or "run"


async def _report_progress(ctx: RunContext, artifact_id: UUID, every: float = 2.0) -> None:
    logger, board = get_run_logger(), ctx.board
    last = ""
    while True:
        await asyncio.sleep(every)
        await _read_run_progress(ctx)
        line = board.line()
        if line != last:
            last = line
            logger.info(f"run {ctx.run_id}: {line}")
            await aupdate_progress_artifact(artifact_id, progress=round(board.fraction * 100, 1),
                                            description=line)


async def _read_run_progress(ctx: RunContext) -> None:
    """The run's count from Postgres: peers' samples too. A failed read keeps the last one."""
    try:
        ctx.board.run_finished = await asyncio.to_thread(run_progress, ctx.database_url,
                                                         run_id=ctx.run_id)
    except DatabaseError as exc:
        get_run_logger().warning(f"progress: cannot read the run's count ({exc.message})")


async def _fan_out(ctx: RunContext, claims: ShardClaims, shards: list[PlannedShard]) -> Share:
    """This flow run's share of the shards (claimed against its peers, tasks/run/shard_pool.py),
    one Prefect task per shard, all in this event loop (the endpoint semaphores span them);
    a progress artifact moves while they run."""
    board, run_id = ctx.board, ctx.run_id
    artifact = await acreate_progress_artifact(
        progress=round(board.fraction * 100, 1), key=f"{_slug(ctx.job.name)}-progress",
        description=f"run {run_id}")
    reporter = asyncio.create_task(_report_progress(ctx, artifact))

    async def run_shard(s: PlannedShard) -> dict[str, int]:
        return await process_shard_task.with_options(
            task_run_name=f"shard-{s.shard_no:04d} ({len(s.items)} samples)")(
                run_id, s.shard_no, s.items)

    streams = sum(ep.max_concurrent_streams for ep in ctx.job.endpoints)
    try:
        share = await work_through(claims, shards, run_shard,
                                   lanes=lanes_for(streams, shard_streams(ctx.job)))
    finally:
        reporter.cancel()
    await _read_run_progress(ctx)
    await aupdate_progress_artifact(artifact, progress=round(board.fraction * 100, 1),
                                    description=board.line())
    return share


async def _start_peers(flow_runs: int, *, job_path: str, run_id: str,
                       database_url: str | None) -> None:
    """Ask the work pool for flow_runs - 1 more flow runs of this deployment on this run."""
    logger = get_run_logger()
    if flow_runs <= 1:
        return
    if deployment.id is None:
        logger.warning(f"flow_runs={flow_runs} needs a deployment (its work pool runs the "
                       "peers); here this flow run works alone. More workers on one machine: "
                       f"start `foldem run JOB --run-id {run_id}` again beside this one")
        return
    for n in range(2, flow_runs + 1):
        peer = await arun_deployment(
            deployment.id, timeout=0, as_subflow=False,
            parameters={"job_path": job_path, "run_id": run_id, "database_url": database_url,
                        "flow_runs": 1, "join": True},
            flow_run_name=f"{_slug(run_id)}-peer-{n}", tags=["foldem-peer"],
            idempotency_key=f"{flow_run.id}-peer-{n}")  # a retried flow run adds none twice
        logger.info(f"started peer flow run {peer.name} ({peer.id}) on run {run_id}")


async def _finish(job: JobSpec, db_url: str, claims: ShardClaims,
                  failures: dict[int, BaseException]) -> tuple[RunSummary, bool]:
    """Dedup, quality gate, final status and export, by one flow run of the run at a time: the
    first to take the finalize lock once every shard is done. A flow run that finds the run
    finalized already (by a peer) reads its summary. Returns (summary, finalized here)."""
    logger, run_id = get_run_logger(), claims.run_id
    while not await asyncio.to_thread(claims.try_finalize):  # a peer is finalizing
        await asyncio.sleep(0.5)
    state = await asyncio.to_thread(claims.run_state)
    if state.shards_left:
        logger.error(f"run {run_id}: {state.shards_left} shards are not done")
        return complete_run_task(db_url, run_id, "failed"), True
    if failures:
        logger.warning(f"{len(failures)} shards failed here but a peer finished them")
    if state.status in ("completed", "quarantined"):
        logger.info(f"run {run_id} was finalized by a peer ({state.status})")
        return read_summary_task(db_url, run_id), False
    status = "completed"
    dedup = dedup_task(db_url, run_id, job.dedup) if job.dedup.enabled else None
    gate = None
    if job.quality_gate.enabled:
        gate = quality_gate_task(db_url, run_id, job.quality_gate)
        await acreate_markdown_artifact(gate.markdown(), key=f"{_slug(job.name)}-quality-gate",
                                        description=f"quality gate of run {run_id}")
        if not gate.passed:
            status = "quarantined"  # the data stays in Postgres for inspection; no export
            logger.warning(gate.message())
    summary = complete_run_task(db_url, run_id, status)
    summary.quality_gate = None if gate is None else (
        "passed" if gate.passed else gate.message())
    summary.near_duplicates_removed = None if dedup is None else (
        dedup.removed_within_run + dedup.removed_against_earlier)
    manifest = export_task(db_url, run_id, job) if status == "completed" else None
    summary.exported_to = None if manifest is None else str(
        Path(job.export.dir.format(job=job.name, run_id=run_id)))
    return summary, True


def _artifacts_link() -> str | None:
    """The flow run's Artifacts tab in Prefect's current UI (Prefect's own log line opens the
    older UI, which ignores the tab)."""
    base = PREFECT_UI_URL.value()
    if not base or flow_run.id is None:
        return None
    return f"{str(base).rstrip('/')}/v2/runs/flow-run/{flow_run.id}?tab=Artifacts"


async def _name_after_run(run_id: str) -> None:
    """Name the flow run after the foldem run id, so the UI's run list finds it (peers keep the
    names the flow run that started them gave)."""
    if flow_run.id is None:
        return
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            await client.update_flow_run(UUID(str(flow_run.id)), name=run_id)
    except Exception as exc:  # noqa: BLE001 - a name is cosmetic; never fail the run for it
        get_run_logger().warning(f"could not rename the flow run to {run_id}: {exc}")


@flow(name="generate", log_prints=True, persist_result=False)
async def generate(job_path: str, run_id: str | None = None, database_url: str | None = None,
                   flow_runs: int = 1, join: bool = False,
                   retry_failed: bool = True) -> RunSummary:
    """Generate samples for a job spec with in-flight rejection; resume `run_id` if it exists.

    Several flow runs may work on one run id at once, sharing its shards (docs/OPERATIONS.md,
    "Scale-out"). `flow_runs` > 1, in a deployment's flow run, asks its work pool for that many
    flow runs in all. `join`: help the flow run that started `run_id`; never start or restart it.
    `retry_failed`: resuming, generate the samples that failed (endpoint errors) again.
    """
    logger = get_run_logger()
    job = load_job(job_path)
    if join and not run_id:
        raise ConfigError("join=True needs the run_id of the run to join")
    run_id = run_id or new_run_id(job.name)
    if not join:
        await _name_after_run(run_id)
    if link := _artifacts_link():
        logger.info(f"run {run_id} in the Prefect UI, with its progress, summary and quality "
                    f"gate: {link}")
    prompts = load_prompts_task(job)
    db_url = prepare_database_task(job, database_url)
    total = len(prompts) * job.samples_per_prompt
    shards = plan_shards(work_items(prompts, job.samples_per_prompt), job.shard_size,
                         whole_prompts=job.early_exit is not None)
    claims = ShardClaims(db_url, run_id, owner=str(flow_run.id or this_process()))
    server_tokens: int | None = None
    try:
        with endpoint_urls(job) as (urls, replay):
            ctx = open_context(job, run_id=run_id, database_url=db_url, base_urls=urls,
                               board=ProgressBoard(total=total))
            try:
                priced, unpriced = ctx.price_notes()
                for line in priced:
                    logger.info(line)
                if unpriced:
                    logger.warning(unpriced)
                # A stage with no live endpoint fails here, before the run; a dead replica of
                # several is taken out of rotation with a warning.
                for warning in await preflight_run(ctx.engine):
                    logger.warning(warning)
                # So does one whose aborts were measured not to stop generation.
                check_abort_probes_task(job, db_url)
                start = begin_run_task(db_url, job, run_id, total, flow_run.id,
                                       [s.row for s in shards], join, retry_failed)
                if join and start.status != "running":
                    logger.info(f"run {run_id} is {start.status} already: nothing to join")
                    return read_summary_task(db_url, run_id)
                ctx.board.done_before = len(start.done)
                logger.info(f"run {run_id}: {len(prompts)} prompts x {job.samples_per_prompt} "
                            f"samples in {len(shards)} shards; "
                            f"{'resuming, ' if start.resumed else ''}"
                            f"{total - len(start.done)} to generate")
                await _start_peers(flow_runs, job_path=job_path, run_id=run_id,
                                   database_url=database_url)
                share = await _fan_out(ctx, claims, shards)
                logger.info(f"run {run_id}: {share.line()}")
                if replay is not None:
                    server_tokens = replay.stats().total_completion_tokens
            finally:
                session_tokens = ctx.engine.session_completion_tokens
                breaker_trips = ctx.engine.breaker_trips()
                await close_context(run_id)
        summary, finalized = await _finish(job, db_url, claims, share.failures)
    finally:
        await asyncio.to_thread(claims.close)
    summary.server_tokens_sent = server_tokens
    summary.add_breaker_trips(breaker_trips)
    if server_tokens is not None and server_tokens != session_tokens:
        logger.warning(f"the ledger counted {session_tokens} completion tokens this session; "
                       f"the replay endpoint says it sent {server_tokens}")
    if finalized:
        summary.audit_page = write_audit_page_task(db_url, run_id, job)
        await publish_summary_task(summary, job.name, key=f"{_slug(job.name)}-summary")
    if summary.status == "failed" and share.failures:
        raise next(iter(share.failures.values()))
    return summary
