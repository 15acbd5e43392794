"""Early exit by agreement, interrupted and resumed, on the shard's real path: the engine over
HTTP against the replay endpoint, `process_items` writing to Postgres. Cancelled mid-run (what
Ctrl-C does to a shard), the calls in flight keep their ledger rows as interrupted and their
samples stay unwritten; the resume seeds each prompt with its stored accepted answers, so a
prompt that had agreed generates nothing more, and in the end every sample is final once and
the ledger of both sessions equals what the endpoint sent."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest
from pydantic import SecretStr

from foldem.replay.launcher import ReplayServer
from foldem.spec.job import JobSpec, parse_job
from tasks.endpoints.client import EndpointClient
from tasks.engine.agreement import AnswerTally
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import SampleResult
from tasks.run import lifecycle
from tasks.run.prompts import load_prompts, work_items
from tasks.run.shard import process_items
from tests.support import reliability as rel
from tests.support.jobs import job_dict
from tests.support.replay import replay_fixture

pytestmark = pytest.mark.integration

PROMPTS, SAMPLES, K = 8, 4, 2
replay = replay_fixture(PROMPTS, tokens_per_second=40)


def _job(base_url: str) -> JobSpec:
    data = job_dict(base_url, limit=PROMPTS, samples=SAMPLES, name="agree-interrupt",
                    validators=[{"name": "arithmetic"}, {"name": "final_answer"}])
    data["early_exit"] = {"agreement": K, "spare": 1}
    data["endpoints"][0]["max_concurrent_streams"] = 6
    return parse_job(data)


async def _run(job: JobSpec, run_id: str, base_url: str, db_url: str, *,
               cancel_after: int | None = None) -> None:
    """One session over the run's pending samples; `cancel_after`: interrupt it once that many
    samples of the run are written."""
    clients = {ep.name: EndpointClient(ep, base_url=base_url, api_key=SecretStr("x"))
               for ep in job.endpoints}
    engine = Engine(job=job, run_id=run_id, clients=clients,
                    validators=build_stage_validators(job))
    items = work_items(load_prompts(job), SAMPLES)
    pending = lifecycle.pending(db_url, run_id=run_id, items=items)
    agreed = lifecycle.accepted_answers(db_url, run_id=run_id, items=pending)

    def save(batch: Sequence[SampleResult]) -> None:
        lifecycle.save_batch(db_url, batch)

    work = asyncio.create_task(process_items(engine, pending, save=save,
                                             agreement=job.early_exit, agreed=agreed))
    try:
        if cancel_after is None:
            await work
            return
        while lifecycle.run_progress(db_url, run_id=run_id) < cancel_after:
            assert not work.done(), "the run ended before it was interrupted"
            await asyncio.sleep(0.05)
        work.cancel()
        with pytest.raises(asyncio.CancelledError):
            await work
    finally:
        for client in clients.values():
            await client.aclose()


def _agreed_prompts(record: rel.RunRecord) -> set[str]:
    answers = defaultdict(list)
    for s in sorted(record.samples, key=lambda s: s.sample_index):
        if s.status == "accepted":
            answers[s.prompt_id].append(s.final_answer)
    return {p for p, found in answers.items() if AnswerTally.seeded(K, found).reached}


def test_interrupted_agreement_resumes_exactly_once(pg_url: str, replay: ReplayServer) -> None:
    job = _job(replay.base_url)
    run_id = f"agree-int-{uuid.uuid4().hex[:8]}"
    lifecycle.begin_run(pg_url, job, run_id=run_id, samples_expected=PROMPTS * SAMPLES,
                        flow_run_id=None)
    replay.reset_stats()
    asyncio.run(_run(job, run_id, replay.base_url, pg_url, cancel_after=8))
    before = rel.read_run(pg_url, run_id)
    assert len(before.samples) < PROMPTS * SAMPLES, "interrupted too late to matter"
    cut = [r for r in before.ledger if r.abort_reason == "interrupted"]
    assert cut, "no call was in flight at the interrupt"
    written = {(s.prompt_id, s.sample_index) for s in before.samples}
    assert not {(r.prompt_id, r.sample_index) for r in cut} & written

    asyncio.run(_run(job, run_id, replay.base_url, pg_url))
    after = rel.read_run(pg_url, run_id)
    keys = Counter((s.prompt_id, s.sample_index) for s in after.samples)
    assert set(keys) == {(str(p), i) for p in range(PROMPTS) for i in range(SAMPLES)}
    assert set(keys.values()) == {1}
    # What was written before the interrupt stays as it was.
    assert {(s.prompt_id, s.sample_index): s.status for s in after.samples
            if (s.prompt_id, s.sample_index) in written} == {
        (s.prompt_id, s.sample_index): s.status for s in before.samples}
    # A prompt that had agreed before the interrupt generated nothing on resume.
    old_calls = {r.call_id for r in before.ledger}
    resumed_prompts = {r.prompt_id for r in after.ledger if r.call_id not in old_calls}
    assert not resumed_prompts & _agreed_prompts(before)
    # Superseded samples only where k accepted answers agree.
    superseded = {s.prompt_id for s in after.samples if s.status == "superseded"}
    assert superseded and superseded <= _agreed_prompts(after)
    # Both sessions' ledger, interrupted and agreement-cut rows included, is what was sent.
    rel.assert_ledger_matches(after, replay.stats())
