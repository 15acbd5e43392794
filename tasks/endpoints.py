"""Base URLs for a job's endpoints; starts the bundled replay endpoint when one says `replay`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from foldem.jobspec import REPLAY, JobSpec
from foldem.replay.launcher import ReplayServer, start_replay_server
from tasks.client import EndpointClient, resolve_api_key


@contextmanager
def endpoint_urls(job: JobSpec) -> Iterator[tuple[dict[str, str], ReplayServer | None]]:
    """Yield {endpoint name: base URL} and the replay server if one was started."""
    urls = {ep.name: ep.base_url for ep in job.endpoints}
    if REPLAY not in urls.values():
        yield urls, None
        return
    traces = [job.resolve_path(t) for t in job.replay.traces]
    with start_replay_server(traces, tokens_per_second=job.replay.tokens_per_second) as srv:
        yield {name: (srv.base_url if url == REPLAY else url) for name, url in urls.items()}, srv


async def check_endpoints(job: JobSpec) -> None:
    """Preflight every configured endpoint that is not the bundled replay: a dead server or a
    refused key fails here with a clear message, before any run starts."""
    for ep in job.endpoints:
        if ep.base_url == REPLAY:
            continue
        client = EndpointClient(ep, base_url=ep.base_url, api_key=resolve_api_key(ep))
        try:
            await client.preflight()
        finally:
            await client.aclose()
