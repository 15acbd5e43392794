"""`foldem bench client` end to end on a few real traces, with small settings: the pre-rendered
source and every consumer in processes of their own, the ledger in Postgres checked against the
source's count. What is asserted is the shape and consistency of the figures, never a speed.

The traces are picked from the shared files at test time and written to a temporary file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from foldem.core.data import resolve_data_path
from foldem.core.traces import load_traces, tokenize_chunks
from tasks.bench.client_bench import BenchClientSettings, run_bench_client
from tasks.bench.replay_bench import default_job
from tasks.engine.policy import Action, StagePolicy
from tasks.engine.runner import build_stage_validators
from validators.base import ProblemContext
from validators.checkpoints import CheckpointSplitter

CONSUMERS = {"minimal", "foldem-norules", "foldem"}


def _rejected_early(raw: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """The traces the default rules reject before their last step (judged after the fact):
    paced, their streams are aborted while the source is still writing."""
    path.write_text("".join(json.dumps(t) + "\n" for t in raw))
    traces = load_traces([path])
    validators = build_stage_validators(default_job(traces))["solve"]
    out = []
    for t, r in zip(traces, raw, strict=True):
        ctx = ProblemContext(problem=t.problem, stage="solve", reference_answer=None,
                             expected_tokens=None)
        policy = StagePolicy(validators, ctx, early_exit=False)
        splitter = CheckpointSplitter(separator=t.separator)
        checkpoints = [*splitter.push(t.text, 1), splitter.close()]
        for i, cp in enumerate(checkpoints):
            if policy.judge(cp).action is Action.REJECT:
                if i < len(checkpoints) - 2:
                    out.append(r)
                break
    return out


def _traces(tmp_path: Path) -> Path:
    """Short ProcessBench GSM8K traces: 3 the default rules reject early and 17 more; and 8
    GPT-3 traces of two problems (several recordings each: the seed picks one)."""
    bench = [json.loads(line) for line in resolve_data_path(
        "data://traces/processbench_gsm8k.jsonl").read_text().splitlines()]
    bench.sort(key=lambda t: len(t["separator"].join(t["steps"])))
    rejected = _rejected_early(bench, tmp_path / "candidates.jsonl")[:3]
    assert len(rejected) == 3, "the shared traces changed: pick other rejected ones"
    picked = rejected + [t for t in bench[:40] if t not in rejected][:17]
    gpt3 = [json.loads(line) for line in
            resolve_data_path("data://traces/gsm8k_gpt3_dev.jsonl").read_text().splitlines()]
    problems = list(dict.fromkeys(t["problem"] for t in gpt3))[:2]
    picked += [t for t in gpt3 if t["problem"] in problems]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in picked))
    return path


@pytest.fixture(scope="module")
def bench(pg_url: str, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[dict[str, Any], Path, Path]:
    tmp = tmp_path_factory.mktemp("bench-client")
    traces = _traces(tmp)
    out = tmp / "out"
    summary = run_bench_client(BenchClientSettings(
        traces=[traces], out_dir=out, concurrency=[16], workers=[2], scale_concurrency=8,
        paced_streams=8, paced_tokens_per_second=400, peers=True,
        peers_venvs=tmp / "no-venvs-here", database_url=pg_url))
    return summary, out, traces


def _total_tokens(traces: Path) -> int:
    return sum(sum(tokenize_chunks(t.text).tokens) for t in load_traces([traces]))


def _consistent(f: dict[str, Any]) -> None:
    assert f["tokens"] > 0 and f["wall_seconds"] > 0 and f["cpu_seconds"] > 0
    # The seconds are stored rounded to the millisecond; the rates from the exact values.
    assert f["tokens_per_second"] == pytest.approx(f["tokens"] / f["wall_seconds"], rel=0.05)
    assert f["tokens_per_cpu_second"] == pytest.approx(f["tokens"] / f["cpu_seconds"], rel=0.05)
    assert f["cpu_seconds_per_mtok"] == pytest.approx(f["cpu_seconds"] / f["tokens"] * 1e6,
                                                      rel=0.05)


def test_every_consumer_reads_every_token_and_the_ledger_is_exact(
        bench: tuple[dict[str, Any], Path, Path]) -> None:
    summary, _, traces = bench
    total = _total_tokens(traces)
    assert set(summary["throughput"]) == {"16"}
    for by in summary["throughput"].values():
        assert set(by) == CONSUMERS
        for name, f in by.items():
            _consistent(f)
            # Unpaced, the source writes each whole recording before anything is judged.
            assert f["tokens"] == total
            assert f["requests"] == f["items"] == 28
            if name != "minimal":
                assert f["ledger_equals_server"] is True
                assert f["ledger_tokens"] == total
                assert f["server_check"]["mismatched_requests"] == 0
    assert summary["ledger_equals_server"] is True


def test_the_minimal_reader_counts_one_event_per_chunk(
        bench: tuple[dict[str, Any], Path, Path]) -> None:
    summary, _, traces = bench
    chunks = sum(len(tokenize_chunks(t.text).texts) for t in load_traces([traces]))
    # Per stream: the role chunk, the content chunks, the finish and usage chunks, [DONE].
    for by in summary["throughput"].values():
        assert by["minimal"]["events"] == chunks + 4 * 28


def test_workers_split_the_streams_and_add_up(bench: tuple[dict[str, Any], Path, Path]) -> None:
    summary, _, traces = bench
    assert set(summary["scale"]) == {"2"}
    for n, f in summary["scale"].items():
        _consistent(f)
        assert f["workers"] == int(n) and f["items"] == 28
        assert f["tokens"] == _total_tokens(traces) and f["ledger_equals_server"] is True


def test_paced_run_reports_abort_latency_with_the_ledger_exact(
        bench: tuple[dict[str, Any], Path, Path]) -> None:
    summary, _, _ = bench
    a = summary["abort"]
    _consistent(a)
    assert a["ledger_equals_server"] is True
    assert a["streams"] == 8 and a["tokens_per_second_per_stream"] == 400
    lat = a["abort_latency"]
    # Rejections stop the paced streams: fewer tokens than the unpaced runs read.
    assert lat["aborted"] >= 1 and a["rejected"] >= 1
    assert a["tokens"] < summary["throughput"]["16"]["foldem"]["tokens"]
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]


def test_missing_peers_are_skipped_with_the_reason(
        bench: tuple[dict[str, Any], Path, Path]) -> None:
    summary, out, _ = bench
    for peer in ("curator", "distilabel"):
        assert "no venv at" in summary["peers"][peer]["skipped"]
    assert "peers" not in summary["ratios"]
    for c in ("16",):
        assert set(summary["ratios"][c]) == CONSUMERS - {"minimal"}
    written = json.loads((out / "summary.json").read_text())
    assert written == summary
    report = (out / "report.md").read_text()
    assert "## 16 concurrent streams" in report
    assert "skipped: no venv at" in report
