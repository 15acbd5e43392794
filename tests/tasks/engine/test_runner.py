"""The stage runner over real HTTP (scripted endpoint): early exit closes the stream, stages
chain, a rejection stops the sample, an endpoint failure is recorded as data, never raised."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pydantic import SecretStr

from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.client import EndpointClient
from tasks.engine.policy import ConfiguredValidator
from tasks.engine.runner import Engine, SampleCut, build_stage_validators, render_messages
from tasks.records.models import AbortReason, Prompt, WorkItem
from tests.support.fake_endpoint import FakeEndpoint, closed_port
from validators.base import ProblemContext, Validator, ValidatorSession

SOLUTION = ["Two", " plus", " two", " is", " 2 + 2 = 4.\n", "#### 4\n"]
RAMBLING = [" Let", " me", " double", "-check", " that", " again", "."] * 20


def make_job(base_url: str, stages: list[dict[str, Any]], **extra: Any) -> JobSpec:
    return parse_job({
        "name": "runner-test",
        "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": "fake", "base_url": base_url, "model": "m", "max_retries": 1,
                       "timeouts": {"connect": 2, "first_token": 3, "idle": 3, "total": 20}}],
        "stages": stages, **extra})


def engine_for(job: JobSpec, base_url: str) -> Engine:
    clients = {ep.name: EndpointClient(ep, base_url=base_url, api_key=SecretStr("x"))
               for ep in job.endpoints}
    return Engine(job=job, run_id="r1", clients=clients, validators=build_stage_validators(job))


def item(text: str = "What is two plus two?", reference: str | None = "4") -> WorkItem:
    return WorkItem(prompt=Prompt(prompt_id="p0", text=text, reference_answer=reference),
                    sample_index=0)


SOLVE = {"name": "solve", "template": "{problem}", "expected_tokens": 100,
         "validators": [{"name": "arithmetic"}, {"name": "final_answer"}]}


async def test_a_cancelled_sample_hands_over_the_ledger_rows_of_its_calls(
        fake: FakeEndpoint) -> None:
    """Ctrl-C cancels the samples in flight: the sample is not final, but the call it was
    streaming cost tokens, so its row (cut short, `interrupted`, nothing saved) is handed over
    to be written."""
    fake.reset(tokens=RAMBLING, pace=0.02, usage="continuous")
    job = make_job(fake.base_url, [SOLVE])
    cut: list[Any] = []
    task = asyncio.create_task(engine_for(job, fake.base_url).run_sample(
        item(), on_interrupt=cut.append))
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (result,) = cut
    assert result.interrupted and result.status == "failed"
    (entry,) = result.ledger
    assert entry.aborted and entry.abort_reason == "interrupted"
    assert entry.tokens_saved == 0 and entry.count_source == "server_usage"
    assert 0 < entry.completion_tokens < len(RAMBLING)
    # The fake counts a token after the write it yielded returns; a client that hung up may
    # have read that token already. Either way the ledger is within one of the server.
    assert abs(entry.completion_tokens - fake.seen.sent[0]) <= 1


async def test_a_sample_cut_for_agreement_is_superseded_with_its_call_in_the_ledger(
        fake: FakeEndpoint) -> None:
    """Cancelled because k sibling samples agreed: the sample is final (superseded, no text),
    its call is a ledger row cut short for 'agreement', what it streamed counted and the rest
    of the expected length saved."""
    fake.reset(tokens=RAMBLING, pace=0.02, usage="continuous")
    job = make_job(fake.base_url, [SOLVE])
    handed: list[Any] = []
    task = asyncio.create_task(engine_for(job, fake.base_url).run_sample(
        item(), on_interrupt=handed.append, cut=SampleCut(AbortReason.AGREEMENT)))
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (result,) = handed
    assert result.status == "superseded" and not result.interrupted
    assert result.stages == [] and result.final_answer is None and result.error is None
    (entry,) = result.ledger
    assert entry.aborted and entry.abort_reason == "agreement" and entry.error is None
    assert 0 < entry.completion_tokens < len(RAMBLING)
    assert entry.tokens_saved == 100 - entry.completion_tokens
    # The fake counts a token after the write it yielded returns; a client that hung up may
    # have read that token already. Either way the ledger is within one of the server.
    assert abs(entry.completion_tokens - fake.seen.sent[0]) <= 1


def test_render_fills_only_named_fields() -> None:
    job = make_job("http://x", [{**SOLVE, "system": "Be brief.",
                                 "template": "Q: {problem}\nRef: {reference}"}])
    msgs = render_messages(job.stages[0], {"problem": "{not a field}", "reference": "4"})
    assert msgs == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Q: {not a field}\nRef: 4"}]


async def test_early_exit_closes_the_stream(fake: FakeEndpoint) -> None:
    fake.reset(tokens=SOLUTION + RAMBLING, pace=0.01, usage="continuous")
    job = make_job(fake.base_url, [SOLVE])
    result = await engine_for(job, fake.base_url).run_sample(item())
    assert result.status == "accepted" and result.early_exit
    assert result.final_answer == "4"
    (entry,) = result.ledger
    assert entry.aborted and entry.abort_reason == "early_exit"
    assert entry.count_source == "server_usage"
    await asyncio.sleep(0.1)
    assert fake.seen.sent[0] <= len(SOLUTION) + 1 < len(SOLUTION + RAMBLING)
    # (exact server/ledger equality is checked against the replay endpoint, which counts a
    # token only once written; this scripted server counts it when handed to Starlette)
    # The fake counts a token after the write it yielded returns; a client that hung up may
    # have read that token already. Either way the ledger is within one of the server.
    assert abs(entry.completion_tokens - fake.seen.sent[0]) <= 1
    assert entry.tokens_saved == 100 - entry.completion_tokens


async def test_hard_fault_rejects_in_flight(fake: FakeEndpoint) -> None:
    bad = ["Two", " plus", " two", " is", " 2 + 2 = 5.\n"] + RAMBLING
    fake.reset(tokens=bad, pace=0.01, usage="continuous")
    job = make_job(fake.base_url, [SOLVE])
    result = await engine_for(job, fake.base_url).run_sample(item())
    assert result.status == "rejected" and result.rejection is not None
    rej = result.rejection
    assert (rej.validator, rej.reason_code, rej.stage, rej.step_index) == (
        "arithmetic", "arithmetic_error", "solve", 0)
    assert rej.tokens_at_fire == 5
    await asyncio.sleep(0.1)
    assert fake.seen.sent[0] <= rej.tokens_at_fire + 1
    assert result.ledger[0].abort_reason == "rejected"


async def test_problem_stage_feeds_the_solve_stage(fake: FakeEndpoint) -> None:
    question = ["How", " many", " legs", " do", " three", " cats", " have", " in", " total",
                "?"]
    fake.reset(by_prompt={"Write a problem": question,
                          "How many legs": ["3 * 4 = 12.\n", "#### 12"]})
    job = make_job(fake.base_url, [
        {"name": "problem", "kind": "problem", "template": "Write a problem about {seed}",
         "validators": [{"name": "well_posed"}]},
        {**SOLVE, "validators": [{"name": "arithmetic"}, {"name": "final_answer"}]}])
    result = await engine_for(job, fake.base_url).run_sample(item("cats", reference=None))
    assert result.status == "accepted", result
    assert result.problem == "How many legs do three cats have in total?"
    assert [s.stage for s in result.stages] == ["problem", "solve"]
    assert [e.stage for e in result.ledger] == ["problem", "solve"]
    assert result.final_answer == "12"


async def test_problem_stage_rejection_stops_the_sample(fake: FakeEndpoint) -> None:
    fake.reset(by_prompt={"Write a problem": ["Cats", " are", " nice", "."]})
    job = make_job(fake.base_url, [
        {"name": "problem", "kind": "problem", "template": "Write a problem about {seed}",
         "validators": [{"name": "well_posed"}]}, SOLVE])
    result = await engine_for(job, fake.base_url).run_sample(item("cats", reference=None))
    assert result.status == "rejected" and result.rejection is not None
    assert result.rejection.stage == "problem" and result.rejection.validator == "well_posed"
    assert len(fake.seen.requests) == 1 and len(result.ledger) == 1


async def test_endpoint_failure_is_a_failed_sample_with_a_ledger_row() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    job = make_job(url, [SOLVE])
    result = await engine_for(job, url).run_sample(item())
    assert result.status == "failed" and "solve:" in (result.error or "")
    (entry,) = result.ledger
    assert entry.attempts == 2 and entry.completion_tokens == 0 and entry.error


async def test_baseline_generates_in_full_then_filters_the_same_way(fake: FakeEndpoint) -> None:
    bad = ["Two", " plus", " two", " is", " 2 + 2 = 5.\n"] + RAMBLING
    results = {}
    for in_flight in (True, False):
        fake.reset(tokens=bad, usage="continuous", pace=0.01 if in_flight else 0.0)
        job = make_job(fake.base_url, [SOLVE], in_flight=in_flight)
        results[in_flight] = await engine_for(job, fake.base_url).run_sample(item())
        await asyncio.sleep(0.05)
        if not in_flight:
            assert fake.seen.sent[0] == len(bad)  # nothing aborted: every token generated
    live, baseline = results[True], results[False]
    assert live.status == baseline.status == "rejected"
    assert live.rejection and baseline.rejection
    assert (live.rejection.validator, live.rejection.step_index) == (
        baseline.rejection.validator, baseline.rejection.step_index)
    assert not baseline.ledger[0].aborted
    assert baseline.ledger[0].completion_tokens == len(bad) > live.ledger[0].completion_tokens


class _BrokenOpen(Validator):
    name = "broken_open"
    description = "raises in open()"

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        raise RuntimeError("bug in open")


async def test_a_validator_that_cannot_start_fails_the_sample_before_any_call(
        fake: FakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    fake.reset(tokens=SOLUTION)
    job = make_job(fake.base_url, [SOLVE])
    engine = engine_for(job, fake.base_url)
    engine.validators = {"solve": [ConfiguredValidator(_BrokenOpen(), "hard")]}
    with caplog.at_level(logging.WARNING, logger="foldem.engine"):
        results = [await engine.run_sample(item()) for _ in range(2)]
    for result in results:
        assert result.status == "failed" and not result.ledger
        assert result.error == ("solve: validator 'broken_open' could not start judging "
                                "(RuntimeError: bug in open)")
    assert not fake.seen.requests  # nothing was generated, so nothing was paid for
    assert [r.message for r in caplog.records].count(
        "validator 'broken_open' could not start judging (RuntimeError: bug in open); samples "
        "that reach this stage fail, with no call sent") == 1  # once, not once per sample


RUNAWAY = ["Step 1: 48 x 3 = 144.\n", "Step 2: "] + ["1"] * 1434


@pytest.mark.parametrize("bound", [None, 256])
async def test_a_runaway_line_is_cut_inside_the_line(fake: FakeEndpoint,
                                                     bound: int | None) -> None:
    """One line of 1,434 repeated digits: with checkpoints only at the separator it is judged
    when the stream ends (every token paid for); with the default bounded step `repetition`
    cuts it inside the line."""
    fake.reset(tokens=RUNAWAY, pace=0.001)
    stage = {**SOLVE, "max_tokens": 4000,
             "checkpoints": {"separator": "\n", "max_step_tokens": bound},
             "validators": [{"name": "repetition"}, {"name": "final_answer"}]}
    job = make_job(fake.base_url, [stage])
    result = await engine_for(job, fake.base_url).run_sample(item("What is 48 x 3?", "144"))
    assert result.status == "rejected" and result.rejection is not None
    assert result.rejection.validator == "repetition"
    generated = result.ledger[0].completion_tokens
    if bound is None:
        assert generated == len(RUNAWAY)  # judged only when the stream had ended
    else:  # judged inside the line, at its first bounded checkpoint
        assert result.rejection.tokens_at_fire < 2 * bound
        assert result.ledger[0].aborted and generated < len(RUNAWAY)
