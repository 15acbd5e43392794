"""A run's start and resume in Postgres: failed samples are generated again on resume (or kept
failed on request), with the shards that held them reopened; the ledger of the failed calls
stays."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from foldem.spec.job import parse_job
from tasks.records.models import WorkItem
from tasks.run import lifecycle
from tasks.run.claims import ShardRow
from tasks.store.db import libpq_url
from tests.support.samples import sample_result

pytestmark = pytest.mark.integration


def _job() -> object:
    return parse_job({"name": "lifecycle", "prompts": {"path": "unused.jsonl"},
                      "endpoints": [{"name": "e", "base_url": "http://127.0.0.1:9/v1",
                                     "model": "m"}],
                      "stages": [{"name": "solve", "template": "{problem}"}]})


def _items(n: int) -> list[WorkItem]:
    return [WorkItem.model_validate({"prompt": {"prompt_id": f"p{i}", "text": "q"},
                                     "sample_index": 0}) for i in range(n)]


def _shards(url: str, run_id: str) -> list[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        return [r[0] for r in conn.execute(
            "SELECT status FROM run_shards WHERE run_id = %s ORDER BY shard_no", (run_id,))]


def _ledger_rows(url: str, run_id: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT count(*) FROM ledger WHERE run_id = %s", (run_id,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("retry_failed", [True, False])
def test_resume_retries_failed_samples_unless_kept(pg_url: str, retry_failed: bool) -> None:
    job, run_id, items = _job(), f"lifecycle-{uuid.uuid4().hex[:8]}", _items(4)
    shards = [ShardRow(0, 2, "p0/0"), ShardRow(1, 2, "p2/0")]
    start = lifecycle.begin_run(pg_url, job, run_id=run_id, samples_expected=4,  # type: ignore[arg-type]
                                flow_run_id=None, shards=shards)
    assert not start.resumed
    lifecycle.save_batch(pg_url, [
        sample_result(run_id, "p0"), sample_result(run_id, "p1", status="rejected"),
        sample_result(run_id, "p2", status="failed", error="solve: timeout"),
        sample_result(run_id, "p3")])
    with psycopg.connect(libpq_url(pg_url)) as conn:
        conn.execute("UPDATE run_shards SET status = 'done' WHERE run_id = %s", (run_id,))
    lifecycle.complete_run(pg_url, run_id=run_id, status="completed")

    again = lifecycle.begin_run(pg_url, job, run_id=run_id, samples_expected=4,  # type: ignore[arg-type]
                                flow_run_id=None, shards=shards, retry_failed=retry_failed)
    assert again.resumed
    pending = [i.prompt.prompt_id for i in lifecycle.pending(pg_url, run_id=run_id, items=items)]
    if retry_failed:
        assert pending == ["p2"] and ("p2", 0) not in again.done
        assert _shards(pg_url, run_id) == ["pending", "pending"]  # claimable again
    else:
        assert pending == [] and ("p2", 0) in again.done
        assert _shards(pg_url, run_id) == ["done", "done"]
    assert _ledger_rows(pg_url, run_id) == 4  # the failed call's cost is kept either way
