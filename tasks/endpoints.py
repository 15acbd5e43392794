"""Base URLs for a job's endpoints; starts the bundled replay endpoint when one says `replay`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from foldem.jobspec import REPLAY, JobSpec
from foldem.replay.launcher import ReplayServer, start_replay_server


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
