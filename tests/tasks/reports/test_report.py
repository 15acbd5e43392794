"""`foldem report` and tasks/reports/analytics.py on real Postgres: the figures, the run
selection, the errors, the terminal tables, and the PNG charts and report.md written with --out.

Each module gets its own scratch database (so "the latest run" and "an empty database" are
well defined) holding two made-up runs: A (10 samples, 2026-03-01) and B (4, 2026-03-05).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from foldem.cli.main import main
from foldem.core.errors import DatabaseError
from tasks.reports.analytics import RunNotFoundError, build_report
from tasks.reports.rows import AnalyticsReport
from tasks.reports.tables import render_text
from tasks.store import db
from tests.support.samples import Spec, save_run
from tests.support.scratch_db import scratch_database

RUN_A, RUN_B = "report-run-a", "report-run-b"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report_url(pg_url: str) -> Iterator[str]:
    with scratch_database(pg_url, migrated=True) as url:
        with db.session_scope(db.get_engine(url)) as session:
            save_run(session, run_id=RUN_A, endpoint="ep-a", specs=[Spec()] * 6 + [
                Spec(rejected_by="arithmetic", reason="arithmetic_error", cut=True,
                     completion=40, tokens_at_fire=40, fraction_at_fire=0.4)] * 3 + [
                Spec(rejected_by="reference_answer", reason="wrong_answer", tokens_at_fire=120,
                     fraction_at_fire=1.2)])
            save_run(session, run_id=RUN_B, endpoint="ep-b", specs=[Spec()] * 2 + [
                Spec(rejected_by="reference_answer", reason="wrong_answer", tokens_at_fire=90,
                     fraction_at_fire=0.9, ttft_ms=80.0)] * 2)
            session.execute(sa.text(
                "UPDATE runs SET started_at = CASE run_id WHEN :a THEN '2026-03-01T10:00Z' "
                "ELSE '2026-03-05T10:00Z' END::timestamptz"), {"a": RUN_A})
        yield url


@pytest.fixture
def session(report_url: str) -> Iterator[Session]:
    with db.session_scope(db.get_engine(report_url)) as s:
        yield s


def test_one_run_has_the_right_figures(session: Session) -> None:
    report = build_report(session, run_id=RUN_A)
    assert report.scope == f"run {RUN_A}" and report.empty_reason is None
    assert [(r.run_id, r.samples, r.accepted, r.rejected) for r in report.runs] == \
        [(RUN_A, 10, 6, 4)]
    assert [(s.stage, s.samples, s.rejected, s.rejection_pct, s.aborted_calls)
            for s in report.stages] == [("solve", 10, 4, 40.0, 3)]
    assert [(v.validator, v.rejections, v.pct_of_stage, v.pct_of_rejections, v.reasons)
            for v in report.validators] == [("arithmetic", 3, 30.0, 75.0, "arithmetic_error 3"),
                                            ("reference_answer", 1, 10.0, 25.0, "wrong_answer 1")]
    token, = report.tokens
    assert (token.calls, token.aborted_calls, token.prompt_tokens, token.completion_tokens,
            token.completion_tokens_rejected, token.tokens_saved) == (10, 3, 200, 820, 220, 180)
    assert token.saved_pct == pytest.approx(100 * 180 / 1000)
    assert [(f.bucket, f.validator, f.rejections, f.in_flight) for f in report.fire_by_fraction] \
        == [("0.25-0.50", "arithmetic", 3, 3), ("1.00-1.25", "reference_answer", 1, 0)]
    assert [(f.bucket, f.rejections) for f in report.fire_by_tokens] == \
        [("32-63", 3), ("64-127", 1)]
    assert [(r.endpoint, r.calls, r.errors, r.p50_ttft_ms, r.p95_duration_ms)
            for r in report.latency] == [("ep-a", 10, 0, 50.0, 1000.0)]


@pytest.mark.parametrize(("since", "runs", "validators"), [
    # rates over both runs: the denominator is all 14 samples, not only the runs that fired
    (date(2026, 3, 1), [RUN_A, RUN_B], [("arithmetic", 3, 21.43, 50.0),
                                        ("reference_answer", 3, 21.43, 50.0)]),
    (date(2026, 3, 2), [RUN_B], [("reference_answer", 2, 50.0, 100.0)]),
])
def test_since_combines_the_runs_started_that_day_or_later(
        session: Session, since: date, runs: list[str],
        validators: list[tuple[str, int, float, float]]) -> None:
    report = build_report(session, since=since)
    assert [r.run_id for r in report.runs] == runs
    assert report.scope.startswith(f"{len(runs)} run(s) started since {since.isoformat()}")
    assert [(v.validator, v.rejections, v.pct_of_stage, v.pct_of_rejections)
            for v in report.validators] == validators
    assert sum(r.calls for r in report.latency) == sum(r.samples for r in report.runs)


def test_default_is_the_latest_run(session: Session) -> None:
    report = build_report(session)
    assert [r.run_id for r in report.runs] == [RUN_B] and "latest" in report.scope


def test_no_runs_since_a_date_says_so(session: Session) -> None:
    report = build_report(session, since=date(2030, 1, 1))
    assert report.empty_reason == "no runs started on or after 2030-01-01"
    assert render_text(report) == "foldem report: no runs started on or after 2030-01-01"


def test_unknown_run_names_recent_runs(session: Session) -> None:
    with pytest.raises(RunNotFoundError, match=f"'nope' is not in the database.*{RUN_B}") as err:
        build_report(session, run_id="nope")
    assert err.value.exit_code == 2


def _run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_aligned_tables_with_the_figures(report_url: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_cli(capsys, "--run", RUN_A, "--database-url", report_url)
    assert code == 0
    blocks = {b.split("\n", 1)[0]: b.split("\n")[1:] for b in out.strip().split("\n\n")}
    for title in ("Rejections by stage", "Rejections by validator", "Tokens used and saved",
                  "Where rejections fire: fraction of the stage's expected length",
                  "Where rejections fire: completion tokens into the stage", "Endpoint latency"):
        assert title in blocks, title
    arithmetic = next(line for line in blocks["Rejections by validator"] if "arithmetic" in line)
    assert arithmetic.split()[:5] == ["solve", "arithmetic", "3", "30.0%", "75.0%"]
    assert "820" in blocks["Tokens used and saved"][2] and "18.0%" in out
    # the last column is numeric (right-aligned), so every line of the table is equally long
    latency = blocks["Endpoint latency"]
    assert len({len(line) for line in latency}) == 1, latency
    assert latency[2].split() == ["ep-a", "m1", "10", "0", "0", "50.0", "50.0", "1,000.0",
                                  "1,000.0"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path.name
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_cli_out_writes_charts_and_markdown(report_url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "report"
    code, out, _ = _run_cli(capsys, "--since", "2026-03-01", "--out", str(out_dir),
                            "--database-url", report_url)
    assert code == 0 and f"wrote 6 files to {out_dir}" in out
    charts = ["rejections", "tokens", "fire_points", "fire_tokens", "latency"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([f"{c}.png" for c in charts]
                                                               + ["report.md"])
    for chart in charts:
        path = out_dir / f"{chart}.png"
        width, height = _png_size(path)
        assert width >= 600 and height >= 200 and path.stat().st_size > 8_000, chart
    markdown = (out_dir / "report.md").read_text()
    for chart in charts:
        assert f"]({chart}.png)" in markdown
    assert "| solve | arithmetic | 3 | 21.4% | 50.0% | arithmetic_error 3 |" in markdown
    assert "|---|---|---:|---:|---:|---|" in markdown


def test_cli_unknown_run_is_exit_code_2(report_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(capsys, "--run", "nope", "--database-url", report_url)
    assert code == 2 and out == ""
    assert err.startswith("foldem: error: run 'nope' is not in the database (recent runs: ")


@pytest.mark.parametrize("args", [["--run", "a", "--since", "2026-01-01"],
                                  ["--since", "last tuesday"]])
def test_cli_rejects_bad_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", *args])
    assert exit_.value.code == 2
    assert "usage: foldem report" in capsys.readouterr().err


@pytest.mark.parametrize(("migrated", "message"), [
    (True, "the database has no runs yet"),
    (False, "the database is empty (foldem never ran against it)"),
])
def test_cli_on_an_empty_database_says_so(pg_url: str, tmp_path: Path, migrated: bool,
                                          message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with scratch_database(pg_url, migrated=migrated) as url:
        code, out, _ = _run_cli(capsys, "--database-url", url, "--out", str(tmp_path / "r"))
    assert code == 0 and out.startswith(f"foldem report: {message}")
    assert not (tmp_path / "r").exists()


def test_database_without_the_analytics_views_says_to_migrate(
        pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with scratch_database(pg_url, migrated=True) as url:
        db.downgrade(url, "0004")
        with db.session_scope(db.get_engine(url)) as s, pytest.raises(DatabaseError,
                                                                      match="foldem db migrate"):
            build_report(s)
        code, _, err = _run_cli(capsys, "--database-url", url)
    assert code == 5 and "foldem db migrate" in err


def test_empty_report_renders_without_tables() -> None:
    report = AnalyticsReport(scope="nothing", empty_reason="no runs")
    assert render_text(report) == "foldem report: no runs"


def test_cost_and_trend_sections(session: Session, report_url: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The made-up runs carry no prices: their cost is unknown (shown as '-', with every call
    counted as not costed), never $0; the trend shows the job's runs against each other."""
    report = build_report(session, run_id=RUN_B)
    (run,) = report.cost.runs
    assert run.cost.total_usd is None and run.cost.unpriced_calls == 4
    (stage,) = report.cost.stages
    assert (stage.stage, stage.calls, stage.unpriced_calls, stage.cost_usd) == \
        ("solve", 4, 4, None)
    assert [(t.run_id, t.accepted_pct, t.accepted_pct_change, t.rejection_mix, t.tokens_saved)
            for t in report.cost.trends] == [
        (RUN_B, 50.0, -10.0, "100% reference_answer", 0),
        (RUN_A, 60.0, None, "75% arithmetic, 25% reference_answer", 180)]
    code, out, _ = _run_cli(capsys, "--run", RUN_B, "--database-url", report_url)
    assert code == 0
    blocks = {b.split("\n", 1)[0]: b.split("\n")[1:] for b in out.strip().split("\n\n")}
    assert blocks["Cost"][2].split()[:3] == [RUN_B, "-", "-"]
    trend = blocks["Run over run (the jobs' last runs, newest first)"]
    assert "-10.0 pts" in trend[2] and RUN_A in trend[3]
