"""The analyst queries of sql/queries/, run through psql as a user runs them: with
`-v run_id=...`, and without it (the latest run), on a scratch database holding two runs."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from foldem import PROJECT_ROOT
from tasks.records.models import RejectionRecord, StageText
from tasks.store import db
from tests.support.samples import commit_run, ledger_entry, sample_result
from tests.support.scratch_db import scratch_database

QUERIES = sorted((PROJECT_ROOT / "sql" / "queries").glob("*.sql"))
PER_RUN = [p for p in QUERIES if ":'run_id'" in p.read_text(encoding="utf-8")]
PSQL = shutil.which("psql")
SPEC = {"stages": [{"name": "solve", "kind": "solve", "checkpoints": {"separator": "\n"}}]}
TEXT = "One apple: 1 + 1 = 2\nThen 2 + 2 = 5\nSo the answer"
WRONG = TEXT.index("2 + 2 = 5")  # where the rejection's evidence starts

pytestmark = pytest.mark.skipif(PSQL is None, reason="psql is not installed")


def _run(url: str, run_id: str) -> str:
    rejection = RejectionRecord(stage="solve", checkpoint=1, validator="arithmetic",
                                reason_code="arithmetic_error", detail="2 + 2 = 5 (exact: 4)",
                                step_index=1, tokens_at_fire=14, span_start=WRONG,
                                span_end=WRONG + 9, span_text="2 + 2 = 5")
    named = [ledger_entry(run_id, "p1", 0, model="*", served_model="gen-a", completion_tokens=7)]
    return commit_run(url, [
        sample_result("", "p1", 0, stages=[StageText(stage="solve", text="1 + 1 = 2\n#### 2")],
                      ledger=named),
        sample_result("", "p1", 1, "rejected", rejection=rejection,
                      stages=[StageText(stage="solve", text=TEXT, aborted=True)]),
    ], prefix="queries", spec=SPEC, run_id=run_id, finish="completed")


@pytest.fixture(scope="module")
def two_runs(pg_url: str) -> Iterator[tuple[str, str]]:
    """(libpq URL, the latest run's id) of a database with an older and a newer run."""
    with scratch_database(pg_url, migrated=True) as url:
        older, newer = _run(url, "queries-older"), _run(url, "queries-newer")
        with db.session_scope(db.get_engine(url)) as session:
            session.execute(sa.text(
                "UPDATE runs SET started_at = CASE run_id WHEN :o THEN '2026-03-01T10:00Z' "
                "ELSE '2026-03-05T10:00Z' END::timestamptz"), {"o": older})
        yield db.libpq_url(url), newer


def _psql(url: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert PSQL is not None
    return subprocess.run([PSQL, url, "-X", "-v", "ON_ERROR_STOP=1", *args, "-f", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("path", PER_RUN, ids=lambda p: p.stem)
def test_per_run_query_without_run_id_shows_the_latest_run(two_runs: tuple[str, str],
                                                           path: Path) -> None:
    url, latest = two_runs
    out = _psql(url, path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"run {latest} (the latest; choose another with -v run_id=ID)")
    given = _psql(url, path, "-v", "run_id=queries-older")
    assert given.returncode == 0, given.stderr
    assert not given.stdout.startswith("run "), given.stdout  # no note when the run is given


@pytest.mark.parametrize("path", PER_RUN, ids=lambda p: p.stem)
def test_per_run_query_says_how_to_call_it(path: Path) -> None:
    head = path.read_text(encoding="utf-8").split("\\ir ", 1)[0]
    assert f"-v run_id=RUN_ID -f sql/queries/{path.name}" in head
    assert "without -v run_id=...: the latest run" in head


def test_rejected_texts_shows_the_text_up_to_the_cut(two_runs: tuple[str, str]) -> None:
    url, latest = two_runs
    out = _psql(url, PROJECT_ROOT / "sql" / "queries" / "rejected_texts.sql", "--csv",
                "-v", f"run_id={latest}")
    assert out.returncode == 0, out.stderr
    row, = csv.DictReader(io.StringIO(out.stdout))
    assert {k: row[k] for k in ("prompt_id", "sample_index", "validator", "reason_code",
                                "detail", "cut_in_flight", "step_that_fired",
                                "text_to_the_cut")} == {
        "prompt_id": "p1", "sample_index": "1", "validator": "arithmetic",
        "reason_code": "arithmetic_error", "detail": "2 + 2 = 5 (exact: 4)",
        "cut_in_flight": "t", "step_that_fired": "Then 2 + 2 = 5",
        "text_to_the_cut": "One apple: 1 + 1 = 2\nThen 2 + 2 = 5"}


def test_rejection_evidence_quotes_the_span_in_its_context(two_runs: tuple[str, str]) -> None:
    url, latest = two_runs
    out = _psql(url, PROJECT_ROOT / "sql" / "queries" / "rejection_evidence.sql", "--csv",
                "-v", f"run_id={latest}")
    assert out.returncode == 0, out.stderr
    row, = csv.DictReader(io.StringIO(out.stdout))
    assert {k: row[k] for k in ("prompt_id", "sample_index", "validator", "reason_code",
                                "span_start", "span_end", "span_text", "quoted_exactly")} == {
        "prompt_id": "p1", "sample_index": "1", "validator": "arithmetic",
        "reason_code": "arithmetic_error", "span_start": str(WRONG), "span_end": str(WRONG + 9),
        "span_text": TEXT[WRONG:WRONG + 9], "quoted_exactly": "t"}
    before, after = TEXT[:WRONG], TEXT[WRONG + 9:]
    assert row["in_context"] == (before + "[[2 + 2 = 5]]" + after).replace("\n", "\\n")


def test_outcomes_by_model_names_the_model_the_endpoint_served(two_runs: tuple[str, str]) -> None:
    url, latest = two_runs
    out = _psql(url, PROJECT_ROOT / "sql" / "queries" / "outcomes_by_model.sql", "--csv",
                "-v", f"run_id={latest}")
    assert out.returncode == 0, out.stderr
    rows = [(r["endpoint"], r["model_asked"], r["model_served"], r["samples"], r["accepted"],
             r["rejected"], r["completion_tokens"])
            for r in csv.DictReader(io.StringIO(out.stdout))]
    assert rows == [("e", "*", "gen-a", "1", "1", "0", "7"),
                    ("e", "m", "(not named)", "1", "0", "1", "10")]
