"""Token confidences from streamed logprobs: the chunk parser, the request that asks for them
only when a stage's validators read them, the deltas and checkpoints that carry them, and the
preflight that refuses an endpoint (the scripted one, the replay) sending none."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from pydantic import SecretStr

from foldem.core.chat_stream import ChunkReading, read_chunk
from foldem.core.errors import EndpointError
from foldem.replay.launcher import ReplayServer
from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.base import CallStats, ChatRequest, Delta
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.stream_call import StreamCall
from tasks.engine.judging import stage_judging
from tasks.engine.policy import Action, StagePolicy
from tasks.engine.runner import Engine, build_stage_validators, top_logprobs_wanted
from tasks.records.models import Prompt, WorkItem
from tasks.run.preflight import check_endpoints, preflight_clients
from tests.support import tracedata
from tests.support.fake_endpoint import FakeEndpoint
from tests.support.replay import replay_fixture
from validators.base import ProblemContext

SOLUTION = ["Two", " plus", " two", " is", " 2 + 2 = 4.\n", "#### 4\n"]


def chunk(content: str, logprobs: Any) -> ChunkReading:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": content}}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return read_chunk(json.dumps({"id": "c", "choices": [choice]}).encode())


def consume(c: ChunkReading) -> Any:
    call = StreamCall(None, None, None, CallStats(), time.perf_counter(), 5.0, "t")  # type: ignore[arg-type]
    return call._consume(c)


def test_confidence_is_minus_the_mean_of_the_top_logprobs() -> None:
    lp = {"content": [
        {"token": "Two", "logprob": -0.5, "top_logprobs": [
            {"token": "Two", "logprob": -0.5}, {"token": "2", "logprob": -1.5},
            {"token": "The", "logprob": -4.0}]},
        {"token": " plus", "logprob": -0.25, "top_logprobs": []},  # no top list: its own
    ]}
    delta = consume(chunk("Two plus", lp))
    assert delta.text == "Two plus"
    assert delta.confidences == pytest.approx((2.0, 0.25))


@pytest.mark.parametrize("logprobs", [
    None, {"content": None}, {"content": []}, {"content": ["odd", 3, None]},
    {"content": [{"token": "x", "logprob": "NaN?", "top_logprobs": [{"logprob": None}]}]},
    {"content": [{"token": "x", "top_logprobs": "not a list"}]},
])
def test_missing_or_odd_logprobs_give_no_confidences(logprobs: Any) -> None:
    delta = consume(chunk("text", logprobs))
    assert delta.text == "text" and delta.confidences == ()


def test_request_asks_for_logprobs_only_when_set() -> None:
    plain = ChatRequest(messages=(), max_tokens=8, temperature=0.0).sampling()
    assert "logprobs" not in plain and "top_logprobs" not in plain
    asked = ChatRequest(messages=(), max_tokens=8, temperature=0.0, top_logprobs=5).sampling()
    assert asked["logprobs"] is True and asked["top_logprobs"] == 5


def job_with(url: str, validators: list[dict[str, Any]], *, name: str = "e") -> JobSpec:
    return parse_job({
        "name": "conf-test", "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": name, "base_url": url, "model": "m", "max_retries": 0,
                       "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 20}}],
        "stages": [{"name": "solve", "template": "{problem}", "expected_tokens": 50,
                    "validators": validators}]})


def clients_of(job: JobSpec, url: str | None = None) -> dict[str, EndpointClient]:
    return {ep.name: EndpointClient(ep, base_url=url or ep.base_url, api_key=SecretStr("x"))
            for ep in job.endpoints}


CONFIDENCE = {"name": "confidence", "params": {"top_k": 3, "min_group_confidence": 0.5,
                                               "min_tokens": 1, "window": 2}}


async def test_the_stage_request_carries_top_logprobs_and_deltas_carry_confidences(
        fake: FakeEndpoint) -> None:
    fake.reset(tokens=SOLUTION, logprobs=True)
    job = job_with(fake.base_url, [CONFIDENCE, {"name": "final_answer"}])
    assert top_logprobs_wanted(build_stage_validators(job)["solve"]) == 3
    engine = Engine(job=job, run_id="r", clients=clients_of(job),
                    validators=build_stage_validators(job))
    item = WorkItem(prompt=Prompt(prompt_id="p", text="2 + 2?", reference_answer="4"),
                    sample_index=0)
    result = await engine.run_sample(item)
    body = fake.seen.requests[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    # Confidence here is mean(0.1, 1.1, 2.1) = 1.1 per token, above 0.5: kept.
    assert result.status == "accepted"
    strict = job_with(fake.base_url, [{**CONFIDENCE, "params": {
        **CONFIDENCE["params"], "min_group_confidence": 1.5}}, {"name": "final_answer"}])
    engine = Engine(job=strict, run_id="r", clients=clients_of(strict),
                    validators=build_stage_validators(strict))
    result = await engine.run_sample(item)
    assert result.status == "rejected" and result.rejection is not None
    assert result.rejection.validator == "confidence"
    assert result.rejection.reason_code == "low_confidence"


async def test_without_the_validator_no_logprobs_are_asked(fake: FakeEndpoint) -> None:
    fake.reset(tokens=SOLUTION, logprobs=True)
    job = job_with(fake.base_url, [{"name": "final_answer"}])
    engine = Engine(job=job, run_id="r", clients=clients_of(job),
                    validators=build_stage_validators(job))
    item = WorkItem(prompt=Prompt(prompt_id="p", text="2 + 2?"), sample_index=0)
    await engine.run_sample(item)
    body = fake.seen.requests[-1]
    assert "logprobs" not in body and "top_logprobs" not in body
    await preflight_clients(job, clients_of(job))  # no logprobs check without the validator
    assert len(fake.seen.requests) == 1


async def test_preflight_refuses_an_endpoint_that_sends_no_logprobs(fake: FakeEndpoint) -> None:
    fake.reset(tokens=SOLUTION, logprobs=False)
    job = job_with(fake.base_url, [CONFIDENCE])
    with pytest.raises(EndpointError, match="needs logprobs.*sent none") as info:
        await preflight_clients(job, clients_of(job))
    assert info.value.endpoint == "e" and "confidence" in info.value.message
    asked = fake.seen.requests[-1]
    assert asked["logprobs"] is True and asked["top_logprobs"] == 3
    fake.reset(tokens=SOLUTION, logprobs=True)
    assert await preflight_clients(job, clients_of(job)) == {}


async def test_preflight_says_why_when_asking_for_logprobs_fails(fake: FakeEndpoint) -> None:
    fake.reset(tokens=SOLUTION, statuses=[400, 400])
    job = job_with(fake.base_url, [CONFIDENCE])
    with pytest.raises(EndpointError, match="needs logprobs.*asking for them failed"):
        await preflight_clients(job, clients_of(job))


replay = replay_fixture(4)


@pytest.mark.integration
async def test_a_replay_job_with_confidence_fails_at_preflight(replay: ReplayServer) -> None:
    job = job_with("replay", [CONFIDENCE], name="replay")
    with pytest.raises(EndpointError, match="needs logprobs.*replay endpoint sends none") as info:
        await preflight_clients(job, clients_of(job, replay.base_url))
    assert info.value.endpoint == "replay"
    # And a recorded problem streamed from it carries no confidences: the refusal is right.
    problem = tracedata.traces("gpt3")[0]["problem"]
    client = clients_of(job, replay.base_url)["replay"]
    request = ChatRequest(({"role": "user", "content": problem},), max_tokens=8,
                          temperature=0.0, top_logprobs=3)
    async with client.stream(request) as call:
        deltas = [d async for d in call]
    assert deltas and all(d.confidences == () for d in deltas)
    await client.aclose()


@pytest.mark.parametrize("seed", range(20))
def test_in_flight_and_after_the_fact_keep_the_same_samples(seed: int) -> None:
    """Made-up deltas with confidences: judged while streaming, or all at once at the end, the
    same samples are rejected (the validator reads tokens one by one either way)."""
    rng = random.Random(seed)
    job = job_with("http://unused/v1", [
        {"name": "confidence", "params": {"window": 8, "min_tokens": 8,
                                          "min_group_confidence": 1.0}},
        {"name": "arithmetic"}])
    stage = job.stages[0]
    words = ["2 + 2 = 4", "so", "then", "\n", "3 * 3 = 9", "\n", "more", "words"]
    deltas = [Delta(rng.choice(words) + " ", n, tuple(rng.uniform(0.3, 3.0) for _ in range(n)))
              for n in (rng.randint(1, 3) for _ in range(60))]
    outcomes = []
    for in_flight in (True, False):
        policy = StagePolicy(build_stage_validators(job)["solve"],
                             ProblemContext(problem="2 + 2?", expected_tokens=50),
                             early_exit=False)
        judging = stage_judging(stage, policy, None, in_flight=in_flight)
        if not any(judging.on_delta(d) for d in deltas):
            judging.on_end("".join(d.text for d in deltas), sum(d.tokens for d in deltas))
        d = judging.decision
        rejected = d is not None and d.action is Action.REJECT
        outcomes.append(rejected)
    assert outcomes[0] == outcomes[1]



async def test_foldem_run_refuses_a_replay_job_with_confidence_before_starting_it() -> None:
    job = job_with("replay", [CONFIDENCE], name="replay")
    with pytest.raises(EndpointError, match="replay endpoint sends none"):
        await check_endpoints(job)  # the replay is not started: nothing to connect to
