"""What an export tells a fine-tuning user about where each row came from, on real Postgres:
the system message the job sent, the trace columns (run, prompt, sample, endpoint, the model
that wrote the solution, early exit, answer), a manifest that describes the job, and the
optional removal of GSM8K calculator markup."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from foldem.spec.sections import Export
from tasks.outputs.export import export_run, strip_calculator_markup
from tasks.outputs.manifest import CHAT_COLUMNS
from tasks.records.models import SampleResult, StageText
from tests.support.samples import commit_run, ledger_entry, sample_result

SYSTEM = "You are a careful math tutor. End with '#### <number>'."
SPEC: dict[str, Any] = {
    "endpoints": [{"name": "replay", "model": "*", "base_url": "replay"},
                  {"name": "judge", "model": "judge-1", "base_url": "replay"}],
    "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 512},
    "stages": [{"name": "solve", "kind": "solve", "system": SYSTEM, "endpoint": "replay",
                "validators": [{"name": "arithmetic", "mode": "hard"},
                               {"name": "final_answer", "mode": "soft"}]},
               {"name": "grade", "kind": "judge", "system": "You grade.", "endpoint": "judge"}]}
SOLUTION = "She sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"


def _sample(prompt_id: str, index: int, generator: str | None,
            status: str = "accepted") -> SampleResult:
    calls = [ledger_entry("", prompt_id, index, endpoint="replay", model="*",
                          served_model=generator),
             ledger_entry("", prompt_id, index, stage="grade", endpoint="judge",
                          model="judge-1", served_model="judge-1")]
    return sample_result("", prompt_id, index, status,  # type: ignore[arg-type]
                         problem=f"Problem {prompt_id}", answer="72", early_exit=index == 0,
                         stages=[StageText(stage="solve", text=SOLUTION, final_answer="72"),
                                 StageText(stage="grade", text="Score: 5")], ledger=calls)


@pytest.fixture
def traced_run(pg_url: str) -> str:
    return commit_run(pg_url, [_sample("p1", 0, "text-davinci-002"), _sample("p1", 1, None),
                               _sample("p2", 0, "code-davinci-002"),
                               _sample("p2", 1, "x", "rejected")],
                      prefix="trace", spec=SPEC, spec_hash="hash-t", code_version="0.1.0+abc")


@pytest.mark.parametrize("name", ["chat.jsonl", "chat.parquet"])
def test_chat_rows_carry_the_jobs_system_message_and_their_origin(
        pg_url: str, traced_run: str, tmp_path: Path, load_dataset: Callable[..., Any],
        name: str) -> None:
    export_run(pg_url, run_id=traced_run, out_dir=tmp_path)
    data = load_dataset("json" if name.endswith(".jsonl") else "parquet", tmp_path / name)
    assert data.column_names == list(CHAT_COLUMNS)
    rows = list(data)
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert rows[0]["messages"][0]["content"] == SYSTEM  # the solve stage's, not the judge's
    assert rows[0]["messages"][2]["content"] == SOLUTION  # markup kept by default
    assert [(r["run_id"], r["prompt_id"], r["sample_index"], r["endpoint"], r["model"],
             r["early_exit"], r["answer"]) for r in rows] == [
        (traced_run, "p1", 0, "replay", "text-davinci-002", True, "72"),
        (traced_run, "p1", 1, "replay", "*", False, "72"),  # no model named: the one asked for
        (traced_run, "p2", 0, "replay", "code-davinci-002", True, "72")]


def test_an_explicit_system_prompt_wins(pg_url: str, traced_run: str, tmp_path: Path) -> None:
    export_run(pg_url, run_id=traced_run, out_dir=tmp_path, system_prompt="Be brief.",
               formats=["jsonl"])
    first = json.loads((tmp_path / "chat.jsonl").read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}


def test_manifest_describes_the_job_and_counts(pg_url: str, traced_run: str,
                                               tmp_path: Path) -> None:
    manifest = export_run(pg_url, run_id=traced_run, out_dir=tmp_path)
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["counts"] == {"accepted": 3, "rejected": 1, "failed": 0, "superseded": 0,
                                "exported": 3}
    assert saved["code_version"] == "0.1.0+abc"
    assert saved["sampling"] == SPEC["sampling"]
    assert saved["endpoints"] == [
        {"name": "replay", "model": "*",
         "models_served": ["code-davinci-002", "text-davinci-002", "x"]},
        {"name": "judge", "model": "judge-1", "models_served": ["judge-1"]}]
    assert [(s.name, s.kind, s.endpoint, s.validators) for s in manifest.stages] == [
        ("solve", "solve", ["replay"], ["arithmetic", "final_answer (soft)"]),
        ("grade", "judge", ["judge"], [])]
    assert saved["system_prompt"] == SYSTEM and saved["strip_calculator_markup"] is False


def test_calculator_markup_is_stripped_when_asked(pg_url: str, traced_run: str,
                                                  tmp_path: Path) -> None:
    manifest = export_run(pg_url, run_id=traced_run, out_dir=tmp_path,
                          strip_calculator_markup=True)
    expected = "She sold 48/2 = 24 clips.\nIn all 48+24 = 72.\n#### 72"
    assert set(pq.read_table(tmp_path / "plain.parquet").column("solution").to_pylist()) == \
        {expected}
    chat = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert {c["messages"][-1]["content"] for c in chat} == {expected}
    assert manifest.strip_calculator_markup is True


@pytest.mark.parametrize(("text", "expected"), [
    ("3 + 4 = <<3+4=7>>7", "3 + 4 = 7"),
    ("<<2*3=6>>6 and <<6-1=5>>5", "6 and 5"),
    ("x <<1\n+2>> y", "x <<1\n+2>> y"),  # an annotation never spans lines
    ("no markup, 3 < 4 > 2", "no markup, 3 < 4 > 2"),
])
def test_strip_calculator_markup(text: str, expected: str) -> None:
    assert strip_calculator_markup(text) == expected


def test_the_spec_option_is_off_by_default() -> None:
    assert Export().strip_calculator_markup is False
    assert Export.model_validate({"strip_calculator_markup": True}).strip_calculator_markup
