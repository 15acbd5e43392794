"""`foldem bench validators` and tasks/bench/validator_bench.py on small made-up traces: firings are
counted by label, the set is judged by the policy as live, and the command writes its figures."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from foldem.cli.main import main
from foldem.core.settings import get_settings
from foldem.core.tokens import count_tokens
from tasks.bench.validator_bench import COMBINED, measure_report, run_bench, settings_for
from tasks.bench.validator_figures import BenchReport, BenchSettings, ValidatorSetting

SHOUTING = "tests.support.custom_validator_pkg.shouting.NoShouting"
PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
# Invented solutions: (id, steps, first_error_step, final_answer_correct).
TRACES: list[tuple[str, list[str], int | None, bool]] = [
    ("clean", ["Tom has 3 apples.", "He buys 4 more, so 3 + 4 = 7 apples.", "#### 7"], -1, True),
    ("wrong-sum", ["Tom has 3 apples.", "He buys 4 more, so 3 + 4 = 8 apples.", "#### 8"], 1,
     False),
    ("shouting", ["TOM HAS THREE APPLES AND FOUR MORE", "#### 7"], None, True),
    ("cut-off", ["Tom has 3 apples.", "He buys 4 more, so he has"], -1, False),
]


def write_traces(path: Path) -> Path:
    path.write_text("".join(json.dumps({
        "id": tid, "dataset": "made-up", "generator": "hand", "problem": PROBLEM,
        "reference_answer": "7", "steps": steps, "separator": "\n",
        "first_error_step": error, "final_answer_correct": correct}) + "\n"
        for tid, steps, error, correct in TRACES))
    return path


@pytest.fixture
def traces_file(tmp_path: Path) -> Path:
    return write_traces(tmp_path / "made_up.jsonl")


@pytest.fixture
def report(traces_file: Path) -> BenchReport:
    return measure_report(["arithmetic", "final_answer", SHOUTING], [traces_file])


def test_each_validator_is_counted_by_label(report: BenchReport) -> None:
    arithmetic = report.per_validator["arithmetic"]
    assert (arithmetic.traces, arithmetic.fired, arithmetic.clean, arithmetic.fired_clean) == (
        4, 1, 2, 0)
    assert (arithmetic.wrong_step, arithmetic.fired_wrong_step) == (1, 1)
    assert arithmetic.fired_before_error == 0  # it fired at the labelled step, not before
    assert (arithmetic.wrong_answer, arithmetic.fired_wrong_answer) == (2, 1)
    assert arithmetic.reasons == {"arithmetic_error": 1}
    assert arithmetic.median_fraction_at_fire is not None
    assert 0 < arithmetic.median_fraction_at_fire < 1  # fired at step 1, before the answer
    final = report.per_validator["final_answer"]
    assert (final.fired_clean, final.false_rejection_rate) == (1, 0.5)  # the cut-off trace
    assert final.reasons == {"no_final_answer": 1} and final.median_fraction_at_fire == 1.0
    shouting = report.per_validator["no_shouting"]
    assert (shouting.fired, shouting.fired_correct_answer) == (1, 1)


def test_the_set_is_judged_as_the_policy_would(report: BenchReport) -> None:
    combined = report.combined
    assert combined.validator == COMBINED and combined.scope == "all"
    assert (combined.traces, combined.fired, combined.fired_clean) == (4, 3, 1)
    assert report.false_rejection_rate == combined.false_rejection_rate == 0.5
    assert sum(combined.reasons.values()) == 3
    rows = {(r.validator, r.scope) for r in report.rows}
    assert {(COMBINED, "made_up.jsonl"), (COMBINED, "all"), ("arithmetic", "all")} <= rows


def test_throughput_and_slowest_checkpoint_are_measured(report: BenchReport) -> None:
    assert report.tokens_per_second is not None and report.tokens_per_second > 0
    assert report.seconds > 0 and report.tokens_streamed > 0
    assert report.slowest_checkpoint.trace_id in {tid for tid, *_ in TRACES}
    assert report.slowest_checkpoint_ms == report.slowest_checkpoint.ms >= 0
    for fig in report.per_validator.values():
        assert fig.tokens_fed > 0 and fig.errors == 0
    totals = [count_tokens("\n".join(steps)) for _, steps, *_ in TRACES]
    (file,) = report.per_file
    assert (file.traces, file.tokens) == (4, sum(totals))
    assert file.expected_tokens == int(statistics.median(totals))
    assert report.machine.load_average_after and report.unit == "o200k_tokens"


def test_a_raising_validator_is_counted_as_errors_not_fatal(traces_file: Path) -> None:
    report = measure_report(["tests.support.custom_validator_pkg.shouting.RaisesInFeed"],
                            [traces_file])
    fig = report.per_validator["raises_in_feed"]
    assert fig.errors > 0 and fig.fired == 0 and report.combined.fired == 0


def test_soft_mode_rejects_through_the_utility(traces_file: Path) -> None:
    settings = BenchSettings(validators=[ValidatorSetting(name=SHOUTING, mode="soft")])
    report = run_bench(settings, [traces_file])
    assert report.per_validator["no_shouting"].mode == "soft"
    assert report.combined.fired == 1  # score 0 drops the utility below the threshold


def test_the_same_traces_are_rejected_in_every_checkpoint_mode(traces_file: Path) -> None:
    names = ["arithmetic", "final_answer", SHOUTING]
    every_step = measure_report(names, [traces_file])
    paper = measure_report(names, [traces_file], every_step=False, fractions=[0.5])
    for name in every_step.per_validator:
        assert paper.per_validator[name].fired == every_step.per_validator[name].fired
    assert paper.settings.fractions == [0.5] and not paper.settings.every_step


def test_default_modes_and_params_come_from_the_default_set() -> None:
    settings = settings_for(["arithmetic", SHOUTING], {SHOUTING: {"min_letters": 3}})
    modes = {v.name: (v.mode, v.params) for v in settings.validators}
    assert modes == {"arithmetic": ("hard", {}), SHOUTING: ("hard", {"min_letters": 3})}


def run_cli(*args: str) -> int:
    return main(["bench", "validators", *args])


def test_command_prints_a_table_and_writes_json(traces_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures" / "bench.json"
    assert run_cli("--traces", str(traces_file), "--json", str(out),
                   "--validators", "arithmetic,final_answer") == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "arithmetic" in printed and str(out) in printed
    data: dict[str, Any] = json.loads(out.read_text())
    for key in ("tokens_per_second", "slowest_checkpoint_ms", "per_validator", "per_file",
                "false_rejection_rate", "combined", "machine", "settings"):
        assert key in data
    assert set(data["per_validator"]) == {"arithmetic", "final_answer"}
    figures = data["per_validator"]["arithmetic"]
    for key in ("fired_clean", "fired_correct_answer", "fired_wrong_step", "fired_wrong_answer",
                "median_fraction_at_fire", "tokens_per_second", "seconds"):
        assert key in figures


def test_command_reads_data_uris(traces_file: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = traces_file.parent / "data"
    (data_dir / "traces").mkdir(parents=True)
    write_traces(data_dir / "traces" / "made_up.jsonl")
    monkeypatch.setenv("FOLDEM_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    try:
        assert run_cli("--traces", "data://traces/made_up.jsonl",
                       "--no-every-step", "--fractions", "0.5") == 0
    finally:
        monkeypatch.delenv("FOLDEM_DATA_DIR")
        get_settings.cache_clear()
    assert "fractions 0.5" in capsys.readouterr().out


def test_command_runs_named_validators_in_soft_mode(traces_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "soft.json"
    assert run_cli("--traces", str(traces_file), "--json", str(out),
                   "--validators", f"arithmetic,{SHOUTING}", "--soft", SHOUTING) == 0
    modes = {v["name"]: v["mode"] for v in json.loads(out.read_text())["settings"]["validators"]}
    assert modes == {"arithmetic": "hard", SHOUTING: "soft"}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--validators", "no_such_validator"], 2, "unknown validator"),
    (["--soft", "magnitude"], 2, "--soft names validators not measured"),
    (["--no-every-step"], 2, "--no-every-step needs --fractions"),
    (["--json", "/proc/no/such/dir/out.json"], 2, "cannot write"),
])
def test_command_mistakes_end_with_a_message(traces_file: Path, args: list[str], code: int,
                                             message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--traces", str(traces_file), *args) == code
    assert message in capsys.readouterr().err


def test_missing_trace_file_is_a_data_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--traces", str(tmp_path / "nope.jsonl")) == 3
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--fractions", "1.5"], ["--threshold", "2"],
                                  ["--tokens-per-push", "0"], ["--validators", ","]])
def test_bad_arguments_are_refused_by_the_parser(traces_file: Path, args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli("--traces", str(traces_file), *args)
    assert exit_.value.code == 2
