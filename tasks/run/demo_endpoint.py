"""Base URLs for a job's endpoints, starting the bundled replay endpoint when one says `replay`.

The replay endpoint is a test double and demo source; this is the one module of the run layer
that may start it (the import contract in .importlinter says so), so a job such as
examples/gsm8k.yaml runs on a machine without a model server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from foldem.replay.launcher import ReplayServer, start_replay_server
from foldem.spec.endpoints import REPLAY
from foldem.spec.job import JobSpec


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
