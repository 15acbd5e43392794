"""Base URLs for a job's endpoints, starting the embedded endpoints the spec asks for: the
bundled replay endpoint (`base_url: replay`) and the local model server (`base_url: local`).

The replay endpoint is a test double and demo source; this is the one module of the run layer
that may start it (the import contract in .importlinter says so), so a job such as
examples/gsm8k.yaml runs on a machine without a model server. The local model server is real
(llama.cpp on the CPU, tasks/endpoints/local_model.py); both live exactly as long as the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from foldem.replay.launcher import ReplayServer, start_replay_server
from foldem.spec.endpoints import LOCAL, REPLAY
from foldem.spec.job import JobSpec
from tasks.endpoints.local_model import (
    DEFAULT_ALIAS,
    LocalModelOptions,
    LocalModelServer,
    start_local_model,
)


def local_model_options(job: JobSpec) -> LocalModelOptions:
    """The job's `local:` section as server options; the alias is the first local endpoint's
    model name (llama.cpp answers any name with its one model)."""
    local = job.local
    alias = next((ep.model for ep in job.endpoints if ep.base_url == LOCAL), DEFAULT_ALIAS)
    return LocalModelOptions(
        model=job.resolve_path(local.model_path) if local.model_path else None,
        parallel=local.parallel, threads=local.threads, ctx=local.ctx,
        startup_timeout=local.startup_timeout, alias=alias)


@contextmanager
def embedded_endpoints(job: JobSpec
                       ) -> Iterator[tuple[dict[str, str], ReplayServer | None,
                                           LocalModelServer | None]]:
    """Yield {endpoint name: base URL}, the replay server and the local model server (each
    None unless the spec names it); every server started here is stopped on leaving."""
    urls = {ep.name: ep.base_url for ep in job.endpoints}
    with ExitStack() as stack:
        replay = local = None
        if REPLAY in urls.values():
            traces = [job.resolve_path(t) for t in job.replay.traces]
            replay = stack.enter_context(start_replay_server(
                traces, tokens_per_second=job.replay.tokens_per_second))
        if LOCAL in urls.values():
            local = stack.enter_context(start_local_model(local_model_options(job)))
        started = {REPLAY: replay.base_url if replay else None,
                   LOCAL: local.base_url if local else None}
        yield {name: started.get(url) or url for name, url in urls.items()}, replay, local


@contextmanager
def endpoint_urls(job: JobSpec) -> Iterator[tuple[dict[str, str], ReplayServer | None]]:
    """Yield {endpoint name: base URL} and the replay server if one was started (the local
    model server, if any, runs too)."""
    with embedded_endpoints(job) as (urls, replay, _local):
        yield urls, replay
