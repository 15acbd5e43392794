"""The step judge: a judge model scores the partial solution at step boundaries while it streams.

Real parts: the replay endpoint over HTTP (generation and the replayed step judge, which scores
from the human step labels), the streaming client, the stage runner. Traces are real recordings
loaded from ../shared/data by id at test time and written to a temporary file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import text

from foldem import PROJECT_ROOT
from foldem.core.errors import SpecError
from foldem.core.traces import Trace
from foldem.replay.judge import (
    SCORE_CORRECT,
    SCORE_UNKNOWN,
    SCORE_WRONG,
    JudgeNoise,
    quoted_steps,
    step_judgement,
)
from foldem.replay.launcher import ReplayServer, start_replay_server
from foldem.replay.traces import TraceLibrary
from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.client import EndpointClient
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import Prompt, SampleResult, WorkItem
from tasks.store.db import get_engine
from tests.support.fake_endpoint import closed_port
from tests.support.replay import replay_fixture, write_traces
from tests.support.tracedata import TRACE_FILES, trace, traces

WRONG_AT_1 = "processbench-gsm8k-183"  # 5 steps, the human label: step 1 is the first wrong
CLEAN = "processbench-gsm8k-386"  # 5 steps, no wrong step
UNLABELLED = "gsm8k-gpt3-0-6b_finetuning"  # no step labels


def _library(*ids: str) -> TraceLibrary:
    return TraceLibrary([Trace.model_validate(trace(i)) for i in ids])


def _quote(trace_id: str, steps: int) -> str:
    t = trace(trace_id)
    return f"Problem:\n{t['problem']}\n\nPartial:\n{t['separator'].join(t['steps'][:steps])}"


@pytest.mark.parametrize(("trace_id", "steps", "noise", "score"), [
    (WRONG_AT_1, 1, JudgeNoise(), SCORE_CORRECT),  # before the wrong step
    (WRONG_AT_1, 2, JudgeNoise(), SCORE_WRONG),  # the quote reaches it
    (WRONG_AT_1, 5, JudgeNoise(), SCORE_WRONG),
    (WRONG_AT_1, 2, JudgeNoise(recall=0.0), SCORE_CORRECT),  # a judge that misses it
    (WRONG_AT_1, 1, JudgeNoise(false_alarm=1.0), SCORE_WRONG),  # a judge that cries wolf
    (CLEAN, 5, JudgeNoise(), SCORE_CORRECT),
    (CLEAN, 3, JudgeNoise(false_alarm=1.0), SCORE_WRONG),
    (UNLABELLED, 2, JudgeNoise(), SCORE_UNKNOWN),
])
def test_replayed_step_judge_scores_from_the_step_label(
        trace_id: str, steps: int, noise: JudgeNoise, score: int) -> None:
    library = _library(trace_id)
    quote = quoted_steps(library, trace(trace_id)["problem"], _quote(trace_id, steps))
    assert quote is not None and quote[0].id == trace_id and quote[1] == steps
    reply, got = step_judgement(quote, noise)
    assert got == score and f"Score: {score}" in reply
    assert step_judgement(quote, noise) == (reply, got)  # the same request, the same answer


def test_noise_draws_depend_on_the_seed_and_hit_about_their_rate() -> None:
    library = _library(CLEAN)
    problem = trace(CLEAN)["problem"]
    quote = quoted_steps(library, problem, _quote(CLEAN, 2))
    alarms = sum(step_judgement(quote, JudgeNoise(false_alarm=0.3, seed=s))[1] == SCORE_WRONG
                 for s in range(400))
    assert 80 < alarms < 160  # 0.3 of 400 = 120


def test_a_quote_of_no_recording_is_unknown() -> None:
    library = _library(CLEAN)
    assert quoted_steps(library, trace(CLEAN)["problem"], "nothing quoted here") is None
    assert step_judgement(None, JudgeNoise())[1] == SCORE_UNKNOWN


# -- the job spec ---------------------------------------------------------------------------

def _job(solve: dict[str, Any], endpoints: list[dict[str, Any]] | None = None,
         **extra: Any) -> JobSpec:
    timeouts = {"connect": 2, "first_token": 10, "idle": 10, "total": 60}
    return parse_job({
        "name": "step-judge-test", "prompts": {"path": "unused.jsonl"},
        "endpoints": endpoints or [
            {"name": "gen", "base_url": "http://127.0.0.1:1/v1", "model": "*",
             "timeouts": timeouts},
            {"name": "judge", "base_url": "http://127.0.0.1:1/v1", "model": "judge-steps",
             "max_retries": 0, "timeouts": timeouts}],
        "sampling": {"max_tokens": 4096, "temperature": 0},
        "stages": [solve], **extra})


def _solve(**judge: Any) -> dict[str, Any]:
    return {"name": "solve", "template": "{problem}", "checkpoints": {"separator": "\n\n"},
            "step_judge": {"endpoint": "judge", **judge}}


@pytest.mark.parametrize(("change", "message"), [
    ({"step_judge": {"endpoint": "nope"}}, "step_judge.endpoint 'nope' is not one of"),
    ({"kind": "judge"}, "only a 'solve' stage streams steps"),
    ({"step_judge": {"endpoint": "judge", "template": "{solution}"}},
     "unknown template field(s) ['solution']"),
    ({"step_judge": {"endpoint": "judge", "every_steps": 0}}, "every_steps"),
    ({"step_judge": {"endpoint": []}}, "give one or more distinct endpoint names"),
    ({"step_judge": {"endpoint": ["judge", "judge"]}}, "give one or more distinct endpoint"),
])
def test_bad_step_judge_settings_are_spec_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        _job(_solve() | change)
    assert message in str(err.value)


# -- in flight and after the fact, over HTTP -------------------------------------------------

def _two_traces(directory: Path) -> Path:
    return write_traces(directory / "traces.jsonl", [trace(WRONG_AT_1), trace(CLEAN)])


replay = replay_fixture(_two_traces, tokens_per_second=40)


async def _run(job: JobSpec, trace_id: str, judge_url: str | None = None,
               gen_url: str = "") -> SampleResult:
    urls = {"gen": gen_url, "judge": judge_url or gen_url}
    clients = {ep.name: EndpointClient(ep, base_url=urls[ep.name], api_key=SecretStr("x"))
               for ep in job.endpoints}
    engine = Engine(job=job, run_id="sj", clients=clients, validators=build_stage_validators(job))
    t = trace(trace_id)
    item = WorkItem(prompt=Prompt(prompt_id="p0", text=t["problem"]), sample_index=0)
    try:
        return await engine.run_sample(item)
    finally:
        for client in clients.values():
            await client.aclose()


def _calls(result: SampleResult, kind: str) -> list[Any]:
    return [e for e in result.ledger if e.call_kind == kind]


async def test_a_wrong_step_is_rejected_in_flight_at_that_step(replay: ReplayServer) -> None:
    job = _job(_solve())
    live = await _run(job, WRONG_AT_1, gen_url=replay.base_url)
    baseline = await _run(job.model_copy(update={"in_flight": False}), WRONG_AT_1,
                          gen_url=replay.base_url)
    for result in (live, baseline):
        assert result.status == "rejected" and result.rejection is not None
        assert result.rejection.validator == "step_judge"
        assert result.rejection.reason_code == "low_judge_score"
        assert result.rejection.step_index == trace(WRONG_AT_1)["first_error_step"]
        # the evidence is the judged step, quoted from the stage text
        r, stage_text = result.rejection, result.stages[-1].text
        wrong = trace(WRONG_AT_1)["steps"][trace(WRONG_AT_1)["first_error_step"]]
        assert r.span_start is not None and r.span_end is not None
        assert r.span_text == stage_text[r.span_start:r.span_end] == wrong[:500]
    assert live.rejection is not None and baseline.rejection is not None
    assert (live.rejection.span_start, live.rejection.span_end) == (
        baseline.rejection.span_start, baseline.rejection.span_end)
    (gen_live,), (gen_full,) = _calls(live, "generate"), _calls(baseline, "generate")
    assert gen_live.aborted and gen_live.abort_reason == "rejected"
    assert not gen_full.aborted
    assert gen_live.completion_tokens < gen_full.completion_tokens
    # after the fact every step prefix is judged; in flight, only those before the abort
    assert len(_calls(baseline, "step_judge")) == len(trace(WRONG_AT_1)["steps"])
    assert 2 <= len(_calls(live, "step_judge")) < len(_calls(baseline, "step_judge"))
    for entry in _calls(live, "step_judge") + _calls(baseline, "step_judge"):
        assert entry.endpoint == "judge" and entry.model == "judge-steps"
        assert entry.prompt_tokens and entry.completion_tokens > 0 and entry.error is None
        # the score comes first; the reason after its line is not read (nor paid for)
        assert entry.aborted and entry.abort_reason == "early_exit"
        assert entry.completion_tokens <= 6


async def test_a_clean_solution_is_kept_after_every_step_is_judged(replay: ReplayServer) -> None:
    result = await _run(_job(_solve(every_steps=2)), CLEAN, gen_url=replay.base_url)
    assert result.status == "accepted", result.rejection
    (gen,) = _calls(result, "generate")
    assert not gen.aborted
    # 5 steps judged every 2: after steps 2 and 4 (the final step 5 is not a multiple)
    assert len(_calls(result, "step_judge")) == 2


async def test_max_calls_caps_the_judgements_of_a_sample(replay: ReplayServer) -> None:
    result = await _run(_job(_solve(max_calls=1)), CLEAN, gen_url=replay.base_url)
    assert result.status == "accepted"
    assert len(_calls(result, "step_judge")) == 1


async def test_a_dead_judge_fails_the_sample_with_its_calls_in_the_ledger(
        replay: ReplayServer) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    result = await _run(_job(_solve()), CLEAN, judge_url=dead, gen_url=replay.base_url)
    assert result.status == "failed"
    assert result.error is not None and "step judge:" in result.error
    judged = _calls(result, "step_judge")
    assert judged and all(e.error and e.completion_tokens == 0 for e in judged)


# -- the bundled example, through the Prefect flow --------------------------------------------

def test_the_example_job_runs_its_step_judge_through_the_flow(
        prefect_api: None, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/gsm8k-step-judge.yaml on 8 labelled-wrong and 8 clean recordings: every wrong
    one is rejected, the judge's calls are in the ledger apart from the generations, and the
    ledger (judge calls included) equals what the replay sent, request by request."""
    from flows.generate import generate  # Prefect only for this test

    monkeypatch.chdir(tmp_path)
    pb = traces("pb_gsm8k")
    wrong = [t for t in pb if t["first_error_step"] >= 0][:8]
    clean = [t for t in pb if t["first_error_step"] == -1][:8]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"problem": t["problem"], "reference_answer":
                                           t["reference_answer"]}) + "\n"
                               for t in wrong + clean))
    spec = yaml.safe_load((PROJECT_ROOT / "examples" / "gsm8k-step-judge.yaml").read_text())
    spec["prompts"]["path"] = str(prompts)
    with start_replay_server([TRACE_FILES["pb_gsm8k"]], tokens_per_second=200) as server:
        for endpoint in spec["endpoints"]:
            endpoint["base_url"] = server.base_url
        job_path = tmp_path / "job.yaml"
        job_path.write_text(yaml.safe_dump(spec))
        summary = asyncio.run(generate(job_path=str(job_path), run_id="sj-flow",
                                       database_url=pg_url))
        stats = server.stats()
    assert summary.status == "completed" and summary.samples == 16 and summary.failed == 0
    with get_engine(pg_url).connect() as conn:
        rows = list(conn.execute(text("SELECT * FROM ledger WHERE run_id = 'sj-flow'")))
        statuses = dict(conn.execute(text(  # type: ignore[arg-type]
            "SELECT prompt_id, status FROM samples WHERE run_id = 'sj-flow'")).all())
    assert [statuses[str(i)] for i in range(8)] == ["rejected"] * 8
    assert sum(statuses[str(i)] == "accepted" for i in range(8, 16)) >= 6
    # "closed early" in the summary counts generations, not verdicts read to their score line
    generations_cut = sum(r.aborted and r.call_kind == "generate" for r in rows)
    assert summary.aborted_calls == generations_cut < sum(r.aborted for r in rows)
    kinds = {r.call_kind for r in rows}
    assert kinds == {"generate", "step_judge"}
    assert sum(r.call_kind == "generate" for r in rows) == 16
    sent = {r.request_id: r.completion_tokens for r in stats.requests}
    assert {r.response_id: r.completion_tokens for r in rows} == sent


async def test_judge_calls_fail_over_to_a_second_judge_endpoint(replay: ReplayServer) -> None:
    timeouts = {"connect": 2, "first_token": 10, "idle": 10, "total": 60}
    endpoints = [{"name": n, "base_url": "http://127.0.0.1:1/v1", "model": m, "max_retries": 0,
                  "timeouts": timeouts}
                 for n, m in (("gen", "*"), ("judge", "judge-steps"), ("judge2", "judge-steps"))]
    job = _job(_solve() | {"step_judge": {"endpoint": ["judge", "judge2"]}}, endpoints)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    urls = {"gen": replay.base_url, "judge": dead, "judge2": replay.base_url}
    clients = {ep.name: EndpointClient(ep, base_url=urls[ep.name], api_key=SecretStr("x"))
               for ep in job.endpoints}
    engine = Engine(job=job, run_id="sj2", clients=clients, validators=build_stage_validators(job))
    try:
        results = [await engine.run_sample(WorkItem(
            prompt=Prompt(prompt_id=t, text=trace(t)["problem"]), sample_index=0))
            for t in (WRONG_AT_1, CLEAN)]
    finally:
        for client in clients.values():
            await client.aclose()
    assert [r.status for r in results] == ["rejected", "accepted"]
    verdicts = [e for r in results for e in _calls(r, "step_judge") if e.error is None]
    assert verdicts and {e.endpoint for e in verdicts} == {"judge2"}
    assert any(e.endpoint == "judge" and e.error for r in results for e in _calls(r, "step_judge"))
