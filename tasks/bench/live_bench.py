"""`foldem bench live`: the same GSM8K prompts against llama.cpp's server on the bundled
SmolLM2-135M-Instruct (this CPU), once in flight and once generated in full then filtered;
ground truth from the server's own counters. Figures in DIR/summary.json, tables and charts in
DIR/report.md (docs/BENCHMARKS.md, "Live model").

Modes:
  exact     one slot and no prompt-cache reuse (`cache_prompt: false` in every request): a seed
            gives the same text every time, so both runs write the same tokens up to the cut;
            shown by generating the first few samples a third time and comparing
  parallel  N slots: llama.cpp batches the streams, which changes the numbers (and texts), so
            the in-flight verdicts are checked against a post-hoc verdict on their own texts
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from foldem.core.errors import ConfigError
from foldem.spec.job import JobSpec, load_job, parse_job
from foldem.spec.stages import Stage
from tasks.bench.live_metrics import summarize
from tasks.bench.live_runs import LiveModeResult, run_live_mode
from tasks.endpoints.local_model import LocalModelOptions, start_local_model
from tasks.engine.runner import build_stage_validators
from tasks.records.models import WorkItem
from tasks.run import lifecycle
from tasks.run.prompts import load_prompts
from validators.defaults import DEFAULT_SOLVE_VALIDATORS

DEFAULT_PROMPTS = 200
DEFAULT_MAX_TOKENS = 192
DEFAULT_SLOTS = 4
REPEAT_CHECK = 3  # samples generated a third time in exact mode to show the text reproduces
#: The solve stage of examples/live-gsm8k.yaml, with the default validator set.
SYSTEM = ("You are a careful math tutor. Solve the problem step by step, one step per line, "
          "showing each computation. End with a final line of the form \"#### <number>\".")


class BenchLiveSettings(BaseModel):
    out_dir: Path
    prompts: int = Field(DEFAULT_PROMPTS, ge=1)
    samples: int = Field(1, ge=1)
    mode: Literal["exact", "parallel"] = "exact"
    slots: int = Field(DEFAULT_SLOTS, ge=1, le=64)  # parallel mode only
    threads: int = Field(1, ge=1)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=8)
    job_path: Path | None = None
    prompts_path: str = "data://gsm8k/test.jsonl"
    database_url: str | None = None

    @property
    def server_slots(self) -> int:
        return 1 if self.mode == "exact" else self.slots


def _solve_stage(settings: BenchLiveSettings) -> dict[str, Any]:
    """The measured stage: a --job's solve stage, else the built-in one; early exit off so the
    two runs keep comparable sets (early exit is a separate saving)."""
    if settings.job_path is None:
        return {"name": "solve", "kind": "solve", "system": SYSTEM, "template": "{problem}",
                "checkpoints": {"separator": "\n", "every_step": True},
                "expected_tokens": 120, "early_exit": False,
                "validators": [{"name": n, "params": p, "mode": m}
                               for n, p, m in DEFAULT_SOLVE_VALIDATORS]}
    solve: list[Stage] = [st for st in load_job(settings.job_path).stages if st.kind == "solve"]
    if not solve:
        raise ConfigError(f"{settings.job_path} has no 'solve' stage to measure")
    stage = solve[0].model_dump(mode="json", exclude_none=True)
    stage.update(early_exit=False, endpoint="local")
    stage.pop("step_judge", None)  # a judge model's calls would share the one slot
    return stage


def bench_job(settings: BenchLiveSettings, *, in_flight: bool) -> JobSpec:
    """The job both runs use (only `in_flight` differs): GSM8K test prompts with their
    reference answers, seed = sample index, `cache_prompt: false` in every request."""
    slots = settings.server_slots
    return parse_job({
        "name": "bench-live",
        "prompts": {"path": settings.prompts_path, "field": "question",
                    "reference_field": "answer", "reference_pattern": r"####\s*(.+)$",
                    "limit": settings.prompts},
        "samples_per_prompt": settings.samples,
        "in_flight": in_flight,
        "endpoints": [{"name": "local", "base_url": "local", "model": "smollm2",
                       "max_concurrent_streams": slots,
                       "timeouts": {"connect": 10, "first_token": 300, "idle": 120,
                                    "total": 1800},
                       "extra_body": {"cache_prompt": False}}],
        "local": {"parallel": slots, "threads": settings.threads,
                  "ctx": max(2048, 1024 * slots)},
        "sampling": {"temperature": 0.7, "max_tokens": settings.max_tokens,
                     "seed_per_sample": True},
        "stages": [_solve_stage(settings)],
        "dedup": {"against_earlier_runs": False},
    }, file=str(settings.job_path or "<built-in bench live job>"))


def _machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def _reproduced(full: LiveModeResult, repeat: LiveModeResult) -> dict[str, Any]:
    first = {(r.prompt_id, r.sample_index): r.stages[0].text for r in full.results if r.stages}
    again = [(first.get((r.prompt_id, r.sample_index)), r.stages[0].text if r.stages else "")
             for r in repeat.results]
    return {"checked": len(again), "identical": sum(a == b for a, b in again),
            "run_id": repeat.run_id}


def run_bench_live(settings: BenchLiveSettings) -> dict[str, Any]:
    """Start the server, run both modes (and the repeat check in exact mode), write
    summary.json, runs.json and report.md; return the summary."""
    from tasks.bench.live_report import write_report  # matplotlib only when writing

    exact = settings.mode == "exact"
    jobs = {name: bench_job(settings, in_flight=name == "msifr") for name in ("full", "msifr")}
    prompts = load_prompts(jobs["full"])
    items = [WorkItem(prompt=p, sample_index=k) for p in prompts for k in range(settings.samples)]
    db_url = settings.database_url or lifecycle.prepare_database(jobs["full"])
    local = jobs["full"].local
    options = LocalModelOptions(parallel=local.parallel, threads=local.threads, ctx=local.ctx,
                                startup_timeout=local.startup_timeout)
    machine_before, started = _machine(), time.perf_counter()
    runs: dict[str, LiveModeResult] = {}
    with start_local_model(options) as server:
        for name, job in jobs.items():
            runs[name] = run_live_mode(job, name, items, db_url=db_url,
                                       base_url=server.base_url, root_url=server.root_url,
                                       per_call=exact)
        reproduced = None
        if exact:
            repeat = run_live_mode(jobs["full"], "repeat", items[:REPEAT_CHECK], db_url=db_url,
                                   base_url=server.base_url, root_url=server.root_url,
                                   per_call=True)
            reproduced = _reproduced(runs["full"], repeat)
    validators = build_stage_validators(jobs["msifr"])
    summary = summarize(jobs["msifr"], validators, runs["full"], runs["msifr"], exact=exact,
                        reproduced=reproduced)
    summary |= {"prompts": len(prompts), "samples_per_prompt": settings.samples,
                "max_tokens": settings.max_tokens, "slots": settings.server_slots,
                "threads": settings.threads,
                "elapsed_seconds": round(time.perf_counter() - started, 1)}
    details = {"settings": settings.model_dump(mode="json", exclude={"database_url"}),
               "machine": {"before": machine_before, "after": _machine()},
               "modes": {n: r.model_dump(mode="json", include={"run_id", "wall_seconds",
                                                               "before", "after", "calls"})
                         for n, r in runs.items()}}
    out = settings.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "runs.json").write_text(json.dumps(details, indent=2) + "\n")
        write_report(summary, out)
    except OSError as exc:
        raise ConfigError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return summary
