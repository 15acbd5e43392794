"""Shared parts of the reliability tests (faults, database faults, crash and resume, load).

The checks here are the definitions the figures in docs/RELIABILITY.md rest on:
* lost: a (prompt, sample) of the job that has no row in a final state;
* duplicated: a (prompt, sample) with more than one row, or a call with more than one ledger row;
* ledger mismatch: completion tokens the endpoint says it sent minus the ledger's sum.
Traces and prompts are read from ../shared/data at test time; nothing of them is copied here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

from foldem.replay.protocol import ReplayStats
from tasks.store.db import get_engine, libpq_url
from tests.support.jobs import job_dict
from tests.support.tracedata import SHARED_DATA, require_shared

GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"
GPT3_TRACES = SHARED_DATA / "traces" / "gsm8k_gpt3_dev.jsonl"
#: Short timeouts so a stalled or slow stream is given up on in about a second.
FAST_TIMEOUTS = {"connect": 2, "first_token": 2, "idle": 1, "total": 60}


def subset_traces(dest: Path, limit: int) -> Path:
    """The recorded traces of the first `limit` GSM8K test problems, as a trace file in dest:
    a replay server loads it in a fraction of the time the whole file takes."""
    require_shared()
    with GSM8K_TEST.open(encoding="utf-8") as fh:
        problems = {json.loads(line)["question"] for _, line in zip(range(limit), fh,
                                                                   strict=False)}
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"gsm8k_gpt3_first{limit}.jsonl"
    if not out.exists():
        with GPT3_TRACES.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
            dst.writelines(line for line in src if json.loads(line)["problem"] in problems)
    return out


def reliability_job(base_url: str, *, limit: int, samples: int, name: str,
                    streams: int = 8, max_retries: int = 3, shard_size: int = 8,
                    timeouts: dict[str, float] | None = None) -> dict[str, Any]:
    """The integration job (solve GSM8K with the default validators) with short timeouts."""
    data = job_dict(base_url, limit=limit, samples=samples, name=name)
    data["endpoints"][0].update(max_concurrent_streams=streams, max_retries=max_retries,
                                timeouts=timeouts or FAST_TIMEOUTS)
    data["shard_size"] = shard_size
    return data


@dataclass
class RunRecord:
    """What the database holds of one run."""

    samples: list[Any]
    ledger: list[Any]
    rejections: list[Any]

    @property
    def ledger_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.ledger)

    def status_counts(self) -> Counter[str]:
        return Counter(s.status for s in self.samples)


def samples_written(url: str, run_id: str) -> int:
    """Samples of the run in the database so far; 0 while the database is down, not created or
    not migrated yet (the tests poll this while they kill or restart things)."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM samples WHERE run_id = %s",
                               (run_id,)).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def read_run(db_url: str, run_id: str) -> RunRecord:
    with get_engine(db_url).connect() as conn:
        def rows(sql: str) -> list[Any]:
            return list(conn.execute(text(sql), {"r": run_id}))
        return RunRecord(
            samples=rows("SELECT * FROM samples WHERE run_id = :r"),
            ledger=rows("SELECT * FROM ledger WHERE run_id = :r"),
            rejections=rows("SELECT * FROM rejections WHERE run_id = :r"))


@dataclass(frozen=True)
class Tally:
    """The figures of one run: what RELIABILITY.md reports."""

    samples: int
    lost: int
    duplicated: int
    failed: int


def assert_exactly_once(record: RunRecord, *, prompts: int, samples_per_prompt: int,
                        stages: int = 1) -> Tally:
    """Every (prompt, sample) once, in a final state, with a reason when it is not accepted;
    one ledger row per call (per sample and stage reached)."""
    keys = Counter((s.prompt_id, s.sample_index) for s in record.samples)
    expected = {(str(p), i) for p in range(prompts) for i in range(samples_per_prompt)}
    lost = len(expected - set(keys))
    duplicated = sum(n - 1 for n in keys.values() if n > 1)
    # A call cut by Ctrl-C keeps its row (it cost tokens); its sample is generated again.
    calls = Counter((r.prompt_id, r.sample_index, r.stage) for r in record.ledger
                    if r.abort_reason != "interrupted")
    duplicated += sum(n - 1 for n in calls.values() if n > 1)
    assert lost == 0 and duplicated == 0, (lost, duplicated)
    assert set(keys) == expected
    rejected = {(r.prompt_id, r.sample_index) for r in record.rejections}
    for s in record.samples:
        key = (s.prompt_id, s.sample_index)
        assert s.status in ("accepted", "rejected", "failed"), s.status
        if s.status == "failed":
            assert s.error and s.error.strip(), f"failed sample {key} has no reason"
        if s.status == "rejected":
            assert key in rejected, f"rejected sample {key} has no rejection row"
    assert len(record.rejections) == len(rejected)  # one rejection per rejected sample
    if stages == 1:
        assert set(calls) == {(p, i, "solve") for p, i in expected}, "a sample has no ledger row"
    return Tally(samples=len(record.samples), lost=lost, duplicated=duplicated,
                 failed=record.status_counts()["failed"])


#: Tokens an aborted stream may carry that its client never read: the server wrote them in the
#: moment between the client's last read and its hang-up reaching the server (at most one
#: chunk, which carries one token or the few of one multi-byte character).
MAX_IN_FLIGHT_AT_ABORT = 4


@dataclass(frozen=True)
class LedgerCheck:
    mismatch: int  # server tokens the ledger lacks, beyond the in-flight tokens of aborts
    in_flight_at_abort: int  # tokens written after an aborting client's last read
    aborted_calls: int
    aborts_with_unread_tokens: int = 0
    most_unread_in_one_call: int = 0


def assert_ledger_matches(record: RunRecord, stats: ReplayStats,
                          max_in_flight: int | None = MAX_IN_FLIGHT_AT_ABORT) -> LedgerCheck:
    """The ledger against what the endpoint says it did.

    * calls: every request that reached the server is one attempt of one ledger row;
    * retries only where safe: a request that sent tokens was the last attempt of its call
      (its id is the row's response_id), so no token was paid twice;
    * tokens: each call's count equals the server's; an aborted call may lack the few tokens
      in flight when its client hung up (MAX_IN_FLIGHT_AT_ABORT; None: any number, for a
      client that lags behind the server); the totals differ by exactly those.
    """
    by_response = {r.response_id: r for r in record.ledger if r.response_id}
    assert sum(r.attempts for r in record.ledger) == len(stats.requests)
    in_flight = hit = most = 0
    for request in stats.requests:
        if request.completion_tokens == 0:
            continue
        row = by_response.get(request.request_id)
        assert row is not None, f"{request.request_id} sent tokens, then was retried"
        assert row.count_source == "server_usage"
        unseen = request.completion_tokens - row.completion_tokens
        if row.aborted:
            assert unseen >= 0, (request, row.completion_tokens)
            if max_in_flight is not None:
                assert unseen <= max_in_flight, (request, row.completion_tokens)
            in_flight += unseen
            hit += unseen > 0
            most = max(most, unseen)
        else:
            assert unseen == 0, (request, row.completion_tokens, row.error)
    mismatch = stats.total_completion_tokens - record.ledger_tokens - in_flight
    assert mismatch == 0, mismatch
    return LedgerCheck(mismatch, in_flight, sum(1 for r in record.ledger if r.aborted), hit, most)


def report(test: str, **figures: Any) -> None:
    """Print one line of figures (shown with `pytest -s`) and, when FOLDEM_RELIABILITY_REPORT
    names a file, append it there as JSON: docs/RELIABILITY.md is written from these lines."""
    import os

    line = json.dumps({"test": test, **figures}, default=str)
    print(f"RELIABILITY {line}")
    target = os.environ.get("FOLDEM_RELIABILITY_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
