"""`foldem bench validators --leave-one-out`: per file, thresholds tuned on the other files and
false rejections (process and outcome) measured on the held-out one; made-up traces."""

from __future__ import annotations

import json
from pathlib import Path

from foldem.cli.main import main
from tasks.bench.validator_bench import settings_for
from tasks.bench.validator_loo import TUNABLE, format_held_out, leave_one_out
from tests.tasks.bench.test_validator_bench import write_traces
from validators.defaults import DEFAULT_SOLVE_VALIDATORS

LOOP = "For the next glass Kylar pays 5 * 1/2 = 2.5 dollars and then he looks again."


def _looping(path: Path) -> Path:
    trace = {"id": "loop", "dataset": "made-up", "generator": "hand", "problem": "How much?",
             "reference_answer": "64", "steps": [LOOP] * 2 + ["#### 64"], "separator": "\n",
             "first_error_step": -1, "final_answer_correct": True}
    path.write_text(json.dumps(trace) + "\n")
    return path


def test_every_file_is_measured_held_out(tmp_path: Path) -> None:
    files = [write_traces(tmp_path / "a.jsonl"), write_traces(tmp_path / "b.jsonl"),
             _looping(tmp_path / "c.jsonl")]
    names = [n for n, _, _ in DEFAULT_SOLVE_VALIDATORS]
    rows = leave_one_out(settings_for(names), files)
    assert [r.file for r in rows] == ["a.jsonl", "b.jsonl", "c.jsonl"]
    a = rows[0]
    # In a.jsonl: 2 clean traces (one cut off: final_answer rejects it), 2 correct answers.
    assert (a.clean, a.process_false_rejections) == (2, 1)
    assert (a.correct_answer, a.outcome_false_rejections) == (2, 0)
    assert a.wrong_step == 1 and a.recall_wrong_step == 1.0
    for r in rows:  # each tunable was chosen among its candidates, on the other files
        for name, (param, values) in TUNABLE.items():
            assert r.tuned[name][param] in values
    assert "a.jsonl" in format_held_out(rows)


def test_the_command_prints_and_writes_the_table(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    files = [write_traces(tmp_path / "a.jsonl"), write_traces(tmp_path / "b.jsonl")]
    out = tmp_path / "bench.json"
    assert main(["bench", "validators", "--traces", *map(str, files), "--leave-one-out",
                 "--json", str(out)]) == 0
    assert "leave one file out" in capsys.readouterr().out
    held_out = json.loads(out.read_text())["leave_one_out"]
    assert [r["file"] for r in held_out] == ["a.jsonl", "b.jsonl"]
    assert {"process_false_rejection_rate", "outcome_false_rejection_rate"} <= set(held_out[0])
