"""tasks/outputs/export.py on real Postgres: chat and plain form as JSONL and Parquet, loaded
back with Hugging Face `datasets` (offline, local files only), manifest checksums, atomic
writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from foldem import __version__
from foldem.core.errors import ConfigError, DatabaseError
from tasks.outputs import export, sinks
from tasks.outputs.export import export_run, solution_text
from tasks.outputs.manifest import CHAT_COLUMNS, PLAIN_COLUMNS, ExportManifest, file_sha256
from tasks.records.models import SampleResult, SampleStatus, StageText
from tests.support.samples import commit_run, sample_result

SPEC = {"stages": [{"name": "write", "kind": "problem"}, {"name": "solve", "kind": "solve"},
                   {"name": "judge", "kind": "judge"}]}
HOSTILE = 'He said "7\u2028apples"\nthen\\n 🦊 {x} \u2029 end'
FILES = ["chat.jsonl", "chat.parquet", "plain.jsonl", "plain.parquet"]


def _result(run_id: str, prompt_id: str, index: int, status: SampleStatus = "accepted",
            problem: str | None = None, reference: str | None = "7") -> SampleResult:
    problem = problem or f"Problem {prompt_id}: what is 3 + 4?"
    return sample_result(
        run_id, prompt_id, index, status, problem=problem, reference_answer=reference,
        answer="7", stages=[StageText(stage="write", text=problem),
                            StageText(stage="solve", text=f"3 + 4 = 7 (sample {index})\n#### 7",
                                      final_answer="7"),
                            StageText(stage="judge", text="Score: 5")])


def _save_run(url: str, results: list[SampleResult]) -> str:
    return commit_run(url, results, prefix="export", spec=SPEC, spec_hash="spec-hash-1",
                      code_version="0.1.0+test", samples_expected=9)


@pytest.fixture
def mixed_run(pg_url: str) -> str:
    """Five accepted samples (one with a hostile problem, one without a reference answer)
    among a rejected and a failed one."""
    return _save_run(pg_url, [
        _result("", "p2", 1), _result("", "p1", 0, problem=HOSTILE), _result("", "p2", 0),
        _result("", "p1", 1, "rejected"), _result("", "p3", 0, reference=None),
        _result("", "p3", 1, "failed"), _result("", "p4", 0),
    ])


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "export"


def test_export_loads_with_datasets(pg_url: str, mixed_run: str, out_dir: Path,
                                    load_dataset: Callable[..., Any]) -> None:
    manifest = export_run(pg_url, run_id=mixed_run, out_dir=out_dir,
                          system_prompt="You are a careful tutor.")
    for name in FILES:
        data = load_dataset("json" if name.endswith(".jsonl") else "parquet", out_dir / name)
        assert data.num_rows == 5, name
        if name.startswith("chat"):
            assert data.column_names == list(CHAT_COLUMNS)
            first = data[0]["messages"]
            assert [m["role"] for m in first] == ["system", "user", "assistant"]
            assert first[0]["content"] == "You are a careful tutor."
            assert first[1]["content"] == HOSTILE
            assert first[2]["content"] == "3 + 4 = 7 (sample 0)\n#### 7"  # the solve stage
        else:
            assert data.column_names == list(PLAIN_COLUMNS)
            assert [(r["prompt_id"], r["sample_index"]) for r in data] == [
                ("p1", 0), ("p2", 0), ("p2", 1), ("p3", 0), ("p4", 0)]
            assert data[0]["problem"] == HOSTILE and data[0]["answer"] == "7"
            assert data[3]["reference_answer"] is None
            assert set(data["run_id"]) == {mixed_run}
    assert manifest.rows == 5
    assert manifest.samples_by_status == {"accepted": 5, "rejected": 1, "failed": 1}


def test_jsonl_has_one_line_per_sample(pg_url: str, mixed_run: str, out_dir: Path) -> None:
    export_run(pg_url, run_id=mixed_run, out_dir=out_dir, formats=["jsonl"])
    raw = (out_dir / "plain.jsonl").read_bytes()
    assert raw.count(b"\n") == 5 and "\u2028".encode() not in raw
    assert json.loads(raw.splitlines()[0])["problem"] == HOSTILE
    chat = [json.loads(line) for line in (out_dir / "chat.jsonl").read_text().splitlines()]
    assert [m["role"] for m in chat[0]["messages"]] == ["user", "assistant"]
    assert not (out_dir / "chat.parquet").exists()


def test_manifest_checksums_match_the_files(pg_url: str, mixed_run: str,
                                            out_dir: Path) -> None:
    returned = export_run(pg_url, run_id=mixed_run, out_dir=out_dir)
    manifest = ExportManifest.model_validate_json((out_dir / "manifest.json").read_text())
    assert manifest == returned
    assert (manifest.run_id, manifest.job_name, manifest.spec_hash, manifest.code_version,
            manifest.foldem_version) == (mixed_run, "export-test", "spec-hash-1", "0.1.0+test",
                                         __version__)
    assert [f.name for f in manifest.files] == ["chat.jsonl", "chat.parquet", "plain.jsonl",
                                                "plain.parquet"]
    for f in manifest.files:
        path = out_dir / f.name
        assert (f.sha256, f.bytes, f.rows) == (file_sha256(path), path.stat().st_size, 5)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*FILES, "manifest.json"])


def test_empty_run_exports_empty_files(pg_url: str, out_dir: Path) -> None:
    run_id = _save_run(pg_url, [_result("", "p1", 0, "rejected")])
    manifest = export_run(pg_url, run_id=run_id, out_dir=out_dir)
    assert manifest.rows == 0 and all(f.rows == 0 for f in manifest.files)
    assert (out_dir / "chat.jsonl").read_bytes() == b""
    # `datasets` 5.2 refuses zero-row files of either format; pyarrow reads the schema.
    table = pq.read_table(out_dir / "plain.parquet")
    assert (table.num_rows, table.column_names) == (0, list(PLAIN_COLUMNS))
    assert pq.read_table(out_dir / "chat.parquet").column_names == list(CHAT_COLUMNS)
    for f in manifest.files:
        assert f.sha256 == file_sha256(out_dir / f.name)


def test_large_exports_stream_in_batches_and_row_groups(
        pg_url: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "FETCH_ROWS", 7)
    monkeypatch.setattr(sinks, "ROW_GROUP_ROWS", 20)
    run_id = _save_run(pg_url, [_result("", f"p{i:03d}", 0) for i in range(95)])
    export_run(pg_url, run_id=run_id, out_dir=out_dir)
    parquet = pq.ParquetFile(out_dir / "plain.parquet")
    assert parquet.metadata.num_rows == 95 and parquet.metadata.num_row_groups == 5
    ids = parquet.read().column("prompt_id").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == 95
    lines = (out_dir / "plain.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt_id"] for line in lines] == ids


def test_a_failed_export_leaves_the_previous_one(pg_url: str, mixed_run: str, out_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    export_run(pg_url, run_id=mixed_run, out_dir=out_dir)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    def broken(*_: Any) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "solution_text", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_run(pg_url, run_id=mixed_run, out_dir=out_dir)
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


@pytest.mark.parametrize("formats", [[], ["csv"], ["jsonl", "xml"]])
def test_unknown_formats_are_a_config_error(pg_url: str, out_dir: Path,
                                            formats: list[str]) -> None:
    with pytest.raises(ConfigError, match="export formats"):
        export_run(pg_url, run_id="any", out_dir=out_dir, formats=formats)


def test_unknown_run_is_a_database_error(pg_url: str, out_dir: Path) -> None:
    with pytest.raises(DatabaseError, match="not in the database"):
        export_run(pg_url, run_id="no-such-run", out_dir=out_dir)


def test_out_dir_that_is_a_file_is_a_config_error(pg_url: str, mixed_run: str,
                                                  out_dir: Path) -> None:
    out_dir.parent.mkdir(exist_ok=True)
    out_dir.write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        export_run(pg_url, run_id=mixed_run, out_dir=out_dir)


@pytest.mark.parametrize(("stage_texts", "solve", "expected"), [
    ([{"stage": "solve", "text": "A"}, {"stage": "judge", "text": "Score: 5"}],
     frozenset({"solve"}), "A"),
    ([{"stage": "s1", "text": "A"}, {"stage": "s2", "text": "B"}], frozenset({"s1", "s2"}), "B"),
    ([{"stage": "solve", "text": "A"}, {"stage": "judge", "text": "J"}], frozenset(), "J"),
    ([{"stage": "judge", "text": "J"}], frozenset({"solve"}), ""),
    ([], frozenset({"solve"}), ""),
    (None, frozenset(), ""),
])
def test_solution_is_the_last_solve_stage(stage_texts: Any, solve: frozenset[str],
                                          expected: str) -> None:
    assert solution_text(stage_texts, solve) == expected
