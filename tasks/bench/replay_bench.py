"""`foldem bench replay`: the same recorded traces through the real path twice — with in-flight
rejection and as the generate-then-filter baseline — plus the early-exit variants; figures in
DIR/summary.json (with each mode's cost at the given prices, tasks/bench/replay_cost.py),
per-mode details in DIR/runs.json, tables and charts in DIR/report.md.

Modes (each a run of its own in Postgres, under a fresh run id):
  full       in_flight false: every sample generated in full, then filtered (the baseline)
  msifr      in_flight true, early exit off: rejection only, so its kept set must equal full's
  answer     in_flight true, early exit on: also stop once the final answer is complete
  agreement  msifr + stop a prompt's remaining samples once k accepted samples agree
  combined   answer + agreement
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from foldem.core.errors import ConfigError
from foldem.core.traces import Trace, load_traces
from foldem.replay.judge import STEP_JUDGE_MODEL_PREFIX, JudgeNoise
from foldem.replay.launcher import start_replay_server
from foldem.spec.endpoints import Prices
from foldem.spec.job import JobSpec, parse_job
from tasks.bench.replay_cost import cost_block, with_prices
from tasks.bench.replay_metrics import (
    core_figures,
    early_exit_block,
    fault_figures,
    oracle_prefix_tokens,
    step_judge_block,
    summarize,
)
from tasks.bench.replay_runs import ModeResult, ModeSpec, plan_items, run_mode
from tasks.run import lifecycle
from validators.defaults import DEFAULT_SOLVE_VALIDATORS

#: Default pace: 64 streams × 50 tokens/s ≈ 3,200 tokens/s, which one client process reads
#: without falling behind, so the ledger matches the replay's count exactly (docs/BENCHMARKS.md).
DEFAULT_CONCURRENCY = 64
DEFAULT_TOKENS_PER_SECOND = 50.0
DEFAULT_AGREEMENT_K = 2


class BenchReplaySettings(BaseModel):
    traces: list[Path]
    out_dir: Path
    job_path: Path | None = None
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=4096)
    tokens_per_second: float = Field(DEFAULT_TOKENS_PER_SECOND, ge=0)
    faults: str | None = None
    agreement_k: int = Field(DEFAULT_AGREEMENT_K, ge=1)
    early_exit: bool = True  # also run the three early-exit modes
    database_url: str | None = None
    step_judge: bool = False  # the default job gets a step judge on the replay (judge-steps)
    judge_noise: JudgeNoise = Field(default_factory=JudgeNoise)
    #: USD per million tokens for the endpoints the job gives no `prices:` (summary `cost`).
    prices: Prices | None = None


def common_separator(traces: Sequence[Trace]) -> str:
    """The most common separator (reported; each trace is split at its own separator)."""
    return Counter(t.separator for t in traces).most_common(1)[0][0]


def default_job(traces: Sequence[Trace], *, step_judge: bool = False) -> JobSpec:
    """A job that fits any traces in the shared format: the problem as the prompt, the default
    solve validators, the traces' separator, no length cap below the longest recording; with
    `step_judge`, also the replay's step judge (model judge-steps) after every step."""
    timeouts = {"idle": 120, "first_token": 120, "total": 3600}
    endpoints = [{"name": "replay", "base_url": "replay", "model": "*", "timeouts": timeouts}]
    stage: dict[str, Any] = {
        "name": "solve", "template": "{problem}",
        "checkpoints": {"separator": common_separator(traces)},
        "validators": [{"name": n, "params": p, "mode": m}
                       for n, p, m in DEFAULT_SOLVE_VALIDATORS]}
    if step_judge:
        endpoints.append({"name": "step-judge", "base_url": "replay",
                          "model": STEP_JUDGE_MODEL_PREFIX, "timeouts": timeouts})
        stage["step_judge"] = {"endpoint": "step-judge"}
    return parse_job({
        "name": "bench-replay",
        "prompts": {"path": "unused.jsonl"},
        "endpoints": endpoints,
        "sampling": {"max_tokens": 1_000_000, "temperature": 0},
        "stages": [stage],
    }, file="<default bench job>")


def _machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def _modes(settings: BenchReplaySettings) -> list[ModeSpec]:
    k = settings.agreement_k
    modes = [ModeSpec(name="full", in_flight=False, early_exit=False),
             ModeSpec(name="msifr", in_flight=True, early_exit=False)]
    if settings.early_exit:
        modes += [ModeSpec(name="answer", in_flight=True, early_exit=True),
                  ModeSpec(name="agreement", in_flight=True, early_exit=False, agreement_k=k),
                  ModeSpec(name="combined", in_flight=True, early_exit=True, agreement_k=k)]
    return modes


def run_bench_replay(settings: BenchReplaySettings) -> dict[str, Any]:
    """Run every mode, write summary.json, runs.json and report.md; return the summary."""
    from tasks.bench.replay_report import write_report  # matplotlib only when writing

    traces = load_traces(settings.traces)
    if not traces:
        raise ConfigError("the trace files hold no traces")
    if settings.job_path is not None:
        from foldem.spec.job import load_job

        job = load_job(settings.job_path)
    else:
        job = default_job(traces, step_judge=settings.step_judge)
    if settings.step_judge and settings.job_path is not None:
        raise ConfigError("--step-judge adds a step judge to the default job; with --job, "
                          "give the solve stage a step_judge in the job spec instead")
    if len(job.stages) != 1 or job.stages[0].kind != "solve":
        raise ConfigError("bench replay needs a job with one 'solve' stage: a recording is one "
                          "generation, so problem and judge stages have nothing to replay")
    job = with_prices(job, settings.prices)
    planned = plan_items(traces)
    db_url = settings.database_url or lifecycle.prepare_database(job)
    machine_before = _machine()
    results: dict[str, ModeResult] = {}
    with start_replay_server(settings.traces, tokens_per_second=settings.tokens_per_second,
                             faults=settings.faults, judge_noise=settings.judge_noise) as server:
        for mode in _modes(settings):
            results[mode.name] = run_mode(job, mode, planned, db_url=db_url, server=server,
                                          concurrency=settings.concurrency)
    full, msifr = results["full"], results["msifr"]
    per_prompt = Counter(p.item.prompt.prompt_id for p in planned)
    block = early_exit_block(
        msifr, sum(r.completion_tokens for r in full.rows.values()), results.get("answer"),
        results.get("agreement"), results.get("combined"), settings.agreement_k,
        sum(n > 1 for n in per_prompt.values()))
    others = [r for name, r in results.items() if name not in ("full", "msifr")]
    summary = summarize(traces, full, msifr, block, others, faults=bool(settings.faults))
    if job.stages[0].step_judge is not None:
        summary["step_judge"] = step_judge_block(full, msifr, settings.judge_noise)
    summary["cost"] = cost_block(job, db_url, results)
    out = settings.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        runs = {
            "settings": settings.model_dump(mode="json", exclude={"database_url"}),
            "machine": {"before": machine_before, "after": _machine()},
            "separator": common_separator(traces),
            "modes": {name: {"run_id": r.run_id, "wall_seconds": r.wall_seconds,
                             "server": r.server.model_dump(), "server_ok": r.server.ok,
                             "statuses": dict(Counter(str(x.status) for x in r.rows.values())),
                             "accepted_per_hour": _per_hour(r),
                             "faults": fault_figures(r) | {"struck": r.server.faults}}
                      for name, r in results.items()},
        }
        runs["by_file"] = _by_file(settings.traces, traces, full, msifr)
        (out / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
        write_report(summary, runs, traces, results, out)
    except OSError as exc:
        raise ConfigError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return summary


def _per_hour(result: ModeResult) -> float | None:
    accepted = sum(r.status == "accepted" for r in result.rows.values())
    return round(accepted * 3600 / result.wall_seconds, 1) if result.wall_seconds else None


def _by_file(paths: Sequence[Path], traces: Sequence[Trace], full: ModeResult,
             msifr: ModeResult) -> dict[str, Any]:
    """The summary's figures per trace file (a trace replays the same in any file mix)."""
    by_id = {t.id: t for t in traces}
    out = {}
    for path in paths:
        group = [by_id[t.id] for t in load_traces([path])]
        prefixes = {t.id: oracle_prefix_tokens(t) for t in group}
        out[path.name] = core_figures(group, full.rows, msifr.rows, prefixes)
    return out
