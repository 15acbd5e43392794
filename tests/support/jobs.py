"""The integration job (GSM8K from ../shared/data, solved against one endpoint with the default
validators) as a dict, written as a job file, and run through the `generate` flow in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from tests.support.tracedata import SHARED_DATA

PACE = 50  # tokens/s per stream: the client closes well within one token interval


def job_dict(base_url: str, *, limit: int = 12, samples: int = 4, name: str = "it-gsm8k",
             validators: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "prompts": {"path": str(SHARED_DATA / "gsm8k" / "test.jsonl"), "field": "question",
                    "reference_field": "answer", "reference_pattern": r"####\s*(.+)$",
                    "limit": limit},
        "samples_per_prompt": samples,
        "endpoints": [{"name": "replay", "base_url": base_url, "model": "*",
                       "max_concurrent_streams": 8}],
        "replay": {"traces": [str(SHARED_DATA / "traces" / "gsm8k_gpt3_dev.jsonl")],
                   "tokens_per_second": PACE},
        "sampling": {"temperature": 0.7, "max_tokens": 512},
        "stages": [{
            "name": "solve", "template": "Solve step by step.\n\n{problem}",
            "expected_tokens": 120, "early_exit": True,
            "validators": validators if validators is not None else [
                {"name": "arithmetic"}, {"name": "final_answer"}, {"name": "reference_answer"}],
        }],
        "shard_size": 8,
        "export": {"dir": "{job}-{run_id}"},
    }


def write_job(tmp_path: Path, data: dict[str, Any], name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_flow(job_path: Path, run_id: str, db_url: str) -> Any:
    """The `generate` flow in this process (it needs a Prefect API: the `prefect_api` fixture)."""
    from flows.generate import generate

    return asyncio.run(generate(job_path=str(job_path), run_id=run_id, database_url=db_url))
