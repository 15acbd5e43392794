"""The local model server as foldem meets it: the stream's shape, the ledger against the server's
own token counters, a grammar sent through the spec's extra_body, and the probe's abort verdict
measured by the server. Structure and accounting only: never the model's answers."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.base import CallStats, ChatRequest
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.local_model import LocalModelServer
from tasks.engine.runner import Engine, build_stage_validators
from tasks.probe.endpoint_probe import ProbeOptions, probe_endpoint
from tasks.records.models import CountSource, Prompt, SampleResult, WorkItem
from tests.live.conftest import server_metrics, wait_idle

pytestmark = pytest.mark.integration

LONG_PROMPT = "Write a long story about a lighthouse keeper, chapter after chapter."
PREDICTED = "llamacpp:tokens_predicted_total"


def test_stream_sends_tokens_as_chunks_and_usage_in_the_last(
        local_model: LocalModelServer) -> None:
    body = {"model": local_model.alias, "messages": [{"role": "user", "content": LONG_PROMPT}],
            "max_tokens": 24, "temperature": 0.7, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}
    chunks = []
    with httpx.stream("POST", f"{local_model.base_url}/chat/completions", json=body,
                      timeout=60, trust_env=False) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])  # only the last chunk carries usage
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    assert finish in {"length", "stop"}
    # A token per chunk (the end-of-text token is not sent); a character split over two
    # tokens waits for the second, so a chunk may now and then carry two.
    sent = last["usage"]["completion_tokens"] - (finish == "stop")
    assert sent - 2 <= len(content) <= sent


def _job(server: LocalModelServer, *, max_tokens: int, extra_body: dict[str, Any] | None = None,
         template: str = "{problem}") -> JobSpec:
    endpoint = {"name": "local", "base_url": server.base_url, "model": server.alias,
                "timeouts": {"connect": 5, "first_token": 60, "idle": 30, "total": 120}}
    return parse_job({
        "name": "live-ledger", "prompts": {"path": "unused.jsonl"},
        "endpoints": [endpoint | ({"extra_body": extra_body} if extra_body else {})],
        "sampling": {"temperature": 0.7, "max_tokens": max_tokens},
        "stages": [{"name": "solve", "template": template, "early_exit": False}]})


async def _run_one(job: JobSpec, server: LocalModelServer, text: str) -> SampleResult:
    clients = {ep.name: EndpointClient(ep, base_url=server.base_url, api_key=SecretStr("x"))
               for ep in job.endpoints}
    engine = Engine(job=job, run_id="live", clients=clients,
                    validators=build_stage_validators(job))
    try:
        return await engine.run_sample(WorkItem(prompt=Prompt(prompt_id="p0", text=text),
                                                sample_index=0))
    finally:
        for client in clients.values():
            await client.aclose()


async def test_ledger_counts_what_the_server_counted(local_model: LocalModelServer) -> None:
    wait_idle(local_model)
    before = server_metrics(local_model)[PREDICTED]
    result = await _run_one(_job(local_model, max_tokens=40), local_model, LONG_PROMPT)
    wait_idle(local_model)
    after = server_metrics(local_model)[PREDICTED]
    (row,) = result.ledger
    assert not row.aborted and row.error is None
    assert row.count_source == CountSource.SERVER_USAGE
    assert row.prompt_tokens and row.prompt_tokens > 0
    assert 0 < row.completion_tokens <= 40
    assert row.completion_tokens == after - before  # the server's own count, token for token


async def test_a_cut_stream_is_counted_in_the_models_own_tokens(
        local_model: LocalModelServer) -> None:
    """llama.cpp sends no usage for a stream cut short: the ledger takes its running count of
    decoded tokens (`timings_per_token`, asked for on `base_url: local` and on an endpoint seen
    to be llama.cpp). What the server counted, minus the few tokens it decoded after it learned
    of the hang-up (they never reach the wire; `foldem probe` measures them), is the ledger."""
    job = _job(local_model, max_tokens=400)
    (ep,) = job.endpoints
    client = EndpointClient(ep.model_copy(update={"server": "llama.cpp"}),
                            base_url=local_model.base_url, api_key=SecretStr("x"))
    request = ChatRequest(({"role": "user", "content": LONG_PROMPT},), max_tokens=400,
                          temperature=0.7, seed=3)
    wait_idle(local_model)
    before = server_metrics(local_model)[PREDICTED]
    stats = CallStats()
    try:
        async with client.stream(request, stats=stats) as call:
            read = 0
            async for _ in call:
                read += 1
                if read == 20:
                    break  # hang up mid-stream
    finally:
        await client.aclose()
    wait_idle(local_model)
    after_hang_up = server_metrics(local_model)[PREDICTED] - before - stats.completion_tokens
    assert stats.count_source == CountSource.SERVER_TIMINGS and stats.finish_reason is None
    assert stats.completion_tokens >= 20  # a chunk is a token, or two merged
    assert 0 <= after_hang_up <= 8, after_hang_up
    assert stats.prompt_tokens and stats.prompt_tokens > 0


async def test_extra_body_grammar_constrains_the_reply(local_model: LocalModelServer) -> None:
    job = _job(local_model, max_tokens=8, extra_body={"grammar": 'root ::= "Score: " [1-5]'},
               template="Rate this from 1 to 5: {problem}")
    result = await _run_one(job, local_model, "Two plus two is four.")
    assert re.fullmatch(r"Score: [1-5]", result.stages[0].text), result.stages[0].text


async def test_probe_sees_llamacpp_stop_after_the_hang_up(local_model: LocalModelServer) -> None:
    wait_idle(local_model)
    result = await probe_endpoint(local_model.base_url, local_model.alias, options=ProbeOptions(
        abort_max_tokens=512, read_tokens=8, settle_seconds=0.5, timeout=60))
    assert result.server == "llama.cpp" and result.abort_method == "llamacpp_slots"
    assert (result.streaming, result.usage, result.continuous_usage) == (True, True, False)
    abort = result.abort
    assert result.abort_honoured, abort.detail
    assert (abort.busy_before, abort.busy_during, abort.busy_after) == (0, 1, 0)  # slot freed
    assert abort.tokens_read_before_close >= 8
    # From the server's counters: what it decoded for the request beyond what the probe read.
    assert abort.server_tokens_after_close is not None
    assert 0 <= abort.server_tokens_after_close <= 8
    assert abort.server_tokens_predicted == (abort.tokens_read_before_close
                                             + abort.server_tokens_after_close)
