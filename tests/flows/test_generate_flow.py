"""End to end on real parts: the `generate` flow on a Prefect test server, the replay endpoint
over HTTP, and embedded Postgres. Checks the ledger against what the endpoint says it sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from foldem.core.errors import RunConflictError
from foldem.replay.launcher import ReplayServer
from tasks.store.db import get_engine
from tests.support.jobs import PACE, job_dict, run_flow, write_job
from tests.support.replay import replay_fixture

pytestmark = pytest.mark.integration

#: The endpoint: the gpt3 traces, paced as the job's replay section says.
replay = replay_fixture("gpt3", tokens_per_second=PACE)


def ledger_rows(db_url: str, run_id: str) -> list[Any]:
    with get_engine(db_url).connect() as conn:
        return list(conn.execute(text(
            "SELECT l.*, r.tokens_at_fire, r.validator FROM ledger l LEFT JOIN rejections r "
            "USING (run_id, prompt_id, sample_index) WHERE l.run_id = :r"), {"r": run_id}))


def test_flow_ledger_matches_endpoint_and_resumes(prefect_api: None, pg_url: str,
                                                  replay: ReplayServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    job_path = write_job(tmp_path, job_dict(replay.base_url))
    replay.reset_stats()
    summary = run_flow(job_path, "it-run-1", pg_url)

    assert summary.samples == 48 and summary.status == "completed"
    assert summary.accepted > 0 and summary.rejected > 0
    assert summary.accepted + summary.rejected + summary.failed == 48

    stats = replay.stats()
    sent = {r.request_id: r for r in stats.requests}
    rows = ledger_rows(pg_url, "it-run-1")
    assert len(rows) == len(stats.requests) == 48  # one call per sample, each in the ledger once
    diffs = [(r.response_id, r.completion_tokens, sent[r.response_id].completion_tokens,
              r.abort_reason, r.started_at) for r in rows
             if r.completion_tokens != sent[r.response_id].completion_tokens]
    assert not diffs, diffs
    assert sum(r.completion_tokens for r in rows) == stats.total_completion_tokens
    for row in rows:
        server = sent[row.response_id]
        assert row.completion_tokens == server.completion_tokens, row.response_id
        assert row.count_source == "server_usage"
        if row.aborted and row.abort_reason == "rejected":
            # The stream was closed at the checkpoint: at most one token more left the server.
            assert server.completion_tokens <= row.tokens_at_fire + 1
            assert server.disconnected
    assert any(r.aborted and r.abort_reason == "rejected" for r in rows), "no in-flight rejection"

    assert summary.exported_to == "it-gsm8k-it-run-1"
    exported = (tmp_path / "it-gsm8k-it-run-1" / "plain.jsonl").read_text().splitlines()
    assert len(exported) == summary.accepted

    # Re-running the same run resumes: nothing is generated again, nothing is duplicated.
    replay.reset_stats()
    again = run_flow(job_path, "it-run-1", pg_url)
    assert replay.stats().requests == []
    assert (again.accepted, again.rejected, again.failed) == (
        summary.accepted, summary.rejected, summary.failed)
    assert len(ledger_rows(pg_url, "it-run-1")) == 48


def test_resume_with_changed_spec_is_refused(prefect_api: None, pg_url: str,
                                             replay: ReplayServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = write_job(tmp_path, job_dict(replay.base_url, limit=2, samples=1), "a.yaml")
    run_flow(first, "it-run-2", pg_url)
    changed = write_job(tmp_path, job_dict(replay.base_url, limit=3, samples=1), "b.yaml")
    with pytest.raises(RunConflictError):
        run_flow(changed, "it-run-2", pg_url)


def test_failing_quality_gate_quarantines_and_skips_export(prefect_api: None, pg_url: str,
                                                           replay: ReplayServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = job_dict(replay.base_url, limit=3, samples=2, name="it-gate")
    data["quality_gate"] = {"acceptance_bounds": {"solve": [0.99, 1.0]}}  # cannot be met
    summary = run_flow(write_job(tmp_path, data), "it-run-gate", pg_url)
    assert summary.status == "quarantined"
    assert summary.quality_gate and "stage_acceptance_within_bounds" in summary.quality_gate
    # nothing exported; the audit page, written for every run, is all its directory holds
    out_dir = tmp_path / "it-gate-it-run-gate"
    assert summary.exported_to is None
    assert summary.audit_page == str((out_dir / "audit.html").resolve())
    assert [p.name for p in out_dir.iterdir()] == ["audit.html"]
    with get_engine(pg_url).connect() as conn:
        status, gates = conn.execute(text(
            "SELECT r.status, count(g.*) FROM runs r LEFT JOIN quality_gate_results g "
            "USING (run_id) WHERE r.run_id = 'it-run-gate' GROUP BY r.status")).one()
    assert (status, gates) == ("quarantined", 1)
