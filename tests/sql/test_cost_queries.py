"""The money queries of sql/queries/ (cost_per_run, cost_by_stage, cost_of_rejections,
run_trends), run through psql as a user runs them, on a scratch database holding three runs of
one job: their figures are the ledger's sums, the run summary's and `foldem report`'s."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from foldem import PROJECT_ROOT
from tasks.records.models import RejectionRecord, SampleResult
from tasks.reports.costs import build_cost_report
from tasks.store import db
from tasks.store.run_summary import summarize_run
from tests.support.costs import GEN, SPEC, cost_mix, cut, judge_price, priced_call, unmade_usd
from tests.support.samples import commit_run, sample_result
from tests.support.scratch_db import scratch_database

QUERIES = PROJECT_ROOT / "sql" / "queries"
PSQL = shutil.which("psql")
JOB = "trend-test"  # commit_run's job name for prefix "trend"
pytestmark = pytest.mark.skipif(PSQL is None, reason="psql is not installed")


def _sample(run_id: str, n: int, rejected_by: str | None, completion: int) -> SampleResult:
    call = priced_call(run_id, f"p{n}", GEN, completion=completion,
                       **({} if rejected_by is None else cut("rejected", 20)))
    if rejected_by is None:
        return sample_result(run_id, f"p{n}", ledger=[call])
    return sample_result(run_id, f"p{n}", status="rejected", ledger=[call],
                         rejection=RejectionRecord(stage="solve", checkpoint=1,
                                                   validator=rejected_by, reason_code="bad"))


def _older(run_id: str, rejected_by: list[str | None], completion: int) -> list[SampleResult]:
    return [_sample(run_id, n, v, completion) for n, v in enumerate(rejected_by)]


@pytest.fixture(scope="module")
def runs(pg_url: str) -> Iterator[tuple[str, str, list[list[SampleResult]]]]:
    """(SQLAlchemy URL, libpq URL, each run's samples oldest first) of three runs of one job,
    a day apart: the newest is `cost_mix` (judge stage, step judge, a call with no price)."""
    with scratch_database(pg_url, migrated=True) as url:
        made: list[list[SampleResult]] = []

        def keep(samples: list[SampleResult]) -> list[SampleResult]:
            made.append(samples)
            return samples

        ids = [commit_run(url, lambda r: keep(_older(r, [None, None, None, "arithmetic"], 50)),
                          prefix="trend", spec=SPEC, finish="completed"),
               commit_run(url, lambda r: keep(_older(r, [None, "arithmetic", "reference_answer",
                                                         None], 90)),
                          prefix="trend", spec=SPEC, finish="completed"),
               commit_run(url, lambda r: keep(cost_mix(r, judge_price("0.01"))[0]),
                          prefix="trend", spec=SPEC, finish="completed")]
        commit_run(url, lambda r: [sample_result(r, "u", ledger=[priced_call(r, "u", None)])],
                   prefix="unpriced", spec=SPEC, run_id="unpriced-run", finish="completed")
        with db.session_scope(db.get_engine(url)) as session:
            for day, run_id in enumerate(ids, start=1):
                session.execute(sa.text("UPDATE runs SET started_at = :t WHERE run_id = :r"),
                                {"t": f"2026-03-0{day}T02:00Z", "r": run_id})
        yield url, db.libpq_url(url), made


def _psql(url: str, name: str, *args: str) -> list[dict[str, str]]:
    assert PSQL is not None
    out = subprocess.run([PSQL, url, "-X", "-v", "ON_ERROR_STOP=1", "--csv", *args,
                          "-f", str(QUERIES / name)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return list(csv.DictReader(io.StringIO(out.stdout)))


def _money(value: str) -> Decimal | None:
    return Decimal(value) if value else None


def _run_id(samples: list[SampleResult]) -> str:
    return samples[0].run_id


def test_cost_per_run_is_the_run_summarys_cost(runs: tuple[str, str, Any]) -> None:
    url, libpq, made = runs
    rows = {r["run_id"]: r for r in _psql(libpq, "cost_per_run.sql")}
    with db.session_scope(db.get_engine(url)) as session:
        for samples in made:
            row, summary = rows[_run_id(samples)], summarize_run(session, run_id=_run_id(samples))
            cost = summary.cost
            assert int(row["accepted"]) == summary.accepted
            assert int(row["unpriced_calls"]) == cost.unpriced_calls
            assert _money(row["cost_usd"]) == cost.total_usd
            assert _money(row["usd_per_accepted"]) == cost.per_accepted_usd
            assert _money(row["rejected_usd"]) == cost.rejected_usd
            assert _money(row["finish_rejected_usd_est"]) == cost.rejected_finish_estimate_usd
            assert _money(row["early_stops_usd_est"]) == cost.early_stop_estimate_usd
            assert _money(row["checks_usd"]) == cost.checks_usd
            assert _money(row["net_saving_usd_est"]) == cost.net_saving_estimate_usd
    newest = rows[_run_id(made[-1])]
    assert _money(newest["checks_usd"]) != 0 and int(newest["unpriced_calls"]) == 1
    # a run with no price: every money figure unknown, none a $0
    unknown = rows["unpriced-run"]
    assert int(unknown["unpriced_calls"]) == 1
    assert all(unknown[k] == "" for k in ("cost_usd", "usd_per_accepted", "rejected_usd",
                                          "finish_rejected_usd_est", "checks_usd",
                                          "net_saving_usd_est"))


def test_cost_by_stage_splits_the_ledger_by_stage_and_call_kind(
        runs: tuple[str, str, Any]) -> None:
    _, libpq, made = runs
    newest = made[-1]
    rows = _psql(libpq, "cost_by_stage.sql", "-v", f"run_id={_run_id(newest)}")
    calls = [c for s in newest for c in s.ledger]
    want: dict[tuple[str, str], list[Any]] = {}
    for c in calls:
        want.setdefault((c.stage, c.call_kind), []).append(c)
    assert {(r["stage"], r["call_kind"]) for r in rows} == set(want)
    total = sum((c.cost_usd for c in calls if c.cost_usd is not None), Decimal(0))
    for r in rows:
        group = want[(r["stage"], r["call_kind"])]
        costs = [c.cost_usd for c in group if c.cost_usd is not None]
        assert int(r["calls"]) == len(group)
        assert int(r["unpriced_calls"]) == len(group) - len(costs)
        assert int(r["cached_prompt_tokens"]) == sum(c.cached_prompt_tokens or 0 for c in group)
        assert _money(r["cost_usd"]) == (sum(costs, Decimal(0)) if costs else None)
        if costs:
            assert float(r["pct_of_cost"]) == pytest.approx(
                float(100 * sum(costs, Decimal(0)) / total), abs=0.05)
    assert sum(_money(r["cost_usd"]) or 0 for r in rows) == total


def test_cost_of_rejections_prices_each_validators_rejections(
        runs: tuple[str, str, Any]) -> None:
    _, libpq, made = runs
    middle = made[1]
    rows = {r["validator"]: r for r in _psql(libpq, "cost_of_rejections.sql", "-v",
                                             f"run_id={_run_id(middle)}")}
    for s in middle:
        if s.rejection is None:
            continue
        (call,) = s.ledger
        row = rows[s.rejection.validator]
        assert _money(row["cost_usd"]) == call.cost_usd
        assert _money(row["finish_usd_est"]) == unmade_usd(call)


def _trend(made: list[list[SampleResult]]) -> list[dict[str, Any]]:
    """What run_trends should say of the job's runs, newest first, worked out from the samples."""
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for samples in made:
        accepted = sum(s.status == "accepted" for s in samples)
        calls = [c for s in samples for c in s.ledger]
        cost = sum((c.cost_usd for c in calls if c.cost_usd is not None), Decimal(0))
        rejected = [s.rejection.validator for s in samples if s.rejection is not None]
        shares = sorted({v: rejected.count(v) for v in rejected}.items(),
                        key=lambda kv: (-kv[1], kv[0]))
        saved = sum(c.tokens_saved for c in calls)
        row = {"accepted_pct": round(100 * accepted / len(samples), 1),
               "usd_per_accepted": (cost / accepted).quantize(Decimal("1e-9")),
               "rejection_mix": ", ".join(f"{round(100 * n / len(rejected))}% {v}"
                                          for v, n in shares),
               "tokens_saved": saved, "unpriced_calls": sum(c.cost_usd is None for c in calls),
               "saved_pct": round(100 * saved / (saved + sum(c.completion_tokens
                                                              for c in calls)), 1)}
        row["accepted_pct_change"] = (None if previous is None
                                      else round(row["accepted_pct"]
                                                 - previous["accepted_pct"], 1))
        row["usd_per_accepted_change_pct"] = None if previous is None else round(float(
            100 * (row["usd_per_accepted"] - previous["usd_per_accepted"])
            / previous["usd_per_accepted"]), 1)
        out.append(row)
        previous = row
    return out[::-1]


def test_run_trends_show_each_run_against_the_jobs_previous_one(
        runs: tuple[str, str, Any]) -> None:
    url, libpq, made = runs
    rows = [r for r in _psql(libpq, "run_trends.sql") if r["job_name"] == JOB]

    def opt(value: str) -> float | None:
        return None if value == "" else float(value)

    got = [{"accepted_pct": float(r["accepted_pct"]),
            "usd_per_accepted": Decimal(r["usd_per_accepted"]),
            "rejection_mix": r["rejection_mix"], "tokens_saved": int(r["tokens_saved"]),
            "unpriced_calls": int(r["unpriced_calls"]), "saved_pct": float(r["saved_pct"]),
            "accepted_pct_change": opt(r["accepted_pct_change"]),
            "usd_per_accepted_change_pct": opt(r["usd_per_accepted_change_pct"])}
           for r in rows]
    assert got == _trend(made)
    assert [r["run_id"] for r in rows] == [_run_id(s) for s in made[::-1]]
    # `foldem report` shows the same rows for the newest run's job
    with db.session_scope(db.get_engine(url)) as session:
        report = build_cost_report(session, [_run_id(made[-1])])
    assert [(t.run_id, t.accepted_pct, t.usd_per_accepted, t.rejection_mix,
             t.usd_per_accepted_change_pct) for t in report.trends] == [
        (r["run_id"], float(r["accepted_pct"]), Decimal(r["usd_per_accepted"]),
         r["rejection_mix"], opt(r["usd_per_accepted_change_pct"])) for r in rows]
    assert report.runs[0].cost.total_usd == Decimal(
        next(r for r in _psql(libpq, "cost_per_run.sql")
             if r["run_id"] == _run_id(made[-1]))["cost_usd"])
