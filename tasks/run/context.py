"""Per-run objects that live in the flow's process: endpoint clients, the engine, progress.

Prefect task parameters must be serialisable, so shard tasks receive the run id and look the
live objects up here. All shards of a run execute in the flow's event loop, which is what lets
one asyncio semaphore per endpoint bound the streams across shards, and one router share each
endpoint's circuit breaker. Endpoint `limits:` that hold across processes are set up in the
Prefect API here, at run start (tasks/endpoints/limits.py).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foldem.spec.job import JobSpec
from tasks.endpoints.client import EndpointClient, resolve_api_key
from tasks.endpoints.limits import LimitsSession, build_limiters
from tasks.engine.runner import Engine, build_stage_validators
from tasks.run.progress import ProgressBoard


@dataclass(slots=True)
class RunContext:
    job: JobSpec
    run_id: str
    database_url: str
    engine: Engine
    board: ProgressBoard
    limits: list[LimitsSession] = field(default_factory=list)

    def price_notes(self) -> tuple[list[str], str | None]:
        """What the run's calls are priced at, one line per priced endpoint, and the warning
        for endpoints with no known price (said once per run, not per call)."""
        prices = self.engine.prices
        if prices is None:
            return [], None
        lines = [f"prices of endpoint {name!r}: {price.describe()}"
                 for name, price in sorted(prices.prices.items()) if price is not None]
        return lines, prices.notice()

    async def aclose(self) -> None:
        for client in self.engine.clients.values():
            await client.aclose()
        for session in self.limits:
            await session.aclose()


_CONTEXTS: dict[str, RunContext] = {}


#: How long a thread may hold the GIL before the event loop gets it back (Python's default is
#: 5 ms). The loop reads every stream and closes aborted ones; while a database-writer or
#: logging thread holds the GIL, an abort waits, and the server keeps sending meanwhile.
GIL_SWITCH_INTERVAL = 0.001


def open_context(job: JobSpec, *, run_id: str, database_url: str,
                 base_urls: Mapping[str, str], board: ProgressBoard) -> RunContext:
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
    # Everything imported so far (sympy, pydantic, Prefect: ~80,000 objects) lives for the
    # process: out of the collector's sight, a full collection no longer walks it and stalls
    # the loop that reads every stream (65-69 ms -> 5-9 ms measured).
    gc.freeze()
    limited = any(ep.limits.configured for ep in job.endpoints)
    limiters = build_limiters(job.endpoints, holder=_flow_run_holder() if limited else None)
    clients = {ep.name: EndpointClient(ep, base_url=base_urls[ep.name],
                                       api_key=resolve_api_key(ep), limiter=limiters.get(ep.name))
               for ep in job.endpoints}
    engine = Engine(job=job, run_id=run_id, clients=clients,
                    validators=build_stage_validators(job))
    sessions = list({id(lim.session): lim.session for lim in limiters.values()}.values())
    ctx = RunContext(job, run_id, database_url, engine, board, sessions)
    _CONTEXTS[run_id] = ctx
    return ctx


def _flow_run_holder() -> dict[str, Any] | None:
    """The flow run holding the slots, as Prefect shows it for a lease; None outside one."""
    from prefect.runtime import flow_run

    return {"type": "flow_run", "id": flow_run.id} if flow_run.id else None


def get_context(run_id: str) -> RunContext:
    try:
        return _CONTEXTS[run_id]
    except KeyError:
        raise RuntimeError(f"run {run_id!r} has no live context in this process") from None


async def close_context(run_id: str) -> None:
    ctx = _CONTEXTS.pop(run_id, None)
    if ctx is not None:
        await ctx.aclose()
