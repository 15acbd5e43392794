"""`foldem bench replay` end to end on a small set of real traces: the replay endpoint over
HTTP, the streaming client, validators and the ledger in Postgres, in flight and as the
generate-then-filter baseline, plus the early-exit runs.

The traces are picked from the shared files at test time (short ones, so a paced replay stays
within seconds) and written to a temporary file; nothing of them is copied into the repo.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from foldem.core.data import resolve_data_path
from foldem.replay.judge import JudgeNoise
from foldem.spec.endpoints import Prices
from tasks.bench.replay_bench import BenchReplaySettings, run_bench_replay
from tasks.bench.replay_cost import cost_line
from tasks.bench.replay_metrics import FAULT_KEYS, STEP_JUDGE_KEYS, SUMMARY_KEYS
from tasks.store.db import get_engine, session_scope

FRACTIONS = ("token_reduction", "oracle_step_reduction", "false_rejection_rate_process",
             "false_rejection_rate_outcome", "missed_fault_rate", "accuracy_full",
             "accuracy_kept")


def _short_traces(tmp_path: Path) -> Path:
    """28 GPT-3 traces (7 problems × 4 recordings: the agreement exit applies) and the 12
    shortest ProcessBench GSM8K traces among its first 120 (labelled steps)."""
    gpt3 = [json.loads(line) for line in
            resolve_data_path("data://traces/gsm8k_gpt3_dev.jsonl").read_text().splitlines()[:200]]
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for t in gpt3:
        by_problem.setdefault(t["problem"], []).append(t)
    picked = [t for group in by_problem.values()
              if max(len("\n".join(x["steps"])) for x in group) < 700 for t in group][:28]
    bench = [json.loads(line) for line in resolve_data_path(
        "data://traces/processbench_gsm8k.jsonl").read_text().splitlines()[:120]]
    picked += sorted(bench, key=lambda t: len(t["separator"].join(t["steps"])))[:12]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in picked))
    return path


@pytest.fixture(scope="module")
def bench(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    summary = run_bench_replay(BenchReplaySettings(
        traces=[_short_traces(tmp)], out_dir=out, concurrency=40, tokens_per_second=50,
        database_url=pg_url, prices=PRICES))
    return summary, out


#: gpt-4o-mini's list prices, USD per million tokens (any prices would do).
PRICES = Prices(input_per_mtok=Decimal("0.15"), cached_input_per_mtok=Decimal("0.075"),
                output_per_mtok=Decimal("0.6"))


def test_summary_has_exactly_the_issue_keys(bench: tuple[dict[str, Any], Path]) -> None:
    summary, out = bench
    assert tuple(summary) == (*SUMMARY_KEYS, "cost")
    assert json.loads((out / "summary.json").read_text()) == summary


def test_in_flight_keeps_what_posthoc_keeps_with_fewer_tokens(
        bench: tuple[dict[str, Any], Path]) -> None:
    s, _ = bench
    assert s["traces"] == 40
    assert s["kept_equal_to_posthoc"] is True
    assert s["server_tokens_match"] is True
    assert s["token_reduction"] > 0
    assert 0 < s["tokens_msifr"] < s["tokens_full"]
    assert 0 < s["rejected"] < 40
    for key in FRACTIONS:
        assert s[key] is None or 0 <= s[key] <= 1, key
    assert s["wall_seconds_full"] > 0 and s["wall_seconds_msifr"] > 0


def test_breakdowns_add_up(bench: tuple[dict[str, Any], Path]) -> None:
    s, _ = bench
    for key in ("per_dataset", "per_generator"):
        assert sum(g["traces"] for g in s[key].values()) == 40
        assert sum(g["tokens_full"] for g in s[key].values()) == s["tokens_full"]
    assert sum(v["rejected"] for v in s["per_validator"].values()) == s["rejected"]


def test_early_exit_variants_are_measured(bench: tuple[dict[str, Any], Path]) -> None:
    ee = bench[0]["early_exit"]
    assert set(ee) == {"answer_complete", "agreement", "combined"}
    for variant in ee.values():
        assert variant["server_tokens_match"] is True
        assert variant["kept_subset_of_msifr"] is True
        # Not exact: how many tokens a rejected stream delivers after the checkpoint that fired
        # depends on scheduling (a loaded machine reads later), in every mode alike, so a mode
        # that stops more streams can still total a few tokens more; 1% is far below its saving.
        assert variant["tokens"] <= bench[0]["tokens_msifr"] * 1.01
    assert ee["agreement"]["not_generated"] > 0  # 7 problems with 4 recordings each, k = 2
    assert ee["agreement"]["k"] == 2


def test_each_run_is_costed_per_accepted_sample_at_the_given_prices(
        bench: tuple[dict[str, Any], Path], pg_url: str) -> None:
    summary, out = bench
    cost = summary["cost"]
    assert cost["unpriced_endpoints"] == [] and "job spec" in cost["prices"]["replay"]
    runs = json.loads((out / "runs.json").read_text())["modes"]
    with session_scope(get_engine(pg_url)) as session:
        for name in ("full", "msifr"):
            mode = cost["modes"][name]
            total, accepted = session.execute(sa.text(
                "SELECT sum(cost_usd), (SELECT count(*) FROM samples WHERE run_id = :r AND "
                "status = 'accepted') FROM ledger WHERE run_id = :r"),
                {"r": runs[name]["run_id"]}).one()
            assert Decimal(mode["total_usd"]) == total > 0
            assert mode["accepted"] == accepted > 0
            assert Decimal(mode["per_accepted_usd"]) == (total / accepted).quantize(
                Decimal("1e-9"))
    full, msifr = (Decimal(cost["modes"][m]["per_accepted_usd"]) for m in ("full", "msifr"))
    assert msifr < full  # same samples kept, fewer tokens paid for
    assert cost["per_accepted_change_msifr_vs_full"] == round(float((msifr - full) / full), 4)
    assert f"${full} generate-then-filter, ${msifr} in flight" in cost_line(cost)
    assert "## Cost" in (out / "report.md").read_text()


def test_report_and_charts_are_written(bench: tuple[dict[str, Any], Path]) -> None:
    out = bench[1]
    report = (out / "report.md").read_text()
    assert "in-flight rejection" in report
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.name in report
    runs = json.loads((out / "runs.json").read_text())
    assert set(runs["modes"]) == {"full", "msifr", "answer", "agreement", "combined"}


#: Every fault kind, at shares high enough that each strikes on 40 traces in two runs; the stall
#: (2 s) stays under the bench job's idle timeout, so a stalled stream resumes rather than fails.
FAULT_SPEC = "429:0.15,500:0.1,drop:0.08,stall:0.05:2,malformed:0.08,slow:0.1:1"


@pytest.fixture(scope="module")
def faulty(pg_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bench-faults")
    summary = run_bench_replay(BenchReplaySettings(
        traces=[_short_traces(tmp)], out_dir=tmp / "out", concurrency=40, tokens_per_second=50,
        faults=FAULT_SPEC, early_exit=False, database_url=pg_url))
    return summary, json.loads((tmp / "out" / "runs.json").read_text())


def test_faults_add_the_reliability_figures(faulty: tuple[dict[str, Any], dict[str, Any]],
                                            bench: tuple[dict[str, Any], Path]) -> None:
    summary, runs = faulty
    assert tuple(summary) == (*SUMMARY_KEYS, *FAULT_KEYS, "cost")
    assert tuple(bench[0]) == (*SUMMARY_KEYS, "cost")  # only with --faults
    # no --prices, and the replay has no price: said, not costed as 0
    assert summary["cost"]["modes"]["msifr"]["total_usd"] is None
    assert "no price known for replay" in cost_line(summary["cost"])
    struck: dict[str, int] = {}
    for mode in runs["modes"].values():
        for kind, n in mode["faults"]["struck"].items():
            struck[kind] = struck.get(kind, 0) + n
    assert {"429", "500", "drop", "malformed"} <= set(struck), struck
    # Nothing lost or doubled; every token the replay sent is in the ledger, retries included.
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["ledger_mismatch"] == 0
    assert summary["server_tokens_match"] is True
    # drop and malformed strike mid-stream: never retried (tokens were paid), so those samples
    # fail with a reason instead; 429 and 500 come before any token and are retried.
    assert 0 < summary["failed"] == sum(m["faults"]["failed"] for m in runs["modes"].values())
    assert summary["kept_equal_to_posthoc"] is True


def _labelled_traces(tmp_path: Path) -> Path:
    """The 16 shortest ProcessBench GSM8K traces among its first 160 (human step labels)."""
    bench = [json.loads(line) for line in resolve_data_path(
        "data://traces/processbench_gsm8k.jsonl").read_text().splitlines()[:160]]
    picked = sorted(bench, key=lambda t: len(t["separator"].join(t["steps"])))[:16]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in picked))
    return path


def _judged(pg_url: str, tmp: Path, noise: JudgeNoise) -> dict[str, Any]:
    summary = run_bench_replay(BenchReplaySettings(
        traces=[_labelled_traces(tmp)], out_dir=tmp / "out", concurrency=40,
        tokens_per_second=50, early_exit=False, database_url=pg_url, step_judge=True,
        judge_noise=noise))
    report = (tmp / "out" / "report.md").read_text()
    assert "## Step judge" in report and f"recall {noise.recall}" in report
    return summary


def test_a_step_judge_turns_step_labels_into_savings(
        pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """With the replayed judge as good as the labels, in-flight judging captures most of the
    oracle's savings (what is left is the judge's latency); a judge that sees nothing saves
    nothing beyond the rules. Either way the ledger (judge calls included) equals the replay's
    count and the kept set equals the judged-after-the-fact baseline's."""
    good = _judged(pg_url, tmp_path_factory.mktemp("judge-good"), JudgeNoise())
    blind = _judged(pg_url, tmp_path_factory.mktemp("judge-blind"), JudgeNoise(recall=0.0))
    for s in (good, blind):
        assert tuple(s) == (*SUMMARY_KEYS, "step_judge", "cost")
        assert tuple(s["step_judge"]) == STEP_JUDGE_KEYS
        assert s["server_tokens_match"] is True and s["kept_equal_to_posthoc"] is True
        assert s["step_judge"]["calls_msifr"] > 0 and s["step_judge"]["prompt_tokens_msifr"] > 0
    assert good["step_judge"]["rejected_by_judge"] > 0
    assert blind["step_judge"]["rejected_by_judge"] == 0
    assert good["missed_fault_rate"] == 0.0  # every labelled wrong trace is rejected
    assert good["oracle_capture"] > max(0.5, blind["oracle_capture"] or 0)
    assert good["false_rejection_rate_process"] == blind["false_rejection_rate_process"]
