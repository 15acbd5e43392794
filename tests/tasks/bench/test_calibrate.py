"""`foldem bench calibrate` and tasks/bench/calibrate.py: false rejections, recall and precision
per validator on labelled traces, the tunable value and the stage threshold that fit a budget;
made-up traces written here, and one real shared file read from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from foldem.cli.main import main
from foldem.core.errors import InputFormatError
from tasks.bench.calibrate import calibrate, check_labels, stage_settings
from tasks.bench.calibrate_report import format_calibration
from tasks.bench.validator_figures import BenchSettings, ValidatorSetting
from tests.support.tracedata import TRACE_FILES, require_shared
from validators.registry import build

PROBLEM = "Ann has 2 boxes with 3 pens each. How many pens does she have?"
# Five steps restating one 10-word phrase with a changing number: repetition fires at 4 repeats
# of a phrase, not at 6 or more.
RESTATING = [f"Then we count one more pen from the box on the table and get {i} pens."
             for i in range(1, 6)]


def trace(tid: str, steps: list[str], error: int | None, correct: bool) -> dict[str, Any]:
    return {"id": tid, "dataset": "made-up", "generator": "hand", "problem": PROBLEM,
            "reference_answer": None, "steps": steps, "separator": "\n",
            "first_error_step": error, "final_answer_correct": correct}


SAMPLE = [
    trace("restating", [*RESTATING, "#### 6"], -1, True),
    trace("big", ["Ann has 2 boxes of 3 pens, 2 * 3 = 6 pens.",
                  "In cents that is 6000000 cents, so 6 pens.", "#### 6"], -1, True),
    trace("clean", ["Ann has 2 boxes of 3 pens.", "So 2 * 3 = 6 pens.", "#### 6"], -1, True),
    trace("wrong", ["Ann has 2 boxes of 3 pens.", "So 2 * 3 = 5 pens.", "#### 5"], 1, False),
]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def settings(*validators: ValidatorSetting, threshold: float = 0.5) -> BenchSettings:
    return BenchSettings(validators=list(validators), threshold=threshold)


def test_rates_per_validator_and_stage(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", SAMPLE)
    report = calibrate(settings(ValidatorSetting(name="arithmetic"),
                                ValidatorSetting(name="repetition",
                                                 params={"max_ngram_repeats": 4})), path, 0.3)
    arithmetic, repetition = report.validators
    a = arithmetic.rates
    assert (a.clean, a.fired_clean, a.correct_answer, a.fired_correct_answer) == (3, 0, 3, 0)
    assert (a.wrong_step, a.fired_wrong_step, a.precision) == (1, 1, 1.0)
    r = repetition.rates  # fires on the restating trace: a false rejection of 1 in 3
    assert (r.fired_clean, r.fired_correct_answer, r.false_rejection_rate) == (1, 1, 0.3333)
    assert r.precision == 0.0 and not repetition.within_budget
    assert report.over_budget == ["repetition", "stage"]
    assert report.stage.rates.fired == 2
    assert "repetition" in format_calibration(report)


def test_the_most_sensitive_value_within_the_budget(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", SAMPLE)
    report = calibrate(settings(ValidatorSetting(name="repetition")), path, 0.3)
    fit = report.validators[0].tunable
    assert fit is not None and fit.param == "max_ngram_repeats" and fit.configured == 8
    by_value = {v: r.false_rejection_rate for v, r in fit.candidates}
    assert by_value[4] == 0.3333 and by_value[6] == 0.0
    assert [v for v, _ in fit.candidates] == list(build("repetition", {}).tunable.values)  # type: ignore[union-attr]
    assert fit.fitted == 6
    # A budget the restating trace fits in: the most sensitive value of the ladder.
    assert calibrate(settings(ValidatorSetting(name="repetition")), path,
                     0.5).validators[0].tunable.fitted == 4  # type: ignore[union-attr]


def test_the_stage_threshold_fits_the_soft_utility(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", SAMPLE)
    soft = ValidatorSetting(name="magnitude", mode="soft", params={"score_on_fault": 0.6})
    report = calibrate(settings(soft), path, 0.3)
    # The big number leaves a clean trace at utility 0.6: a threshold above it rejects 1 of 3.
    assert report.threshold.fitted == 0.6
    assert calibrate(settings(soft), path, 0.5).threshold.fitted == 1.0
    hard_only = calibrate(settings(ValidatorSetting(name="arithmetic")), path, 0.3)
    assert hard_only.threshold.fitted is None and "no soft" in hard_only.threshold.note


@pytest.mark.parametrize(("line", "expected"), [
    ({k: v for k, v in SAMPLE[0].items() if k != "first_error_step"}, "no first_error_step"),
    ({k: v for k, v in SAMPLE[0].items() if k not in ("first_error_step",
                                                       "final_answer_correct")},
     "no final_answer_correct and no first_error_step"),
])
def test_an_unlabelled_line_is_named(tmp_path: Path, line: dict[str, Any], expected: str) -> None:
    path = write(tmp_path / "s.jsonl", [SAMPLE[2], line])
    with pytest.raises(InputFormatError) as err:
        check_labels(path)
    assert err.value.line == 2 and expected in err.value.reason


def test_a_malformed_file_names_the_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(SAMPLE[2]) + "\n" + json.dumps({**SAMPLE[3], "steps": 5}) + "\n")
    assert main(["bench", "calibrate", "--traces", str(path)]) == 3
    err = capsys.readouterr().err
    assert "s.jsonl:2" in err and "steps" in err
    path.write_text("{not json\n")
    assert main(["bench", "calibrate", "--traces", str(path)]) == 3
    assert "s.jsonl:1" in capsys.readouterr().err


def test_a_sample_with_nothing_good_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path / "s.jsonl", [SAMPLE[3]])
    assert main(["bench", "calibrate", "--traces", str(path)]) != 0
    assert "no trace has a correct label" in capsys.readouterr().err


def test_the_command_with_a_job_stage_writes_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.support.jobs import job_dict, write_job

    data = job_dict("http://127.0.0.1:9", validators=[
        {"name": "arithmetic"}, {"name": "repetition", "params": {"max_ngram_repeats": 4}}])
    job = write_job(tmp_path, data)
    path = write(tmp_path / "s.jsonl", SAMPLE)
    out = tmp_path / "cal.json"
    assert main(["bench", "calibrate", "--traces", str(path), "--stage-from", str(job),
                 "--budget", "0.3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "over budget: repetition, stage" in text and "max_ngram_repeats=6 (now 4)" in text
    document = json.loads(out.read_text())
    assert document["budget"] == 0.3 and document["over_budget"] == ["repetition", "stage"]
    assert main(["bench", "calibrate", "--traces", str(path), "--stage-from", str(job),
                 "--stage", "nope"]) != 0
    with pytest.raises(SystemExit):  # argparse refuses a budget that is no share
        main(["bench", "calibrate", "--traces", str(path), "--budget", "1.5"])


def test_a_real_shared_file() -> None:
    require_shared()
    path = TRACE_FILES["pb_gsm8k"]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    report = calibrate(*stage_settings(None)[:1], path, 0.01)
    stage = report.stage.rates
    assert stage.traces == len(rows)
    assert stage.clean == sum(r["first_error_step"] == -1 for r in rows)
    assert stage.correct_answer == sum(r["final_answer_correct"] for r in rows)
    # The default set keeps within 1% on this file, and every validator row adds up.
    assert report.over_budget == [] and stage.false_rejection_rate is not None
    for fit in report.validators:
        r = fit.rates
        assert r.fired_clean <= r.clean and r.fired_wrong <= r.fired <= r.traces
    repetition = next(f for f in report.validators if f.validator == "repetition")
    assert repetition.tunable is not None and repetition.tunable.fitted is not None
    assert report.seconds < 60


def test_every_declared_tunable_is_a_numeric_param_with_valid_values() -> None:
    from validators.registry import available

    declared = {name: cls.tunable for name, cls in available().items() if cls.tunable}
    assert {"repetition", "magnitude", "length_budget"} <= set(declared)
    for name, tunable in declared.items():
        assert tunable is not None and len(tunable.values) >= 2
        field = available()[name].Params.model_fields[tunable.param]
        assert isinstance(field.default, int | float) and not isinstance(field.default, bool)
        for value in tunable.values:  # each candidate is a valid setting of the param
            assert getattr(build(name, {tunable.param: value}).params, tunable.param) == value
