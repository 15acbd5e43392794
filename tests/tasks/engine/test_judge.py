"""The S4 judge: score parsing, and a solve → judge run against the replay endpoint, whose
judge mode scores the quoted recording by its correctness label."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from foldem.replay.launcher import ReplayServer
from foldem.spec.job import parse_job
from tasks.endpoints.client import EndpointClient
from tasks.engine.judge_score import parse_judge_score
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import Prompt, WorkItem
from tests.support.replay import replay_fixture
from tests.support.tracedata import traces


@pytest.mark.parametrize(("reply", "score"), [
    ("Score: 4\nReason: fine", 4),
    ("**Score:** 2", 2),
    ("I would give this a rating of 5/5.", 5),
    ("The solution is correct. 3/5", 3),
    ("4", 4),
    ("Score: 9", None),  # out of range: not a 1-5 score
    ("The answer 42 is right.", None),
    ("", None),
    ("x" * 1_000_000 + " Score: 5", None),  # past the bounded head: never scanned
])
def test_parse_judge_score(reply: str, score: int | None) -> None:
    assert parse_judge_score(reply) == score


replay = replay_fixture("gpt3")


def _seeds_by_label() -> tuple[str, dict[bool, int]]:
    """A recorded problem with both a correct and a wrong recording, and a seed for each."""
    by_problem: dict[str, list[dict]] = {}
    for t in traces("gpt3"):
        by_problem.setdefault(t["problem"], []).append(t)
    for problem, recs in by_problem.items():
        labels = [r["final_answer_correct"] for r in recs]
        if True in labels and False in labels:
            return problem, {True: labels.index(True), False: labels.index(False)}
    raise AssertionError("no problem with both labels")


@pytest.mark.parametrize("correct", [True, False])
async def test_judge_stage_accepts_good_and_rejects_bad(replay: ReplayServer,
                                                        correct: bool) -> None:
    problem, seeds = _seeds_by_label()
    job = parse_job({
        "name": "judge-test", "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": "gen", "base_url": replay.base_url, "model": "*"},
                      {"name": "judge", "base_url": replay.base_url, "model": "judge"}],
        "stages": [
            {"name": "solve", "template": "{problem}", "validators": []},
            {"name": "judge", "kind": "judge", "endpoint": "judge", "accept_at": 3,
             "template": "Problem:\n{problem}\n\nSolution:\n{solution}\n\nScore it 1-5."}]})
    clients = {ep.name: EndpointClient(ep, base_url=replay.base_url, api_key=SecretStr("x"))
               for ep in job.endpoints}
    engine = Engine(job=job, run_id="j", clients=clients, validators=build_stage_validators(job))
    replay.reset_stats()
    result = await engine.run_sample(WorkItem(
        prompt=Prompt(prompt_id="p", text=problem), sample_index=seeds[correct]))
    assert result.status == ("accepted" if correct else "rejected")
    if not correct:
        assert result.rejection is not None
        assert (result.rejection.stage, result.rejection.reason_code) == (
            "judge", "low_judge_score")
    assert [e.stage for e in result.ledger] == ["solve", "judge"]
    sent = {r.request_id: r.completion_tokens for r in replay.stats().requests}
    assert all(e.completion_tokens == sent[e.response_id] for e in result.ledger)
