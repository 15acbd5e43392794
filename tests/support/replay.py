"""Replay endpoint servers for tests: `replay_fixture(...)` declares a fixture that runs one
(`foldem replay serve`, a subprocess) over recorded or made-up traces.

    replay = replay_fixture("gpt3", tokens_per_second=50)    # in a test module
    slow = replay_fixture(8, tokens_per_second=4)            # the first 8 GSM8K problems

Every such fixture depends on the session fixture `replay_launcher` (tests/conftest.py), so the
tests that use one are marked `integration` and left out of `make test-fast`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from foldem.replay.launcher import ReplayServer, start_replay_server
from tests.support import tracedata

#: Where a replay server's traces come from: a shared trace file by name ('gpt3', 'pb_gsm8k',
#: 'pb_math'; the test is skipped without ../shared/data); N, the gpt3 traces of the first N
#: GSM8K test problems (a subset loads in a fraction of the time); or a function that writes a
#: trace file into the (empty, per-function) directory it is given and returns its path.
TraceSource = str | int | Callable[[Path], Path]


def write_traces(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Trace records (tracedata's or made-up ones) as a JSONL trace file."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


class ReplayLauncher:
    """Starts replay servers for one test session; trace files it derives (subsets, written
    ones) are made once and reused."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._written: dict[Callable[[Path], Path], Path] = {}

    def trace_file(self, source: TraceSource) -> Path:
        if isinstance(source, bool):
            raise TypeError(f"not a trace source: {source!r}")
        if isinstance(source, int):
            from tests.support.reliability import subset_traces  # psycopg etc.: only when used

            return subset_traces(self.workdir / "subsets", source)
        if isinstance(source, str):
            tracedata.require_shared()
            return tracedata.TRACE_FILES[source]
        if source not in self._written:
            directory = self.workdir / f"written-{len(self._written)}"
            directory.mkdir(parents=True)
            self._written[source] = source(directory)
        return self._written[source]

    def start(self, traces: TraceSource | Sequence[TraceSource], **options: Any
              ) -> ReplayServer:
        """A started server (stop it, or use it in a `with`); options are start_replay_server's."""
        sources = list(traces) if isinstance(traces, list | tuple) else [traces]
        return start_replay_server([self.trace_file(s) for s in sources], **options)


def replay_fixture(traces: TraceSource | Sequence[TraceSource], *, tokens_per_second: float = 0.0,
                   scope: Literal["function", "module", "session"] = "module",
                   params: Sequence[Any] | None = None, ids: Sequence[str] | None = None,
                   **options: Any) -> Any:
    """A fixture (assign it to a module attribute: its name) yielding a running ReplayServer.

    `options` are start_replay_server's (ignore_disconnect, faults, fault_seed, ...). A
    parametrized fixture (`params`) or a test that parametrizes it indirectly gives each
    parameter as a dict of options over these: one server per parameter.
    """

    @pytest.fixture(scope=scope, params=params, ids=ids)
    def fixture(request: pytest.FixtureRequest,
                replay_launcher: ReplayLauncher) -> Iterator[ReplayServer]:
        chosen = {"tokens_per_second": tokens_per_second, **options,
                  **getattr(request, "param", {})}
        with replay_launcher.start(traces, **chosen) as server:
            yield server

    return fixture
