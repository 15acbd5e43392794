"""A stage's `max_false_rejection` and `calibration`: validated with the spec, recorded in its
snapshot, and checked by `foldem run` on the labelled file before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from foldem.cli.main import main
from foldem.core.errors import SpecError
from foldem.spec.job import load_job, parse_job
from tasks.bench.calibrate import check_budgets
from tests.support.jobs import job_dict, write_job
from tests.tasks.bench.test_calibrate import SAMPLE, write

LOOSE = {"name": "repetition"}  # the default 8 repeats: quiet on the sample
EAGER = {"name": "repetition", "params": {"max_ngram_repeats": 4}}  # fires on a clean trace


def job(**stage: Any) -> dict[str, Any]:
    data = job_dict("http://127.0.0.1:9", validators=[{"name": "arithmetic"},
                                                       stage.pop("validator", LOOSE)])
    data["stages"][0].update(stage)
    return data


@pytest.mark.parametrize("budget", [0, 1, -0.1, 1.5])
def test_the_budget_is_a_share(budget: float) -> None:
    with pytest.raises(SpecError) as err:
        parse_job(job(max_false_rejection=budget))
    assert "stages[0].max_false_rejection" in str(err.value)


def test_calibration_needs_a_budget_and_a_solve_stage() -> None:
    with pytest.raises(SpecError, match="calibration needs max_false_rejection"):
        parse_job(job(calibration="labels.jsonl"))
    data = job(max_false_rejection=0.01)
    data["stages"].insert(0, {"name": "pose", "kind": "problem", "template": "{seed}",
                              "max_false_rejection": 0.01, "calibration": "labels.jsonl"})
    with pytest.raises(SpecError, match="only a 'solve' stage"):
        parse_job(data)


def test_the_budget_alone_is_recorded() -> None:
    spec = parse_job(job(max_false_rejection=0.01))
    assert spec.snapshot()["stages"][0]["max_false_rejection"] == 0.01
    check_budgets(spec, "job.yaml")  # no calibration file: nothing to check
    # A spec without the new fields keeps its hash (runs started before still resume).
    assert parse_job(job()).spec_hash() == parse_job(job(max_false_rejection=None)).spec_hash()


def test_validators_within_budget_pass(tmp_path: Path) -> None:
    write(tmp_path / "labels.jsonl", SAMPLE)
    spec_file = write_job(tmp_path, job(max_false_rejection=0.3, calibration="labels.jsonl"))
    check_budgets(load_job(spec_file), str(spec_file))


def test_validators_over_budget_fail_the_run_before_it_starts(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path / "labels.jsonl", SAMPLE)
    spec_file = write_job(tmp_path, job(max_false_rejection=0.3, calibration="labels.jsonl",
                                        validator=EAGER))
    with pytest.raises(SpecError) as err:
        check_budgets(load_job(spec_file), str(spec_file))
    (field, message), = err.value.problems
    assert field == "stages[0].max_false_rejection"
    assert "'repetition' 33.3%" in message and "'arithmetic'" not in message
    assert f"foldem bench calibrate --traces labels.jsonl --stage-from {spec_file}" in message
    # The command refuses the job with that message (exit 2), before prompts or a database.
    assert main(["run", str(spec_file)]) == 2
    assert "'repetition' 33.3%" in capsys.readouterr().err


def test_a_missing_or_unlabelled_calibration_file_is_a_spec_error(tmp_path: Path) -> None:
    spec_file = write_job(tmp_path, job(max_false_rejection=0.3, calibration="labels.jsonl"))
    with pytest.raises(SpecError, match="stages\\[0\\].calibration: no such file"):
        check_budgets(load_job(spec_file), str(spec_file))
    write(tmp_path / "labels.jsonl", [{k: v for k, v in SAMPLE[0].items()
                                       if k != "final_answer_correct"}])
    with pytest.raises(SpecError, match="labels.jsonl:1: unlabelled trace"):
        check_budgets(load_job(spec_file), str(spec_file))
