"""Progress of a run shared by several flow runs: the run's count, and this flow run's part."""

from __future__ import annotations

from datetime import UTC, datetime

from tasks.records.models import LedgerEntry, SampleResult
from tasks.run.progress import ProgressBoard


def _result(status: str, index: int) -> SampleResult:
    entry = LedgerEntry(run_id="r", prompt_id="p", sample_index=index, stage="solve",
                        endpoint="e", model="m", completion_tokens=10, tokens_saved=3,
                        started_at=datetime.now(UTC))
    return SampleResult.model_validate({"run_id": "r", "prompt_id": "p", "sample_index": index,
                                        "status": status, "problem": "q", "ledger": [entry]})


def test_a_peer_sees_the_runs_progress_and_its_own_part() -> None:
    board = ProgressBoard(total=256)
    for i, status in enumerate(["accepted"] * 8 + ["rejected"] * 5):
        board.record(_result(status, i))
    assert board.finished == 13  # before the first read of the run's count
    board.run_finished = 98  # its peer wrote the rest
    assert board.finished == 98
    line = board.line()
    assert line.startswith("98/256 samples of the run (38%)")
    assert "this flow run: 13 (accepted 8, rejected 5, failed 0)" in line
    assert "130 completion tokens" in line


def test_progress_reaches_100_percent_when_the_run_completes() -> None:
    board = ProgressBoard(total=256, done_before=120)
    for i in range(40):
        board.record(_result("accepted", i))
    assert board.fraction < 1.0
    board.run_finished = 256
    assert board.fraction == 1.0 and board.line().startswith("256/256 samples of the run (100%)")


def test_a_resume_counts_what_was_done_before() -> None:
    board = ProgressBoard(total=10, done_before=6)
    board.record(_result("failed", 0))
    assert board.finished == 7 and "this flow run: 1 (accepted 0, rejected 0, failed 1)" in \
        board.line()
