"""Early exit by agreement in the real `generate` flow: Prefect, the replay endpoint over HTTP,
embedded Postgres. A prompt's remaining samples stop once k accepted samples agree: the samples
not needed are stored 'superseded', the spare streams cut for it are ledger rows with
abort_reason 'agreement', the ledger still equals what the endpoint sent, the summary counts
them, the export leaves them out, and a resume generates only what agreement still needs."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import text

from foldem.replay.launcher import ReplayServer
from tasks.engine.agreement import AnswerTally
from tasks.store.db import get_engine
from tests.support import reliability as rel
from tests.support.jobs import PACE, job_dict, run_flow, write_job
from tests.support.replay import replay_fixture

pytestmark = pytest.mark.integration

replay = replay_fixture("gpt3", tokens_per_second=PACE)

PROMPTS, SAMPLES, K = 12, 4, 2
EXPECTED_TOKENS = 120  # the job's solve stage (tests/support/jobs.py)


def _agreement_job(tmp_path: Path, base_url: str) -> Path:
    # No reference check: accepted answers then differ now and again, and agreement is
    # decided by the answers, not by the reference.
    data = job_dict(base_url, limit=PROMPTS, samples=SAMPLES, name="it-agree",
                    validators=[{"name": "arithmetic"}, {"name": "final_answer"}])
    data["early_exit"] = {"agreement": K, "spare": 1}
    return write_job(tmp_path, data)


def _reopen(db_url: str, run_id: str, where: str) -> None:
    """What a crash leaves: the samples matching `where` never written, the run's shards not
    done, the run interrupted."""
    with get_engine(db_url).begin() as conn:
        conn.execute(text(f"DELETE FROM samples WHERE run_id = :r AND ({where})"), {"r": run_id})
        conn.execute(text("UPDATE run_shards SET status = 'pending', finished_at = NULL "
                          "WHERE run_id = :r"), {"r": run_id})
        conn.execute(text("UPDATE runs SET status = 'interrupted' WHERE run_id = :r"),
                     {"r": run_id})


def test_agreement_in_the_flow_supersedes_cuts_counts_and_resumes(
        prefect_api: None, own_pg_url: str, replay: ReplayServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    job = _agreement_job(tmp_path, replay.base_url)
    run_id = "it-agree-1"
    replay.reset_stats()
    summary = run_flow(job, run_id, own_pg_url)
    assert summary.status == "completed"
    record = rel.read_run(own_pg_url, run_id)

    # Every (prompt, sample) once, in a final state.
    keys = Counter((s.prompt_id, s.sample_index) for s in record.samples)
    assert set(keys) == {(str(p), i) for p in range(PROMPTS) for i in range(SAMPLES)}
    assert set(keys.values()) == {1}
    status = {(s.prompt_id, s.sample_index): s.status for s in record.samples}
    superseded = {key for key, st in status.items() if st == "superseded"}
    assert superseded, "no prompt reached agreement"

    # A prompt has superseded samples only once k of its accepted answers agree.
    answers = defaultdict(list)
    for s in sorted(record.samples, key=lambda s: s.sample_index):
        if s.status == "accepted":
            answers[s.prompt_id].append(s.final_answer)
    for prompt in {p for p, _ in superseded}:
        assert AnswerTally.seeded(K, answers[prompt]).reached, prompt

    # Calls cut because k siblings agreed: ledger rows of superseded samples, what they
    # streamed counted, the rest of the expected length saved.
    cut = [r for r in record.ledger if r.abort_reason == "agreement"]
    assert cut, "no spare stream was cut (spare: 1 should run one ahead)"
    for row in cut:
        assert row.aborted and (row.prompt_id, row.sample_index) in superseded
        assert row.tokens_saved == max(0, EXPECTED_TOKENS - row.completion_tokens)
    never_started = superseded - {(r.prompt_id, r.sample_index) for r in record.ledger}
    assert never_started, "every superseded sample had started"

    # The ledger still equals what the endpoint sent, call by call.
    rel.assert_ledger_matches(record, replay.stats())

    # The one summary counts them; the export leaves them out.
    assert summary.superseded == len(superseded)
    assert summary.samples == PROMPTS * SAMPLES
    assert (summary.accepted + summary.rejected + summary.failed + summary.superseded
            == summary.samples)
    assert summary.agreement_cut_calls == len(cut)
    assert summary.agreement_tokens_saved > sum(r.tokens_saved for r in cut)
    solve = next(st for st in summary.stages if st.stage == "solve")
    assert solve.superseded == len(cut)
    assert solve.passed == solve.reached - solve.rejected - solve.failed - solve.superseded
    assert summary.quality_gate == "passed"
    exported = (tmp_path / f"it-agree-{run_id}" / "plain.jsonl").read_text().splitlines()
    assert len(exported) == summary.accepted

    # Resume after a crash that lost the superseded rows: the stored accepted answers seed
    # each prompt's tally, so nothing is generated again and the rows come back.
    _reopen(own_pg_url, run_id, "status = 'superseded'")
    replay.reset_stats()
    again = run_flow(job, run_id, own_pg_url)
    assert replay.stats().requests == []
    assert again.superseded == summary.superseded and again.accepted == summary.accepted

    # A crash after one of the two agreeing samples of a prompt was written: the resume
    # generates for that prompt only, until k agree again.
    prompt, index = _last_accepted(status)
    before = {r.call_id for r in rel.read_run(own_pg_url, run_id).ledger}
    _reopen(own_pg_url, run_id, f"prompt_id = '{prompt}' AND (sample_index = {index} "
                            "OR status = 'superseded')")
    replay.reset_stats()
    resumed = run_flow(job, run_id, own_pg_url)
    after = rel.read_run(own_pg_url, run_id)
    new_calls = [r for r in after.ledger if r.call_id not in before]
    assert new_calls and {r.prompt_id for r in new_calls} == {prompt}
    rel.assert_ledger_matches(rel.RunRecord(after.samples, new_calls, []), replay.stats())
    assert Counter((s.prompt_id, s.sample_index) for s in after.samples) == keys
    assert resumed.accepted == summary.accepted  # the replay plays the same recordings


def _last_accepted(status: dict[tuple[str, int], str]) -> tuple[str, int]:
    """A prompt that reached agreement, and the highest index of its accepted samples."""
    agreed = sorted({p for (p, _), st in status.items() if st == "superseded"})
    prompt = agreed[0]
    return prompt, max(i for (p, i), st in status.items() if p == prompt and st == "accepted")
