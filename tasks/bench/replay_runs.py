"""One benchmark mode over recorded traces: the real path, driven without Prefect.

Each trace becomes one work item: prompt = its problem (one prompt per distinct problem),
sample_index = its position among the loaded traces of that problem, sent as the request's
seed with model "*", so the replay endpoint plays exactly that recording (candidates[seed % n])
once per mode. Items run through `Engine.run_sample` (HTTP streaming client, checkpoints,
validators, policy) and are written to Postgres by `tasks.run.shard.process_items`; the figures are
then read back from the ledger, rejections and samples tables and checked against the replay
endpoint's own per-request counts (`/stats`).

Why not the Prefect flow: the flow builds items as prompts × samples_per_prompt with one
separator per job, while a faithful replay needs one item per recording (problems have 1-4
recordings) and, over mixed files, one checkpoint separator per trace. The flow's own shard
task calls the same `process_items`, so only the orchestration differs.

Agreement early exit (`agreement_k`): the job's `early_exit: {agreement: k}`, run by the same
`process_items` as the flow (tasks/engine/agreement.py): once k accepted samples of a prompt
agree on the final answer, its remaining samples are not generated (stored as 'superseded').
Without spare streams it generates exactly the samples a one-after-another run would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field
from sqlalchemy import select

from foldem.core.traces import Trace
from foldem.replay.launcher import ReplayServer
from foldem.replay.protocol import ReplayStats
from foldem.replay.traces import ANY_GENERATOR
from foldem.spec.endpoints import REPLAY
from foldem.spec.job import JobSpec
from foldem.spec.sections import AgreementExit
from tasks.endpoints.client import EndpointClient, resolve_api_key
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import Prompt, SampleResult, WorkItem
from tasks.run import lifecycle
from tasks.run.shard import process_items
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import ledger, rejections, samples


@dataclass(frozen=True, slots=True)
class PlannedItem:
    trace: Trace
    item: WorkItem


class ModeSpec(BaseModel):
    name: str
    in_flight: bool
    early_exit: bool
    agreement_k: int | None = None


class SampleRow(BaseModel):
    """One trace's outcome in one mode, as stored ('superseded' without calls: not generated,
    agreement)."""

    trace_id: str
    status: str | None = None
    completion_tokens: int = 0
    aborted: bool = False
    abort_reason: str | None = None
    response_id: str | None = None
    final_answer: str | None = None
    validator: str | None = None
    stage: str | None = None
    reason_code: str | None = None
    step_index: int | None = None
    tokens_at_fire: int | None = None
    sample_rows: int = 0  # rows in `samples` (more than one would be a duplicate)
    calls: int = 0  # ledger rows (one per call; more than one would be a duplicate)
    attempts: int = 0  # HTTP requests behind those calls (retries included)
    # The stage's step judge (call_kind 'step_judge'): calls, tokens, and per response id the
    # completion tokens of the calls that went to the replay (checked against its count).
    judge_calls: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    judge_attempts: int = 0  # requests the judge calls made to the replay (retries included)
    judge_responses: dict[str, int] = Field(default_factory=dict)


class ServerCheck(BaseModel):
    ledger_total: int
    server_total: int
    requests: int
    mismatched_requests: int
    unmatched_requests: int
    wrong_trace: int
    ledger_attempts: int = 0  # requests the ledger says its calls made (retries included)
    faults: dict[str, int] = Field(default_factory=dict)  # injected faults that struck, by kind

    @property
    def ok(self) -> bool:
        return (self.ledger_total == self.server_total and self.mismatched_requests == 0
                and self.unmatched_requests == 0 and self.wrong_trace == 0
                and self.ledger_attempts == self.requests)


class ModeResult(BaseModel):
    mode: ModeSpec
    run_id: str
    wall_seconds: float
    rows: dict[str, SampleRow]  # by trace id
    server: ServerCheck


def plan_items(traces: Sequence[Trace]) -> list[PlannedItem]:
    """One item per trace; the index among its problem's traces (file order, as the replay
    library orders candidates) is the seed that selects exactly this recording."""
    prompt_ids: dict[str, str] = {}
    seen: dict[str, int] = {}
    planned = []
    for trace in traces:
        pid = prompt_ids.setdefault(trace.problem, f"p{len(prompt_ids):05d}")
        index = seen.get(trace.problem, 0)
        seen[trace.problem] = index + 1
        prompt = Prompt(prompt_id=pid, text=trace.problem, reference_answer=trace.reference_answer)
        planned.append(PlannedItem(trace, WorkItem(prompt=prompt, sample_index=index)))
    return planned


def mode_job(job: JobSpec, mode: ModeSpec, separator: str, concurrency: int) -> JobSpec:
    """The job as this mode runs it: in-flight or baseline, early exit on/off, the trace's
    separator, model "*" and `seed = sample index` so the seed picks the recording."""
    stages = [st.model_copy(update={
        "early_exit": mode.early_exit,
        "checkpoints": st.checkpoints.model_copy(update={"separator": separator})})
        for st in job.stages]
    judges = {n for st in job.stages if st.step_judge for n in st.step_judge.endpoint_names}
    endpoints = [ep.model_copy(update={"max_concurrent_streams": concurrency}
                               | ({} if ep.name in judges else {"model": ANY_GENERATOR}))
                 for ep in job.endpoints]
    sampling = job.sampling.model_copy(update={"seed_per_sample": True})
    agreement = AgreementExit(agreement=mode.agreement_k) if mode.agreement_k else None
    return job.model_copy(update={"in_flight": mode.in_flight, "stages": stages,
                                  "endpoints": endpoints, "sampling": sampling,
                                  "early_exit": agreement})


async def generate_items(job: JobSpec, mode: ModeSpec, planned: list[PlannedItem], run_id: str,
                         db_url: str, base_url: str, concurrency: int) -> None:
    """Every planned item through the engine (one per trace separator) against `base_url`
    (the endpoint standing in for the job's `replay` endpoints), written to `db_url`."""
    separators = sorted({p.trace.separator for p in planned})
    jobs = {sep: mode_job(job, mode, sep, concurrency) for sep in separators}
    first = jobs[separators[0]]
    # Shared by every engine (one stream limit each). The replay stands in for every endpoint
    # the job points at the bundled replay; another (e.g. a real step-judge model) is called.
    clients = {ep.name: EndpointClient(
        ep, base_url=base_url if ep.base_url == REPLAY else ep.base_url,
        api_key=resolve_api_key(ep)) for ep in first.endpoints}
    engines = {sep: Engine(job=j, run_id=run_id, clients=clients,
                           validators=build_stage_validators(j)) for sep, j in jobs.items()}

    def save(batch: Sequence[SampleResult]) -> None:
        lifecycle.save_batch(db_url, batch)

    separator_of = {(p.item.prompt.prompt_id, p.item.sample_index): p.trace.separator
                    for p in planned}

    def engine_for(item: WorkItem) -> Engine:
        return engines[separator_of[(item.prompt.prompt_id, item.sample_index)]]

    try:
        await process_items(engines[separators[0]], [p.item for p in planned], save=save,
                            agreement=first.early_exit, engine_for=engine_for)
    finally:
        for client in clients.values():
            await client.aclose()


def run_mode(job: JobSpec, mode: ModeSpec, planned: list[PlannedItem], *, db_url: str,
             server: ReplayServer, concurrency: int) -> ModeResult:
    """Generate every planned item in this mode under a fresh run id; read the figures back."""
    run_id = f"bench-{job.name}-{mode.name}-{uuid.uuid4().hex[:8]}"
    first_job = mode_job(job, mode, planned[0].trace.separator, concurrency)
    lifecycle.begin_run(db_url, first_job, run_id=run_id, samples_expected=len(planned),
                     flow_run_id=None)
    server.reset_stats()
    started = time.perf_counter()
    asyncio.run(generate_items(job, mode, planned, run_id, db_url, server.base_url,
                               concurrency))
    wall = time.perf_counter() - started
    lifecycle.complete_run(db_url, run_id=run_id, status="completed")
    replayed = {ep.name for ep in job.endpoints if ep.base_url == REPLAY}
    rows = read_rows(db_url, run_id, planned, replayed=replayed)
    return ModeResult(mode=mode, run_id=run_id, wall_seconds=round(wall, 2), rows=rows,
                      server=check_server(rows, server.stats()))


def read_rows(db_url: str, run_id: str, planned: list[PlannedItem], *,
              replayed: set[str] | None = None) -> dict[str, SampleRow]:
    """Per trace: status and answer (samples), tokens and abort (ledger), rejection; step
    judge calls apart (`replayed`: the endpoints served by the replay)."""
    key_to_trace = {(p.item.prompt.prompt_id, p.item.sample_index): p.trace.id for p in planned}
    rows = {tid: SampleRow(trace_id=tid) for tid in key_to_trace.values()}
    with session_scope(get_engine(db_url)) as s:
        for r in s.execute(select(samples.c.prompt_id, samples.c.sample_index, samples.c.status,
                                  samples.c.final_answer).where(samples.c.run_id == run_id)):
            row = rows[key_to_trace[(r.prompt_id, r.sample_index)]]
            row.status, row.final_answer = r.status, r.final_answer
            row.sample_rows += 1
        for r in s.execute(select(ledger.c.prompt_id, ledger.c.sample_index,
                                  ledger.c.completion_tokens, ledger.c.aborted,
                                  ledger.c.abort_reason, ledger.c.response_id,
                                  ledger.c.attempts, ledger.c.call_kind, ledger.c.endpoint,
                                  ledger.c.prompt_tokens)
                           .where(ledger.c.run_id == run_id)):
            row = rows[key_to_trace[(r.prompt_id, r.sample_index)]]
            if r.call_kind == "step_judge":
                row.judge_calls += 1
                if replayed is None or r.endpoint in replayed:
                    row.judge_attempts += r.attempts
                row.judge_prompt_tokens += r.prompt_tokens or 0
                row.judge_completion_tokens += r.completion_tokens
                if r.response_id and (replayed is None or r.endpoint in replayed):
                    row.judge_responses[r.response_id] = r.completion_tokens
                continue
            row.completion_tokens += r.completion_tokens
            row.calls += 1
            row.attempts += r.attempts
            row.aborted, row.abort_reason = r.aborted, r.abort_reason
            row.response_id = r.response_id
        for r in s.execute(select(rejections).where(rejections.c.run_id == run_id)):
            row = rows[key_to_trace[(r.prompt_id, r.sample_index)]]
            row.validator, row.stage, row.reason_code = r.validator, r.stage, r.reason_code
            row.step_index, row.tokens_at_fire = r.step_index, r.tokens_at_fire
    return rows


def check_server(rows: dict[str, SampleRow], stats: ReplayStats) -> ServerCheck:
    """Ledger against the replay's count, per request (by response id) and in total; also
    that each request replayed the recording its item was planned for. A request that sent no
    token (a 429 or 500, retried) is one attempt of a call whose last request carries the
    call's response id, so it is matched by the attempt count instead."""
    by_response = {r.response_id: (r, r.completion_tokens, True) for r in rows.values()
                   if r.response_id}
    # A step judge's request names the recording whose steps it quotes; two recordings of a
    # problem can open with the same steps, so that one is not checked against the plan.
    by_response |= {rid: (r, tokens, False) for r in rows.values()
                    for rid, tokens in r.judge_responses.items()}
    mismatched = unmatched = wrong = 0
    for req in stats.requests:
        row, tokens, planned = by_response.get(req.request_id, (None, 0, False))
        if row is None:
            unmatched += req.completion_tokens > 0
            continue
        mismatched += tokens != req.completion_tokens
        wrong += planned and row.trace_id != req.trace_id
    judged = sum(sum(r.judge_responses.values()) for r in rows.values())
    return ServerCheck(ledger_total=sum(r.completion_tokens for r in rows.values()) + judged,
                       server_total=stats.total_completion_tokens, requests=len(stats.requests),
                       mismatched_requests=mismatched, unmatched_requests=unmatched,
                       wrong_trace=wrong,
                       ledger_attempts=sum(r.attempts + r.judge_attempts for r in rows.values()),
                       faults=stats.faults)
