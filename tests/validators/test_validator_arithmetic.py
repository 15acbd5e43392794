"""The arithmetic validator: wrong equations fire, everything ambiguous is left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foldem.core.errors import ValidatorLoadError
from tasks.bench.validator_bench import measure
from tests.support.tracedata import fragment
from validators.base import Checkpoint, ProblemContext, Step
from validators.builtin.arithmetic import ArithmeticParams, EquationChecker
from validators.registry import build

CHECKER = EquationChecker(ArithmeticParams())
CTX = ProblemContext(problem="Tom has 3 apples and buys 4 more. How many apples does he have?")


# Real steps with a wrong equation: (trace id, step, text the fault detail must quote).
@pytest.mark.parametrize(("trace_id", "step", "quoted"), [
    ("processbench-gsm8k-2", 1, "2/5 * 4000 = 800"),
    ("processbench-gsm8k-77", 3, "= 129,250"),  # thousands separators
    ("processbench-gsm8k-141", 2, r"\frac{40}{5} = 3"),
    ("processbench-math-97", 12, "2^3 = 7"),
    ("processbench-math-54", 0, "355"),  # \div inside $$ $$, floor is 59 not 58
    ("processbench-math-1", 12, r"= \frac{92}{585}"),  # a fraction result must match exactly
    ("gsm8k-gpt3-580-175b_verification", 2, "<<520*(1+0.18)=500>>"),  # calculator annotation
    ("gsm8k-gpt3-205-175b_verification", 0, ">>289"),  # text after >> differs from the result
])
def test_real_wrong_equations_fire(trace_id: str, step: int, quoted: str) -> None:
    mismatch = CHECKER.check(fragment(trace_id, step))
    assert mismatch is not None
    assert quoted in mismatch.describe()


# Real steps whose equations hold, or are not plain arithmetic, must not fire.
@pytest.mark.parametrize(("trace_id", "step"), [
    ("processbench-gsm8k-291", 1),  # prose 7 + 10 = 17
    ("processbench-gsm8k-391", 1),  # \(4 \times 5 = 20\)
    ("processbench-gsm8k-391", 2),  # \[ \frac{3}{5} \times 30 = 18 \]
    ("processbench-math-557", 1),
    ("processbench-math-557", 2),  # \text{Average} = \frac{20}{4} = 5
    ("gsm8k-gpt3-0-6b_finetuning", 0),  # annotation and prose agree
    ("gsm8k-gpt3-265-6b_finetuning", 0),  # `17 500`: a space as thousands separator
    ("gsm8k-gpt3-393-6b_verification", 0),  # `4 hours * 1/2`: the unit splits the expression
    ("gsm8k-gpt3-7-175b_finetuning", 2),  # `0.5 * 40% = 20`: percent carried as a unit
    ("processbench-math-60", 0),  # `choose (4 - 1) = 9 choose 3`
    ("processbench-math-606", 1),  # algebra: `3a - 21 + 7a = 5`
    ("processbench-math-606", 2),
    ("processbench-gsm8k-68", 3),  # `Total\ Cost = 5*20`
    ("processbench-gsm8k-68", 5),
])
def test_real_correct_or_ambiguous_steps_pass(trace_id: str, step: int) -> None:
    assert CHECKER.check(fragment(trace_id, step)) is None


# A real step made wrong by changing one stated result: the equation there is really judged.
@pytest.mark.parametrize(("trace_id", "step", "right", "wrong"), [
    ("processbench-gsm8k-291", 1, "7 + 10 = 17", "7 + 10 = 18"),
    ("processbench-gsm8k-391", 2, r"\times 30 = 18", r"\times 30 = 19"),
    ("processbench-math-557", 1, "= 20", "= 21"),
    ("gsm8k-gpt3-0-6b_finetuning", 0, "<<16-3=13>>", "<<16-3=14>>"),
    ("gsm8k-gpt3-0-6b_finetuning", 0, ">>13 ducks", ">>12 ducks"),
])
def test_real_steps_mutated_to_be_wrong_fire(trace_id: str, step: int, right: str,
                                             wrong: str) -> None:
    text = fragment(trace_id, step)
    assert right in text
    assert CHECKER.check(text.replace(right, wrong)) is not None


@pytest.mark.parametrize("text", [
    "So she has 16 - 3 = 14 eggs left.",
    "The total is 3 × 4 = 13.",
    r"We get \(\frac{1}{3} \times 18 = 7\) cats.",
    r"So $\frac{1}{3} \cdot 18 = 7$.",
    "$5 + $3 = $9",
    "He pays 1,200 + 300 = 1,600 dollars.",
    "Then 2 + 3 = 5 + 1 = 7.",
    "She earns 48/2 = <<48/2=24>>25 dollars.",
    "She earns <<48/2=25>>25 dollars.",
    "So 10/4 ≈ 3.1 hours.",
    "So 10/4 = approximately 3.1 hours.",
    "**16 - 3 = 14**",
    "Total:** 16 - 3 = 14",
    "12 ÷ 4 = 4",
    "(3 + 4) * 2 = 15",
    "2^10 = 1000",
    "0.25 × 80 = 21",
    "5 x 3 = 16",
    "10 − 4 = 5",
    "-3 + 5 = 3",
    "The answer: -3 + 5 = 3",
    r"\[ 2 + 4 + 6 + 8 = 21 \]",
    r"\left( 3 + 4 \right) \times 2 = 15",
    "1/2 * 7 = 3/4",
    "5 - 8 = 3",
    "so 3 + 4 = 7 and 7 × 2 = 15",
    "the sum of 4 + 3 = 8",
    "`3 + 4 = 8`",
])
def test_made_up_wrong_equations_fire(text: str) -> None:
    assert CHECKER.check(text) is not None, text


@pytest.mark.parametrize("text", [
    "So she has 16 - 3 = 13 eggs left.",
    "x = 3 + 4 = 7",
    "2x + 3 = 7",
    "3x = 15",
    "f(2) = 10",
    "a_1 + 3 = 7",
    "He had 10 apples - 3 + 5 = 7 left",
    "We start at 3:30 + 2 = 5:30",
    "194 ÷ 11 = 17 with 7 left over",
    "29 people / 10 per car = 3 cars, so 29/10 = 3 cars",
    "10/3 = 3.33",
    "2/3 = 0.66",
    "1,000 × 1,500 = 1.5 million",
    "3 × 4 = 2 (mod 5)",
    "In base 8, 7 + 1 = 10.",
    "5! = 120",
    "(6 + 4 - 1) choose (4 - 1) = 9 choose 3 = 84",
    "Half of 10 + 4 = 7",
    "1/2 of 10 + 4 = 9",
    "a third of 9 + 3 = 6",
    "twice 5 + 3 = 13",
    "log 10 × 10 = 2",
    "the sum of 2 and 3 + 4 = 9",
    "3 times 4 + 2 = 14",
    "`3 + 4 = 7`",
    "The sum of 4 + 3 = 7",
    "16 - 3 = 13 - 4 = 9",  # a running total written as a chain
    "4 × 3 = 12/2 = 6",
    "12 / 2 = 6, 6 x 3 = 18",
    "2 1/2 × 4 = 10",  # a mixed number
    "She needs 7.5 - 2.5 = 5 hours",
    "$2.50 × 4 = $10.00",
    "1/3 ≈ 0.33",
    "22/7 ≈ 3.14",
    "0.33 × 300 = 100",
    "the ratio 6:2 = 3:1",
    "2 + 2 ＝ 5",  # fullwidth equals is not an equals sign
    "١ + ١ = ٣",
    "３ + ４ = ８",
    "3² = 10",
    "5 + 3 = 8 – 2 of them are red",
    "1 + 2 + ... + 10 = 56",
    r"x = \frac{100}{4} = 25",
    "2 × 3 = 6 × 10^3",
    "10 - 2 = 5 + 4",  # neither side is a plain number: not judged
    "3 × 40 = 5!",
    "10 + 5 = 3 pm",
    "3/12 × 100 = 25%",
    "25 / 100 = 25%",
    "0.5 * 40% = 20",
    "5 - 8 = -3",
    "1 + 1 = 2 = two",
    "<<2*3=6>>6 and 4 * 5 = 20",
    "<<5-8=-3>>3 fewer",  # the size of a difference
    "2 == 3",
    "a <= 5 + 3 = 8",
])
def test_made_up_correct_or_ambiguous_text_passes(text: str) -> None:
    assert CHECKER.check(text) is None, text


def test_detail_names_the_equation_and_exact_value() -> None:
    mismatch = CHECKER.check("so 48/2 = 25 clips")
    assert mismatch is not None
    assert mismatch.describe() == "48/2 = 25 (exact: 24)"
    fractional = CHECKER.check("so 10/4 = 3 hours and 1/3 = 0.5")
    assert fractional is not None
    assert "(exact: 1/3 ≈ 0.333333)" in fractional.describe()


def test_session_judges_only_new_steps_and_reports_the_step() -> None:
    session = build("arithmetic").open(CTX)
    ok = session.feed(Checkpoint(0, (Step(0, "He has 3 + 4 = 7 apples."),)))
    assert ok.ok
    # A wrong equation in the tail (cut anywhere) is not judged until its step completes.
    partial = session.feed(Checkpoint(1, (), tail="Then 7 * 2 = 15 and"))
    assert partial.ok
    bad = session.feed(Checkpoint(2, (Step(1, "Then 7 * 2 = 14."), Step(2, "So 14 - 1 = 12."))))
    assert not bad.ok
    assert (bad.validator, bad.reason, bad.step_index, bad.score) == (
        "arithmetic", "arithmetic_error", 2, 0.0)
    assert "14 - 1 = 12" in bad.detail


def test_annotation_text_check_can_be_turned_off() -> None:
    text = "She earns <<48/2=24>>25 dollars."
    assert EquationChecker(ArithmeticParams(check_annotation_text=False)).check(text) is None
    assert EquationChecker(ArithmeticParams(check_annotations=False)).check(
        "She earns <<48/2=25>>25 dollars.") is None


def test_approx_tolerance_is_a_parameter() -> None:
    assert CHECKER.check("100/3 ≈ 31") is not None
    assert EquationChecker(ArithmeticParams(approx_tolerance=0.05)).check("100/3 ≈ 31") is None


@pytest.mark.parametrize("params", [
    {"unknown": 1},
    {"rel_tolerance": -1},
    {"max_equations_per_step": 0},
])
def test_bad_params_are_a_load_error(params: dict[str, object]) -> None:
    with pytest.raises(ValidatorLoadError):
        build("arithmetic", params)


def test_bench_measures_firings_by_label(tmp_path: Path) -> None:
    traces: list[dict[str, object]] = [
        {"id": "clean", "steps": ["He has 3 + 4 = 7 apples.", "A: 7"], "first_error_step": -1,
         "final_answer_correct": True},
        {"id": "wrong", "steps": ["He has 3 apples.", "3 + 4 = 8", "A: 8"],
         "first_error_step": 1, "final_answer_correct": False},
        {"id": "unlabelled", "steps": ["3 + 4 = 9", "A: 9"], "first_error_step": None,
         "final_answer_correct": False},
    ]
    path = tmp_path / "made_up.jsonl"
    path.write_text("".join(json.dumps({
        "dataset": "gsm8k", "generator": "made-up", "problem": CTX.problem,
        "reference_answer": "7", "separator": "\n", **t}) + "\n" for t in traces))
    report = measure(["arithmetic"], [path])
    rows = {(r["validator"], r["scope"]): r for r in report["rows"]}
    row = rows[("arithmetic", "all")]
    assert (row["traces"], row["clean"], row["fired_clean"]) == (3, 1, 0)
    assert (row["wrong_step"], row["fired_wrong_step"], row["fired_before_error"]) == (1, 1, 0)
    assert (row["wrong_answer"], row["fired_wrong_answer"]) == (2, 2)
    assert row["reasons"] == {"arithmetic_error": 2}
    assert 0 < row["median_fraction_at_fire"] < 1
    assert rows[("any", "made_up.jsonl")]["fired"] == 2
    with pytest.raises(ValidatorLoadError):
        measure(["no_such_validator"], [path])
