"""Endpoint limits across processes (Prefect global concurrency limits, real Prefect API): two OS
processes share one stream limit against one endpoint, whose peak concurrency is counted
server-side; a requests-per-minute limit paces the requests; slots come back on every exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from foldem import PROJECT_ROOT
from foldem.spec.endpoints import Endpoint
from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.base import ChatRequest
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.limits import (
    LimitSpec,
    build_limiters,
    ensure_limits,
    limit_base_name,
    limit_specs,
)
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import Prompt, WorkItem
from tests.support.fake_endpoint import FakeEndpoint, running_fake

TOKENS = ["Two", " plus", " two", " is", " 2 + 2 = 4.\n", "#### 4\n"]


def make_job(base_url: str, limits: dict[str, Any], *, streams: int = 8) -> JobSpec:
    return parse_job({
        "name": "limits-test", "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": "fake", "base_url": base_url, "model": "m", "limits": limits,
                       "max_concurrent_streams": streams}],
        "stages": [{"name": "solve", "template": "{problem}", "early_exit": False}]})


def item(tag: str, i: int) -> WorkItem:
    return WorkItem(prompt=Prompt(prompt_id=f"{tag}-{i}", text=f"{tag} question {i}"),
                    sample_index=0)


async def run_engine(job: JobSpec, tag: str, n: int) -> list[str]:
    """n samples at once through an Engine whose client carries the job's limiters."""
    limiters = build_limiters(job.endpoints)
    clients = {ep.name: EndpointClient(ep, base_url=ep.base_url, api_key=SecretStr("x"),
                                       limiter=limiters.get(ep.name)) for ep in job.endpoints}
    engine = Engine(job=job, run_id=tag, clients=clients, validators=build_stage_validators(job))
    try:
        results = await asyncio.gather(*(engine.run_sample(item(tag, i)) for i in range(n)))
    finally:
        for client in clients.values():
            await client.aclose()
        for limiter in limiters.values():
            await limiter.session.aclose()
    return [r.status for r in results]


async def active_slots(name: str) -> int:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return int((await client.read_global_concurrency_limit_by_name(name)).active_slots)


# --- names and values (no network) -------------------------------------------------------------

@pytest.mark.parametrize(("base_url", "model", "limit_name", "expected"), [
    ("http://GPU-1:8000/v1", "Qwen/Qwen2.5-7B", None, "foldem:gpu-1:8000_v1:Qwen_Qwen2.5-7B"),
    ("https://gpu-1:8000/v1/", "m", None, "foldem:gpu-1:8000_v1:m"),  # scheme does not matter
    ("http://10.0.0.5:30000/v1", "m", None, "foldem:10.0.0.5:30000_v1:m"),
    ("replay", "gen", None, "foldem:replay:gen"),
    ("http://x/v1", "m", "shared-vllm", "shared-vllm"),
])
def test_limit_names(base_url: str, model: str, limit_name: str | None, expected: str) -> None:
    ep = Endpoint(name="e", base_url=base_url, model=model,
                  limits={"max_streams": 2, "limit_name": limit_name})
    assert limit_base_name(ep) == expected


@pytest.mark.parametrize(("limits", "expected"), [
    ({}, []),
    ({"max_streams": 4}, [("streams", 4, 0.0)]),
    ({"requests_per_minute": 600}, [("requests-per-minute", 100, 10.0)]),  # 10 s burst
    ({"requests_per_minute": 6, "burst_seconds": 1}, [("requests-per-minute", 1, 0.1)]),
    ({"tokens_per_minute": 60_000, "max_streams": 1},
     [("streams", 1, 0.0), ("tokens-per-minute", 10_000, 1000.0)]),
])
def test_limit_values(limits: dict[str, Any], expected: list[tuple[str, int, float]]) -> None:
    ep = Endpoint(name="e", base_url="http://h:1/v1", model="m", limits=limits)
    got = [(s.name.rsplit(":", 1)[1], s.limit, s.slot_decay_per_second) for s in limit_specs(ep)]
    assert got == expected


async def test_no_limits_no_prefect_call(fake: FakeEndpoint,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.client.orchestration as orchestration

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Prefect API call without limits")

    monkeypatch.setattr(orchestration, "get_client", refuse)
    fake.reset(tokens=TOKENS)
    assert await run_engine(make_job(fake.base_url, {}), "free", 3) == ["accepted"] * 3


# --- against a real Prefect API ----------------------------------------------------------------

def test_ensure_limits_creates_then_updates(prefect_api: None) -> None:
    from prefect.client.orchestration import get_client

    name = f"foldem-test-{uuid.uuid4().hex[:8]}"
    ensure_limits([LimitSpec(name=name, limit=3)])
    ensure_limits([LimitSpec(name=name, limit=3)])  # idempotent
    ensure_limits([LimitSpec(name=f"{name}-rate", limit=5, slot_decay_per_second=0.5)])
    ensure_limits([LimitSpec(name=name, limit=7)])
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 7
        rate = client.read_global_concurrency_limit_by_name(f"{name}-rate")
        assert (rate.limit, rate.slot_decay_per_second) == (5, 0.5)


async def test_one_process_alone_uses_more_than_the_shared_limit(fake: FakeEndpoint) -> None:
    fake.reset(tokens=TOKENS, pace=0.05)
    await run_engine(make_job(fake.base_url, {}), "alone", 6)
    assert fake.seen.max_active >= 4  # without limits, 6 samples stream together


def _child_command(base_url: str, limit_name: str, tag: str) -> list[str]:
    return [sys.executable, "-m", "tests.tasks.endpoints.test_limits", base_url, limit_name, tag]


async def test_two_processes_share_a_stream_limit(prefect_api: None, fake: FakeEndpoint) -> None:
    from prefect.settings import get_current_settings

    fake.reset(tokens=TOKENS, pace=0.08)
    limit_name = f"foldem-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    children = [subprocess.Popen(_child_command(fake.base_url, limit_name, tag), env=env,
                                 cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for tag in ("one", "two")]
    try:
        for child in children:  # both set up (limits upserted): start together
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [await asyncio.to_thread(child.communicate, timeout=60) for child in children]
    finally:
        for child in children:
            child.kill() if child.poll() is None else None
    statuses = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert statuses == [["accepted"] * 6] * 2
    assert len(fake.seen.requests) == 12
    # Both were told to go at once, and each alone opens 6 streams at once (see above): only
    # the shared limit keeps the server at 2. (Which process gets the slots first is not fair:
    # docs/ENDPOINTS.md.)
    assert fake.seen.max_active <= 2, "the shared limit of 2 streams was exceeded"
    tags = {r["messages"][-1]["content"].split()[0] for r in fake.seen.requests}
    assert tags == {"one", "two"}
    assert await active_slots(f"{limit_name}:streams") == 0


async def test_requests_per_minute_paces_the_requests(prefect_api: None,
                                                      fake: FakeEndpoint) -> None:
    fake.reset(tokens=TOKENS)
    limits = {"requests_per_minute": 240, "burst_seconds": 1,  # 4 at once, then 4 per second
              "limit_name": f"foldem-test-{uuid.uuid4().hex[:8]}"}
    assert await run_engine(make_job(fake.base_url, limits), "rate", 12) == ["accepted"] * 12
    times = sorted(fake.seen.times)
    # in any window of w seconds at most burst + rate * w requests start (+1 for the edges)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= 4 + 4 * (times[j] - start) + 1, (i, j, times[j] - start)
    assert times[-1] - times[0] >= 1.5  # 8 requests past the burst need ~2 s at 4/s


async def test_a_cancelled_stream_returns_its_slot(prefect_api: None, fake: FakeEndpoint) -> None:
    fake.reset(tokens=TOKENS * 50, pace=0.05)
    name = f"foldem-test-{uuid.uuid4().hex[:8]}"
    job = make_job(fake.base_url, {"max_streams": 1, "limit_name": name})
    limiters = build_limiters(job.endpoints)
    client = EndpointClient(job.endpoints[0], base_url=fake.base_url, api_key=SecretStr("x"),
                            limiter=limiters["fake"])

    async def stream_forever() -> None:
        request = ChatRequest(({"role": "user", "content": "q"},), max_tokens=10, temperature=0)
        async with client.stream(request) as call:
            async for _ in call:
                pass

    try:
        task = asyncio.create_task(stream_forever())
        while fake.seen.active == 0:
            await asyncio.sleep(0.02)
        assert await active_slots(f"{name}:streams") == 1
        waiting = asyncio.create_task(stream_forever())  # queued behind the limit of 1
        await asyncio.sleep(0.3)
        task.cancel()
        waiting.cancel()
        await asyncio.gather(task, waiting, return_exceptions=True)
        deadline = time.monotonic() + 5
        while await active_slots(f"{name}:streams") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await active_slots(f"{name}:streams") == 0
    finally:
        await client.aclose()
        await limiters["fake"].session.aclose()


async def _child_main(base_url: str, limit_name: str, tag: str) -> None:
    """One OS process of the shared-limit test: 6 samples at once, max 8 local streams."""
    job = make_job(base_url, {"max_streams": 2, "limit_name": limit_name})
    build_limiters(job.endpoints)  # upsert before saying ready (the run also does it)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    print(json.dumps(await run_engine(job, tag, 6)), flush=True)


if __name__ == "__main__":
    asyncio.run(_child_main(*sys.argv[1:4]))


@pytest.mark.integration
def test_flow_spreads_over_two_endpoints_within_a_global_limit(
        prefect_api: None, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.generate import generate

    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?"}) + "\n"
                               for i in range(6)))
    with running_fake() as a, running_fake() as b:
        a.reset(tokens=TOKENS, pace=0.05)
        b.reset(tokens=TOKENS, pace=0.05)
        limit_name = f"foldem-test-{uuid.uuid4().hex[:8]}"
        job = tmp_path / "job.yaml"
        job.write_text(yaml.safe_dump({
            "name": "two-endpoints", "prompts": {"path": str(prompts)}, "samples_per_prompt": 2,
            "endpoints": [
                {"name": "a", "base_url": a.base_url, "model": "m", "weight": 2,
                 "limits": {"max_streams": 1, "limit_name": limit_name}},
                {"name": "b", "base_url": b.base_url, "model": "m"}],
            "stages": [{"name": "solve", "template": "{problem}", "endpoint": ["a", "b"]}],
            "quality_gate": {"enabled": False}, "dedup": {"enabled": False},
            "export": {"dir": str(tmp_path / "out")}}))
        run_id = f"limits-flow-{uuid.uuid4().hex[:8]}"
        summary = asyncio.run(generate(job_path=str(job), run_id=run_id, database_url=pg_url))
    assert summary.status == "completed" and summary.accepted == 12
    figures = {f.endpoint: f for f in summary.endpoints}
    assert set(figures) == {"a", "b"}
    assert figures["a"].calls + figures["b"].calls == 12 and figures["a"].calls > 0
    assert a.seen.max_active == 1  # the global limit held inside the flow
    assert len(a.seen.requests) == figures["a"].calls
