"""Several endpoints per stage: choice by weight and load, the circuit breaker, failover before
the first token (real HTTP against scripted endpoints), and per-endpoint figures."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session

from foldem.core.errors import SpecError
from foldem.spec.endpoints import Breaker, Endpoint
from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.pool import (
    BreakerState,
    CircuitBreaker,
    EndpointRouter,
    PoolMember,
    choose,
)
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import Prompt, RunSummary, WorkItem
from tasks.reports.summary import summary_markdown
from tasks.run.preflight import preflight_run
from tasks.store.run_summary import summarize_run
from tasks.store.storage import save_results, start_run
from tests.support.fake_endpoint import FakeEndpoint, closed_port, fake_fixture

SOLUTION = ["Two", " plus", " two", " is", " 2 + 2 = 4.\n", "#### 4\n"]
SOLVE = {"name": "solve", "template": "{problem}", "expected_tokens": 50,
         "validators": [{"name": "final_answer"}]}
#: Long enough that a tripped endpoint stays out for the rest of a test, however slow the host.
SLOW_BREAKER = {"failures_to_trip": 3, "cooldown_seconds": 60, "max_cooldown_seconds": 60,
                "max_wait_seconds": 0.5}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


fake_a = fake_fixture()
fake_b = fake_fixture()


def endpoint(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": url, "model": "m", "max_retries": 1,
            "timeouts": {"connect": 2, "first_token": 3, "idle": 3, "total": 20}, **extra}


def make_job(endpoints: list[dict[str, Any]], stage_endpoint: Any = None) -> JobSpec:
    stage = {**SOLVE, **({"endpoint": stage_endpoint} if stage_endpoint is not None else {})}
    return parse_job({"name": "pool-test", "prompts": {"path": "unused.jsonl"},
                      "endpoints": endpoints, "stages": [stage]})


def engine_for(job: JobSpec, clock: FakeClock | None = None) -> Engine:
    clients = {ep.name: EndpointClient(ep, base_url=ep.base_url, api_key=SecretStr("x"))
               for ep in job.endpoints}
    router = EndpointRouter(job, clients, clock=clock) if clock else None
    return Engine(job=job, run_id="pool", clients=clients, validators=build_stage_validators(job),
                  router=router)


def item(i: int = 0) -> WorkItem:
    return WorkItem(prompt=Prompt(prompt_id=f"p{i}", text=f"What is two plus two? ({i})",
                                  reference_answer="4"), sample_index=0)


# --- the job spec ------------------------------------------------------------------------------

def test_stage_endpoint_takes_a_name_or_a_list() -> None:
    eps = [endpoint("a", "http://a:1/v1"), endpoint("b", "http://b:1/v1", weight=3)]
    single = make_job(eps, "b")
    assert [e.name for e in single.endpoints_for(single.stages[0])] == ["b"]
    assert single.endpoint_for(single.stages[0]).name == "b"
    both = make_job(eps, ["b", "a"])
    assert [e.name for e in both.endpoints_for(both.stages[0])] == ["b", "a"]
    default = make_job(eps)
    assert [e.name for e in default.endpoints_for(default.stages[0])] == ["a"]
    assert default.snapshot()["stages"][0]["endpoint"] is None  # the single form is kept as is


@pytest.mark.parametrize(("stage_endpoint", "extra", "fragment"), [
    (["a", "zz"], {}, "'zz' is not one of"),
    ([], {}, "at least one endpoint"),
    (["a", "a"], {}, "repeat"),
    ("a", {"weight": 0}, "greater than 0"),
    ("a", {"breaker": {"cooldown_seconds": 60, "max_cooldown_seconds": 10}}, "max_cooldown"),
    ("a", {"limits": {"limit_name": "has/slash"}}, "pattern"),
])
def test_bad_endpoint_settings_are_refused(stage_endpoint: Any, extra: dict[str, Any],
                                           fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        make_job([endpoint("a", "http://a:1/v1", **extra)], stage_endpoint)
    assert fragment in str(info.value)


# --- choice and breaker (no network) -----------------------------------------------------------

def _member(name: str, weight: float, in_flight: int, state: str, clock: FakeClock) -> PoolMember:
    ep = Endpoint(name=name, base_url="http://127.0.0.1:9/v1", model="m", weight=weight)
    breaker = CircuitBreaker(Breaker(), clock)
    if state == "open":
        breaker.force_open("down")
    return PoolMember(EndpointClient(ep, base_url=ep.base_url, api_key=SecretStr("x")),
                      breaker, in_flight)


@pytest.mark.parametrize(("spec", "exclude", "expected"), [
    ([("a", 1, 0, "closed"), ("b", 1, 0, "closed")], set(), "a"),  # tie: spec order
    ([("a", 1, 1, "closed"), ("b", 1, 0, "closed")], set(), "b"),  # least loaded
    ([("a", 3, 2, "closed"), ("b", 1, 0, "closed")], set(), "a"),  # 3/3 = 1/1: tie, a first
    ([("a", 3, 3, "closed"), ("b", 1, 0, "closed")], set(), "b"),  # 4/3 > 1/1
    ([("a", 1, 0, "open"), ("b", 1, 9, "closed")], set(), "b"),  # out of service
    ([("a", 1, 0, "closed"), ("b", 1, 0, "closed")], {"a"}, "b"),  # already tried
    ([("a", 1, 0, "open"), ("b", 1, 0, "closed")], {"b"}, None),
    ([("a", 0.5, 0, "closed"), ("b", 2, 3, "closed")], set(), "a"),  # 2.0 = 4/2: tie
])
def test_choice_by_weight_and_load(spec: list[tuple[str, float, int, str]], exclude: set[str],
                                   expected: str | None) -> None:
    clock = FakeClock()
    members = [_member(*s, clock=clock) for s in spec]
    chosen = choose(members, frozenset(exclude))
    assert (chosen.name if chosen else None) == expected


def test_cooled_down_endpoint_gets_exactly_one_trial() -> None:
    clock = FakeClock()
    a = _member("a", 1, 0, "open", clock)
    assert choose([a]) is None
    clock.now = a.breaker.ready_at()
    assert choose([a]) is a
    assert a.breaker.on_send() is True  # the trial
    assert choose([a]) is None  # others wait for its verdict
    a.breaker.on_first_token(trial=True)
    assert a.breaker.state is BreakerState.CLOSED and choose([a]) is a


# (event, expected state after it); events: F failure, S success, T trial sent, W wait cooldown
@pytest.mark.parametrize(("events", "states", "trips"), [
    ("FFF", ["closed", "closed", "open"], 1),
    ("FFSFF", ["closed", "closed", "closed", "closed", "closed"], 0),
    ("FFFWTS", ["closed", "closed", "open", "open", "half_open", "closed"], 1),
    ("FFFWTFW", ["closed", "closed", "open", "open", "half_open", "open", "open"], 1),
])
def test_breaker_sequences(events: str, states: list[str], trips: int) -> None:
    clock = FakeClock()
    b = CircuitBreaker(Breaker(cooldown_seconds=30, max_cooldown_seconds=300), clock)
    trial = False
    for event, state in zip(events, states, strict=True):
        if event == "F":
            b.on_result(failed=True, trial=trial, error="HTTP 500")
            trial = False
        elif event == "S":
            b.on_result(failed=False, trial=trial)
            trial = False
        elif event == "T":
            trial = b.on_send()
            assert trial
        else:
            clock.now = b.ready_at()
            assert b.available()
        assert b.state.value == state, (event, b.state)
    assert b.trips == trips


def test_cooldown_doubles_after_failed_trials_up_to_the_cap() -> None:
    clock = FakeClock()
    b = CircuitBreaker(Breaker(cooldown_seconds=30, max_cooldown_seconds=100), clock)
    b.force_open("down")
    waits = []
    for _ in range(4):
        start = clock.now
        clock.now = b.ready_at()
        waits.append(clock.now - start)
        assert b.on_send()
        b.on_result(failed=True, trial=True, error="down")
    assert waits == [30, 60, 100, 100]


# --- over real HTTP ----------------------------------------------------------------------------

async def test_calls_spread_by_weight_under_load(fake_a: FakeEndpoint,
                                                 fake_b: FakeEndpoint) -> None:
    fake_a.reset(tokens=SOLUTION, pace=0.05)
    fake_b.reset(tokens=SOLUTION, pace=0.05)
    job = make_job([endpoint("a", fake_a.base_url, weight=3),
                    endpoint("b", fake_b.base_url, weight=1)], ["a", "b"])
    engine = engine_for(job)
    results = await asyncio.gather(*(engine.run_sample(item(i)) for i in range(24)))
    assert all(r.status == "accepted" for r in results)
    # all 24 calls start before any ends: in-flight counts follow the weights, 18 : 6
    assert (len(fake_a.seen.requests), len(fake_b.seen.requests)) == (18, 6)
    assert sorted({e.endpoint for r in results for e in r.ledger}) == ["a", "b"]


async def test_dead_endpoint_trips_and_work_moves_to_the_live_one(fake_b: FakeEndpoint) -> None:
    fake_b.reset(tokens=SOLUTION)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    job = make_job([endpoint("dead", dead, breaker=SLOW_BREAKER),
                    endpoint("live", fake_b.base_url)], ["dead", "live"])
    engine = engine_for(job)
    results = [await engine.run_sample(item(i)) for i in range(6)]  # one at a time: ties -> dead
    assert all(r.status == "accepted" for r in results)
    for r in results[:3]:  # moved before the first token: a failed row, then the live one
        (first, second) = r.ledger
        assert (first.endpoint, second.endpoint) == ("dead", "live")
        assert first.error and "dead" in first.error and first.completion_tokens == 0
        assert first.attempts == 1  # no retries on the dead one while another was left
        assert second.error is None and second.completion_tokens > 0
    for r in results[3:]:  # tripped: straight to the live one
        assert [e.endpoint for e in r.ledger] == ["live"]
    assert engine.breaker_trips() == {"dead": 1, "live": 0}


def a_failing_beside_b(fake_a: FakeEndpoint, fake_b: FakeEndpoint,
                       statuses: list[int]) -> JobSpec:
    """Endpoint a answers `statuses` first (its breaker slow to recover), b answers at once."""
    fake_a.reset(tokens=SOLUTION, statuses=statuses)
    fake_b.reset(tokens=SOLUTION)
    return make_job([endpoint("a", fake_a.base_url, breaker=SLOW_BREAKER),
                     endpoint("b", fake_b.base_url)], ["a", "b"])


async def test_endpoint_returns_after_recovery(fake_a: FakeEndpoint,
                                               fake_b: FakeEndpoint) -> None:
    job = a_failing_beside_b(fake_a, fake_b, [500] * 100)
    clock = FakeClock()
    engine = engine_for(job, clock)
    for i in range(4):
        assert (await engine.run_sample(item(i))).status == "accepted"
    assert len(fake_a.seen.requests) == 3  # tripped after three failures; the 4th skipped it
    fake_a.reset(tokens=SOLUTION)  # the server recovers
    clock.now += SLOW_BREAKER["cooldown_seconds"]  # past the cooldown
    after = [await engine.run_sample(item(10 + i)) for i in range(3)]
    assert [r.ledger[-1].endpoint for r in after] == ["a", "a", "a"]  # trial passed: back
    assert all(len(r.ledger) == 1 for r in after)


async def test_all_down_waits_for_recovery_then_fails_with_a_reason(
        fake_a: FakeEndpoint, fake_b: FakeEndpoint) -> None:
    fake_a.reset(tokens=SOLUTION, statuses=[500] * 100)
    fake_b.reset(tokens=SOLUTION, statuses=[500] * 100)
    breaker = {"failures_to_trip": 1, "cooldown_seconds": 1.0, "max_cooldown_seconds": 2.0,
               "max_wait_seconds": 10.0}
    job = make_job([endpoint("a", fake_a.base_url, breaker=breaker),
                    endpoint("b", fake_b.base_url, breaker=breaker)], ["a", "b"])
    engine = engine_for(job)
    first = await engine.run_sample(item(0))  # a fails, b fails (with its retry): both trip
    assert first.status == "failed" and "HTTP 500" in (first.error or "")
    assert [e.endpoint for e in first.ledger] == ["a", "b"]
    assert engine.router is not None
    assert not any(m.breaker.available() for m in engine.router.members.values())
    fake_b.reset(tokens=SOLUTION)  # b recovers while both are out
    started = time.monotonic()
    waited = await engine.run_sample(item(1))  # waits for the cooldowns, then the trials
    assert waited.status == "accepted"
    assert [e.endpoint for e in waited.ledger] == ["a", "b"]  # a's trial failed, b's passed
    assert time.monotonic() - started < 8  # a cooldown, not max_wait

    fake_b.reset(tokens=SOLUTION, statuses=[500] * 100)
    breaker = {**breaker, "cooldown_seconds": 30, "max_cooldown_seconds": 30}
    job = make_job([endpoint("a", fake_a.base_url, breaker=breaker),
                    endpoint("b", fake_b.base_url, breaker=breaker)], ["a", "b"])
    engine = engine_for(job)
    await engine.run_sample(item(2))  # both trip for 30 s, longer than max_wait
    started = time.monotonic()
    gave_up = await engine.run_sample(item(3))
    assert time.monotonic() - started < 1  # no point waiting past max_wait: fails at once
    assert gave_up.status == "failed" and gave_up.ledger == []
    assert "every endpoint of the stage is out of service" in (gave_up.error or "")
    assert "a: HTTP 500" in (gave_up.error or "")


def test_max_pause_defaults_to_minutes_and_reads_the_older_name() -> None:
    assert Breaker().pause_seconds == 300
    assert Breaker(max_wait_seconds=10).pause_seconds == 10
    assert Breaker(max_wait_seconds=10, max_pause_seconds=50).pause_seconds == 50


PAUSING = {"failures_to_trip": 2, "cooldown_seconds": 0.3, "max_cooldown_seconds": 0.6}


async def test_a_dead_endpoint_pauses_the_work_until_it_is_back(
        fake_a: FakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    """A stage with one endpoint: once its breaker trips, new calls wait for the trial call
    instead of each failing its retries; the endpoint comes back and the queue goes on."""
    fake_a.reset(tokens=SOLUTION, statuses=[500] * 1000)
    job = make_job([endpoint("only", fake_a.base_url, max_retries=0,
                             breaker=PAUSING | {"max_pause_seconds": 20})])
    engine = engine_for(job)
    tripped = [await engine.run_sample(item(i)) for i in range(2)]  # their failures trip it
    assert all(r.status == "failed" for r in tripped)
    assert engine.breaker_trips() == {"only": 1}
    caplog.set_level("WARNING", logger="foldem.endpoints")
    queued = [asyncio.create_task(engine.run_sample(item(10 + i))) for i in range(8)]
    await asyncio.sleep(1.2)  # down: only trial calls reach it, one at a time
    assert not any(t.done() for t in queued)
    trials = len(fake_a.seen.requests) - 2
    assert 1 <= trials <= 4
    fake_a.reset(tokens=SOLUTION)  # back
    results = await asyncio.gather(*queued)
    assert [r.status for r in results] == ["accepted"] * 8
    messages = [r.getMessage() for r in caplog.records]
    started = [m for m in messages if "calls to it are paused" in m]
    assert len(started) == 1 and "endpoint only down since" in started[0]
    ended = [m for m in messages if "is back after" in m]
    assert len(ended) == 1 and "8 calls waited" in ended[0]


async def test_an_endpoint_down_past_max_pause_fails_the_waiting_samples(
        fake_a: FakeEndpoint) -> None:
    fake_a.reset(tokens=SOLUTION, statuses=[500] * 1000)
    job = make_job([endpoint("only", fake_a.base_url, max_retries=0,
                             breaker=PAUSING | {"max_pause_seconds": 1.5})])
    engine = engine_for(job)
    for i in range(2):
        await engine.run_sample(item(i))
    started = time.monotonic()
    results = await asyncio.gather(*(engine.run_sample(item(10 + i)) for i in range(6)))
    assert 0.8 < time.monotonic() - started < 6  # paused, then gave up at the bound
    assert all(r.status == "failed" for r in results)
    error = results[0].error or ""
    assert "only: HTTP 500" in error and "down since" in error and "max_pause_seconds" in error
    assert len(fake_a.seen.requests) - 2 <= 6  # trials only, not every sample's retries


async def test_malformed_request_neither_moves_nor_trips(fake_a: FakeEndpoint,
                                                         fake_b: FakeEndpoint) -> None:
    job = a_failing_beside_b(fake_a, fake_b, [400] * 5)
    engine = engine_for(job)
    results = [await engine.run_sample(item(i)) for i in range(4)]
    assert all(r.status == "failed" and "request refused" in (r.error or "") for r in results)
    assert len(fake_b.seen.requests) == 0 and engine.breaker_trips()["a"] == 0


async def test_preflight_starts_without_a_dead_replica(fake_b: FakeEndpoint) -> None:
    fake_b.reset(tokens=SOLUTION)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    job = make_job([endpoint("dead", dead), endpoint("live", fake_b.base_url)],
                   ["dead", "live"])
    engine = engine_for(job)
    warnings = await preflight_run(engine)
    assert len(warnings) == 1 and "dead" in warnings[0]
    result = await engine.run_sample(item(0))
    assert [e.endpoint for e in result.ledger] == ["live"]  # out from the start
    alone = make_job([endpoint("dead", dead), endpoint("live", fake_b.base_url)], "dead")
    with pytest.raises(Exception, match="cannot connect"):
        await preflight_run(engine_for(alone))


# --- per-endpoint figures ----------------------------------------------------------------------

async def test_summary_has_per_endpoint_figures(db_session: Session, fake_b: FakeEndpoint) -> None:
    fake_b.reset(tokens=SOLUTION)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    job = make_job([endpoint("dead", dead, breaker=SLOW_BREAKER),
                    endpoint("live", fake_b.base_url)], ["dead", "live"])
    run_id = f"pool-{uuid.uuid4().hex[:8]}"
    engine = engine_for(job)
    engine.run_id = run_id
    results = [await engine.run_sample(item(i)) for i in range(4)]
    start_run(db_session, run_id=run_id, job_name=job.name, spec=job.snapshot(),
              spec_hash=job.spec_hash(), code_version="test", samples_expected=4)
    save_results(db_session, results=results)
    summary = summarize_run(db_session, run_id=run_id)
    summary.add_breaker_trips(engine.breaker_trips())
    figures = {f.endpoint: f for f in summary.endpoints}
    assert (figures["dead"].calls, figures["dead"].failed_calls) == (3, 3)
    assert figures["dead"].completion_tokens == 0 and figures["dead"].mean_ttft_ms is None
    assert (figures["live"].calls, figures["live"].failed_calls) == (4, 0)
    assert figures["live"].completion_tokens == sum(
        e.completion_tokens for r in results for e in r.ledger)
    assert figures["live"].mean_ttft_ms is not None and figures["live"].mean_ttft_ms > 0
    assert (figures["dead"].breaker_trips, figures["live"].breaker_trips) == (1, 0)
    assert summary.calls == 7
    markdown = summary_markdown(summary, job_name=job.name)
    assert "## Endpoints" in markdown and "| dead | 3 | 3 |" in markdown
    restored = RunSummary.model_validate_json(summary.model_dump_json())
    assert restored.endpoints == summary.endpoints
