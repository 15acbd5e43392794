"""One mode of `foldem bench live`: GSM8K prompts through the real path against the running
llama.cpp server, driven without Prefect, with the server's own counters read around it.

The items run through `Engine.run_sample` (streaming client, checkpoints, validators, policy)
and `tasks.run.shard.process_items`, which writes samples, rejections and ledger rows to
Postgres, as the flow's shard task does; only the orchestration differs (as in
tasks/bench/replay_runs.py). `sample_index` is sent as the request's seed.

The server's view: `/metrics` is read before and after the mode (`llamacpp:tokens_predicted_total`
and `..._seconds_total`, which llama.cpp adds to when a request ends or is cancelled). With one
slot (`per_call`), calls are also made one at a time and the counter is read after each, once
the slot is idle, so every call gets the server's own count: for a call cut short, the tokens
the server decoded after the hang-up are that count less what the client read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from pydantic import BaseModel, SecretStr
from sqlalchemy import select

from foldem.spec.endpoints import Endpoint
from foldem.spec.job import JobSpec
from tasks.endpoints.base import CallStats, ChatRequest
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.stream_call import StreamCall
from tasks.engine.runner import Engine, build_stage_validators
from tasks.probe.monitors import parse_prometheus
from tasks.records.models import SampleResult, WorkItem
from tasks.run import lifecycle
from tasks.run.shard import process_items
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import ledger

PREDICTED = "llamacpp:tokens_predicted_total"
PREDICTED_SECONDS = "llamacpp:tokens_predicted_seconds_total"
_IDLE_TIMEOUT = 30.0


class ServerCounters(BaseModel):
    tokens_predicted: float
    predicted_seconds: float | None = None


class CallMeter(BaseModel):
    """One call as the server counted it (per_call only): tokens from the counter's growth."""

    response_id: str | None
    server_tokens: int
    client_tokens: int  # what the client counted (the ledger's figure for this call)


class LedgerRow(BaseModel):
    prompt_id: str
    sample_index: int
    completion_tokens: int
    count_source: str
    aborted: bool
    response_id: str | None
    error: str | None


class LiveModeResult(BaseModel):
    name: str
    run_id: str
    in_flight: bool
    wall_seconds: float
    before: ServerCounters
    after: ServerCounters
    results: list[SampleResult]
    ledger: list[LedgerRow]
    calls: list[CallMeter] = []

    @property
    def server_tokens(self) -> int:
        return round(self.after.tokens_predicted - self.before.tokens_predicted)

    @property
    def server_seconds(self) -> float | None:
        a, b = self.after.predicted_seconds, self.before.predicted_seconds
        return round(a - b, 3) if a is not None and b is not None else None


async def read_counters(http: httpx.AsyncClient, root_url: str) -> ServerCounters:
    """The server's counters once no slot is busy (a hung-up request is counted on release)."""
    deadline = time.monotonic() + _IDLE_TIMEOUT
    while True:
        slots = (await http.get(f"{root_url}/slots")).json()
        if not any(s.get("is_processing") for s in slots) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    values = parse_prometheus((await http.get(f"{root_url}/metrics")).text)
    return ServerCounters(tokens_predicted=values[PREDICTED],
                          predicted_seconds=values.get(PREDICTED_SECONDS))


class MeteredClient(EndpointClient):
    """The endpoint client, plus with `per_call` one call at a time and the server's counter
    read after each (the lock spans the call and the reading, so no other call interleaves)."""

    def __init__(self, endpoint: Endpoint, *, base_url: str, root_url: str,
                 per_call: bool) -> None:
        super().__init__(endpoint, base_url=base_url, api_key=SecretStr("EMPTY"))
        self.root_url = root_url
        self.per_call = per_call
        self.calls: list[CallMeter] = []
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=30, trust_env=False)  # loopback: no proxies

    async def aclose(self) -> None:
        await self._http.aclose()
        await super().aclose()

    @asynccontextmanager
    async def stream(self, request: ChatRequest, *, stats: CallStats | None = None,
                     max_retries: int | None = None) -> AsyncIterator[StreamCall]:
        if not self.per_call:
            async with super().stream(request, stats=stats, max_retries=max_retries) as call:
                yield call
            return
        stats = stats if stats is not None else CallStats()
        async with self._lock:
            before = await read_counters(self._http, self.root_url)
            try:
                async with super().stream(request, stats=stats,
                                          max_retries=max_retries) as call:
                    yield call
            finally:
                after = await read_counters(self._http, self.root_url)
                self.calls.append(CallMeter(
                    response_id=stats.response_id, client_tokens=stats.completion_tokens,
                    server_tokens=round(after.tokens_predicted - before.tokens_predicted)))


def read_ledger(db_url: str, run_id: str) -> list[LedgerRow]:
    """The run's ledger rows as stored in Postgres."""
    cols = (ledger.c.prompt_id, ledger.c.sample_index, ledger.c.completion_tokens,
            ledger.c.count_source, ledger.c.aborted, ledger.c.response_id, ledger.c.error)
    with session_scope(get_engine(db_url)) as s:
        return [LedgerRow.model_validate(dict(r._mapping))
                for r in s.execute(select(*cols).where(ledger.c.run_id == run_id))]


async def _generate(engine: Engine, items: Sequence[WorkItem], db_url: str
                    ) -> list[SampleResult]:
    def save(batch: Sequence[SampleResult]) -> None:
        lifecycle.save_batch(db_url, batch)

    return await process_items(engine, items, save=save)


def run_live_mode(job: JobSpec, name: str, items: Sequence[WorkItem], *, db_url: str,
                  base_url: str, root_url: str, per_call: bool) -> LiveModeResult:
    """Generate every item under a fresh run id (the job says in flight or not); the server's
    counters before and after, the results, the stored ledger, per call with `per_call`."""
    run_id = f"bench-live-{name}-{uuid.uuid4().hex[:8]}"
    lifecycle.begin_run(db_url, job, run_id=run_id, samples_expected=len(items),
                        flow_run_id=None)

    async def go() -> tuple[ServerCounters, ServerCounters, list[SampleResult],
                            list[CallMeter], float]:
        clients = {ep.name: MeteredClient(ep, base_url=base_url, root_url=root_url,
                                          per_call=per_call) for ep in job.endpoints}
        engine = Engine(job=job, run_id=run_id, clients=clients,
                        validators=build_stage_validators(job))
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            before = await read_counters(http, root_url)
            started = time.perf_counter()
            try:
                results = await _generate(engine, items, db_url)
            finally:
                for client in clients.values():
                    await client.aclose()
            wall = time.perf_counter() - started
            after = await read_counters(http, root_url)
        calls = [c for client in clients.values() for c in client.calls]
        return before, after, results, calls, wall

    before, after, results, calls, wall = asyncio.run(go())
    lifecycle.complete_run(db_url, run_id=run_id, status="completed")
    return LiveModeResult(name=name, run_id=run_id, in_flight=job.in_flight,
                          wall_seconds=round(wall, 2), before=before, after=after,
                          results=sorted(results, key=lambda r: (r.prompt_id, r.sample_index)),
                          ledger=read_ledger(db_url, run_id), calls=calls)
