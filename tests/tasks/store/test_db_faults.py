"""Database faults: Postgres stopped and started again in the middle of a run. Writes are retried
(the run completes, nothing lost, the ledger still matches the endpoint), or — when it stays
away too long — the run fails cleanly with a database error, and re-running the same run id
completes it without loss or duplicates."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import tasks.run.shard
from foldem.core.errors import DatabaseError
from foldem.replay.launcher import ReplayServer
from tasks.records.models import SampleResult
from tasks.run.shard import ResultWriter
from tasks.store.db import migrate, stop_embedded
from tasks.store.embedded_pg import ensure_embedded_postgres
from tests.support import reliability as rel
from tests.support.jobs import run_flow, write_job
from tests.support.replay import replay_fixture
from tests.support.samples import sample_result

PROMPTS, SAMPLES = 8, 3

# --- the writer, without a database ------------------------------------------------------------


def _result(i: int) -> SampleResult:
    return sample_result("r", str(i), problem="p")


class FlakySave:
    """A save that fails `failures` times with DatabaseError, then stores."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.saved: list[str] = []
        self.calls = 0

    def __call__(self, batch: Sequence[SampleResult]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise DatabaseError("lost the connection to Postgres (test)")
        self.saved += [r.prompt_id for r in batch]


@pytest.mark.parametrize(("failures", "retries", "written"), [(0, 3, 3), (2, 3, 3), (3, 3, 3),
                                                              (4, 3, 0)])
async def test_writer_retries_a_failed_batch_with_backoff(failures: int, retries: int,
                                                          written: int) -> None:
    save = FlakySave(failures)
    writer = ResultWriter(save, batch_size=3, retries=retries, backoff=0.01, max_backoff=0.02)
    for i in range(2):
        await writer.add(_result(i))
    if written:
        await writer.add(_result(2))
        assert save.saved == ["0", "1", "2"] and writer.written == 3
        assert writer.retried == failures
    else:
        with pytest.raises(DatabaseError):
            await writer.add(_result(2))
        assert writer.written == 0
        save.failures = 0  # the database is back: the kept batch is written by the next flush
        await writer.flush()
        assert sorted(save.saved) == ["0", "1", "2"]


async def test_a_failed_shard_stops_its_other_samples() -> None:
    started: list[int] = []
    finished: list[int] = []

    class SlowEngine:
        async def run_sample(self, item: int, **_: object) -> SampleResult:
            started.append(item)
            await asyncio.sleep(0.01 if item == 0 else 5)
            finished.append(item)
            return _result(item)

    writer = ResultWriter(FlakySave(10**6), batch_size=1, retries=0)
    with pytest.raises(DatabaseError):
        await tasks.run.shard.process_items(SlowEngine(), [0, 1, 2], save=writer._save,  # type: ignore[arg-type, list-item]
                                        writer=writer)
    assert sorted(started) == [0, 1, 2] and finished == [0]  # 1 and 2 were cancelled


# --- the real flow while Postgres restarts -----------------------------------------------------


replay = replay_fixture(PROMPTS, tokens_per_second=50)


class Outage(threading.Thread):
    """Stops the embedded Postgres once `after` samples are written, for `seconds` (None:
    until `restart()` is called)."""

    def __init__(self, state: Path, url: str, run_id: str, after: int,
                 seconds: float | None) -> None:
        super().__init__(daemon=True)
        self.state, self.url, self.run_id = state, url, run_id
        self.after, self.seconds = after, seconds
        self.stopped_at: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 120
            while (n := rel.samples_written(self.url, self.run_id)) < self.after:
                assert time.monotonic() < deadline, "the run never wrote its first samples"
                time.sleep(0.05)
            self.stopped_at = n
            assert stop_embedded(self.state)
            if self.seconds is not None:
                time.sleep(self.seconds)
                ensure_embedded_postgres(self.state)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


class WriterWarnings(logging.Handler):
    """Collects the shard writer's retry warnings (proof that a write met the outage)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "retry" in record.getMessage():
            self.retries.append(record.getMessage())

    def __enter__(self) -> WriterWarnings:
        logging.getLogger("foldem.shard").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("foldem.shard").removeHandler(self)


@pytest.mark.integration
def test_postgres_restart_mid_run_is_survived(prefect_api: None, fresh_state_dir: Path,
                                              replay: ReplayServer, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = ensure_embedded_postgres(fresh_state_dir)
    migrate(url)
    job = write_job(tmp_path, rel.reliability_job(replay.base_url, limit=PROMPTS, samples=SAMPLES,
                                              name="db-restart", streams=4))
    replay.reset_stats()
    outage = Outage(fresh_state_dir, url, "db-restart", after=4, seconds=3.0)
    outage.start()
    with WriterWarnings() as warnings:
        summary = run_flow(job, "db-restart", url)
    outage.join(timeout=30)
    assert outage.error is None and outage.stopped_at is not None
    assert outage.stopped_at < PROMPTS * SAMPLES, "the outage came after the run"
    assert warnings.retries, "no write met the outage"

    assert summary.status == "completed"
    time.sleep(0.3)
    stats = replay.stats()
    record = rel.read_run(url, "db-restart")
    tally = rel.assert_exactly_once(record, prompts=PROMPTS, samples_per_prompt=SAMPLES)
    ledger = rel.assert_ledger_matches(record, stats)  # no call lost while the database was away

    replay.reset_stats()  # the same run id again: nothing to do, nothing doubled
    again = run_flow(job, "db-restart", url)
    assert replay.stats().requests == []
    assert (again.accepted, again.rejected, again.failed) == (
        summary.accepted, summary.rejected, summary.failed)
    assert len(rel.read_run(url, "db-restart").ledger) == len(record.ledger)
    rel.report("db_restart_mid_run", samples=tally.samples, lost=tally.lost,
           duplicated=tally.duplicated, ledger_mismatch=ledger.mismatch,
           in_flight_at_abort=ledger.in_flight_at_abort, outage_s=3.0,
           stopped_after_samples=outage.stopped_at,
           write_retries=len(warnings.retries))


@pytest.mark.slow  # waits out the shard's and the flow's retries: ~50 s
@pytest.mark.integration
def test_postgres_gone_for_good_fails_cleanly_and_resumes(
        prefect_api: None, fresh_state_dir: Path, replay: ReplayServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Retries shortened so the test does not wait out the default ~45 s.
    monkeypatch.setattr(tasks.run.shard, "ResultWriter",
                        functools.partial(ResultWriter, retries=2, backoff=0.2))
    url = ensure_embedded_postgres(fresh_state_dir)
    migrate(url)
    job = write_job(tmp_path, rel.reliability_job(replay.base_url, limit=PROMPTS, samples=SAMPLES,
                                              name="db-gone", streams=4, shard_size=12))
    replay.reset_stats()
    outage = Outage(fresh_state_dir, url, "db-gone", after=4, seconds=None)
    outage.start()
    with pytest.raises(DatabaseError):
        run_flow(job, "db-gone", url)
    outage.join(timeout=30)
    assert outage.error is None and outage.stopped_at is not None
    first_session = replay.stats()

    ensure_embedded_postgres(fresh_state_dir)  # the database is back: resume the run
    kept = rel.read_run(url, "db-gone")
    assert len(kept.samples) < PROMPTS * SAMPLES
    replay.reset_stats()
    summary = run_flow(job, "db-gone", url)
    assert summary.status == "completed"
    time.sleep(0.3)
    record = rel.read_run(url, "db-gone")
    tally = rel.assert_exactly_once(record, prompts=PROMPTS, samples_per_prompt=SAMPLES)
    written_before = {r.call_id for r in kept.ledger}
    resumed = rel.read_run(url, "db-gone")
    resumed.ledger = [r for r in record.ledger if r.call_id not in written_before]
    ledger = rel.assert_ledger_matches(resumed, replay.stats())  # the resumed session, exactly
    lost_rows = len(first_session.requests) - sum(r.attempts for r in kept.ledger)
    rel.report("db_gone_fails_then_resumes", samples=tally.samples, lost=tally.lost,
           duplicated=tally.duplicated, resumed_ledger_mismatch=ledger.mismatch,
           kept_after_failure=len(kept.samples), failed_session_requests_without_row=lost_rows)
