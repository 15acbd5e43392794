"""A small job through the real flow against the real model: `base_url: local` makes the run
start the local model server and stop it afterwards; the samples end accepted or rejected and
every call is in the ledger with the server's own counts. Never asserts the model's answers."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import text

pytestmark = pytest.mark.integration

PROMPTS = [  # made up, GSM8K-shaped
    {"question": "Ann has 3 apples and buys 4 more. How many apples does she have?"},
    {"question": "A book costs 12 dollars. How much do 2 books cost?"},
    {"question": "There are 20 birds and 8 fly away. How many are left?"},
]


def _local_servers() -> set[int]:
    """Pids of local model servers started by this process."""
    return {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)
            if "tasks.endpoints.local_server" in " ".join(p.cmdline())}


def test_job_on_the_local_model(prefect_api: None, pg_url: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.generate import generate
    from tasks.store.db import get_engine

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    spec = {
        "name": "live-small", "prompts": {"path": "prompts.jsonl"},
        "endpoints": [
            {"name": "local", "base_url": "local", "model": "smollm2",
             "max_concurrent_streams": 3},
            {"name": "judge", "base_url": "local", "model": "smollm2",
             "extra_body": {"grammar": 'root ::= "Score: " [1-5]'}}],
        "local": {"parallel": 4, "threads": 1, "ctx": 2048},
        "sampling": {"temperature": 0.7, "max_tokens": 96},
        "stages": [
            {"name": "solve", "template": "{problem}", "expected_tokens": 60,
             "system": "Solve step by step, one step per line. End with '#### <number>'.",
             "validators": [{"name": "arithmetic"}, {"name": "repetition"},
                            {"name": "final_answer"}]},
            {"name": "judge", "kind": "judge", "endpoint": "judge", "max_tokens": 8,
             "template": "Problem: {problem}\nSolution: {solution}\nReply as \"Score: N\"."}],
        "dedup": {"against_earlier_runs": False},
        "quality_gate": {"enabled": False}}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    before = _local_servers()
    summary = asyncio.run(generate(job_path=str(job), run_id="live-small", database_url=pg_url))
    assert _local_servers() == before  # the run's server is gone with the run
    assert summary.status == "completed"
    assert summary.samples == len(PROMPTS) and summary.failed == 0
    assert summary.accepted + summary.rejected == len(PROMPTS)
    with get_engine(pg_url).connect() as conn:
        rows = list(conn.execute(text(
            "SELECT stage, completion_tokens, count_source, aborted, error FROM ledger "
            "WHERE run_id = 'live-small'")))
    assert sum(r.stage == "solve" for r in rows) == len(PROMPTS)  # one call per solve
    assert all(r.error is None and r.completion_tokens > 0 for r in rows)
    # A call that ran to its end carries the server's usage.
    assert all(r.count_source == "server_usage" for r in rows if not r.aborted)
    assert sum(r.completion_tokens for r in rows) == summary.completion_tokens
