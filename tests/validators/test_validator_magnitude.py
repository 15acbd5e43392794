"""Number extraction, and the `magnitude` and `negative_values` validators built on it."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy

from foldem.core.errors import ValidatorLoadError
from tests.support.tracedata import trace
from validators.base import Checkpoint, ProblemContext, Step, Verdict
from validators.builtin.magnitude import negatives_plausible, stated_negatives
from validators.lib.numbers import extract_numbers, number_at, numbers_in_problem
from validators.registry import build

APPLES = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@pytest.mark.parametrize(("text", "values"), [
    ("He has 3 apples and 12 pears", [3, 12]),
    ("It costs $1,234,567.50 today", [Fraction("1234567.5")]),
    ("Take 3,4 and 5", [4, 5]),  # `3,4` is no thousands number; the 3 is glued to `,4`
    ("A loss of -5 and −7 and –2", [-5, -7, -2]),
    ("10-5 is subtraction", [10, 5]),
    ("20% of them, 12.5 percent, 3\\% more", [Fraction(1, 5), Fraction(1, 8), Fraction(3, 100)]),
    ("a 3/4 cup", [Fraction(3, 4)]),
    (r"\frac{3}{4} of \dfrac{10}{4}", [Fraction(3, 4), Fraction(5, 2)]),
    ("2.5 million people and 3 billion", [2_500_000, 3_000_000_000]),
    ("x2 + H2O + a_1 + 5km + 2nd", []),  # identifiers and glued units are not quantities
    ("١٢ and １２ and 3²", []),  # only ASCII digits (3² is glued to a superscript)
    (".5 of it", [Fraction(1, 2)]),
])
def test_extract_numbers(text: str, values: list[int | Fraction]) -> None:
    assert [n.exact for n in extract_numbers(text)] == values


def test_mentions_have_positions_and_flags() -> None:
    text = "so = -12.5% now"
    (mention,) = extract_numbers(text)
    assert text[mention.start:mention.end] == "-12.5%"
    assert mention.negative and mention.percent
    assert mention.value == sympy.Rational(-1, 8)
    assert number_at(text, mention.start) == mention
    assert number_at(text, 0) is None


def test_a_ten_thousand_digit_literal_is_flagged_not_parsed() -> None:
    (mention,) = extract_numbers("it is " + "9" * 10_000 + " m")
    assert mention.too_long and mention.exact >= 10**40


@pytest.mark.parametrize(("problem", "expected_in"), [
    ("Twenty-five students and a dozen teachers", [25, 12]),
    ("two hundred and fifty thousand dollars", [250_000]),
    ("half of the 2004th item", [Fraction(1, 2), 2004]),
    ("It costs $400 000", [400_000]),
    ("3 million people", [3_000_000]),
    ("Compute $2^{10}$", [1024]),
    ("He runs twice as far, three times a week", [2, 3]),
])
def test_numbers_in_problem_reads_words_and_powers(problem: str,
                                                   expected_in: list[int | Fraction]) -> None:
    values = numbers_in_problem(problem)
    assert all(isinstance(v, sympy.Rational) for v in values)
    for expected in expected_in:
        assert sympy.Rational(expected) in values


def _run(name: str, problem: str, steps: list[str],
         params: dict[str, object] | None = None) -> Verdict | None:
    """Feed steps one checkpoint each; the first fault, or None."""
    session = build(name, params).open(ProblemContext(problem=problem))
    for i, text in enumerate(steps):
        verdict = session.feed(Checkpoint(i, (Step(i, text),)))
        if not verdict.ok:
            return verdict
    return None


@pytest.mark.parametrize(("steps", "fires"), [
    (["He has 300 apples."], False),  # the problem's largest number is 4: the limit is 400
    (["He has 400 apples."], False),
    (["He has 401 apples."], True),
    (["He has 3 + 4 = 7 apples.", "So 7,000 apples."], True),
    (["That is 2.5 million apples."], True),
    (["He has 7 apples.", "A: 7"], False),
])
def test_magnitude_paper_rule(steps: list[str], fires: bool) -> None:
    verdict = _run("magnitude", APPLES, steps)
    assert (verdict is not None) is fires
    if verdict is not None:
        assert verdict.reason == "implausible_magnitude"
        assert verdict.step_index == len(steps) - 1


def test_magnitude_absolute_limit_and_problem_numbers() -> None:
    problem = "A city has 1,000,000 people and 50,000,000 visitors. How many in total?"
    assert _run("magnitude", problem, ["Visitors: 50,000,000 people."]) is None
    assert _run("magnitude", problem, ["Total: 51,000,000 people."]) is not None
    small = "A city has 200,000 people. How many after 10 years?"
    assert _run("magnitude", small, ["It has 10,000,001 people."]) is not None
    assert _run("magnitude", small, ["It has 10,000,001 people."],
                {"absolute_limit": 1e9}) is None


def test_magnitude_reference_largest_product() -> None:
    problem = "He uses 40 gallons a week. How many gallons in 52 weeks?"
    step = ["Over two years: 40 * 104 = 4,160 gallons."]  # limit 50 x 52, or 50 x 40 x 52
    assert _run("magnitude", problem, step, {"ratio": 50}) is not None
    assert _run("magnitude", problem, step, {"ratio": 50, "reference": "largest_product"}) is None


@pytest.mark.parametrize(("trace_id", "largest", "product"), [
    ("gsm8k-gpt3-62-175b_finetuning", True, True),  # 2,000,000,000
    ("gsm8k-gpt3-614-6b_finetuning", True, False),  # 40 gallons x 52 weeks = 2080
    ("processbench-gsm8k-291", False, False),
])
def test_magnitude_on_real_traces(trace_id: str, largest: bool, product: bool) -> None:
    t = trace(trace_id)
    assert (_run("magnitude", t["problem"], t["steps"]) is not None) is largest
    assert (_run("magnitude", t["problem"], t["steps"],
                 {"reference": "largest_product"}) is not None) is product


@pytest.mark.parametrize(("problem", "plausible"), [
    (APPLES, False),
    ("The temperature was 5 degrees and fell by 8. What is it now?", True),
    ("He has a debt of $40.", True),
    ("Solve $x^2 - 5x + 6 = 0$.", True),
    ("What is -3 + 5?", True),
    ("What is 10 - 4?", True),
    ("Each toy costs $5. How much do 3 cost?", False),  # `$5` is money, not math
])
def test_negatives_plausible(problem: str, plausible: bool) -> None:
    words = ["temperature", "debt"]
    assert negatives_plausible(problem, words) is plausible


@pytest.mark.parametrize(("text", "stated"), [
    ("So 3 - 7 = -4 apples.", ["-4"]),
    ("The result is −4.", ["−4"]),
    ("-4 apples are left", ["-4"]),
    ("Remaining: $-40", ["-40"]),
    ("10 - 4 = 6", []),
    ("10 -4 more", []),  # a spaced subtraction, not a stated result
    ("between 3 and -4 (a range)", []),
    ("So 360-480=<<360-480=-120>>120 less", []),  # annotations are the arithmetic check's
    ("x = -0 here", []),
])
def test_stated_negatives(text: str, stated: list[str]) -> None:
    assert [text[a:b] for a, b in stated_negatives(text)] == stated


def test_negative_values_validator() -> None:
    verdict = _run("negative_values", APPLES, ["He has 3 apples.", "So 3 - 7 = -4 apples."])
    assert verdict is not None
    assert (verdict.reason, verdict.step_index) == ("unexpected_negative", 1)
    assert "-4" in verdict.detail
    temperature = "The temperature was 3 degrees and fell by 7. What is it now?"
    assert _run("negative_values", temperature, ["So 3 - 7 = -4 degrees."]) is None
    assert _run("negative_values", "A robot walks 3 m. Where is it?", ["It is at -4."],
                {"extra_plausible_words": ["robot"]}) is None


@pytest.mark.parametrize(("trace_id", "fires_at"), [
    ("gsm8k-gpt3-16-175b_finetuning", 2),  # 160-300 = -140 miles
    ("processbench-gsm8k-96", 2),  # Remaining = 100 - 180 = -80 shoes
    ("processbench-gsm8k-346", None),  # a negative inside a subtraction, in a correct solution
    ("processbench-gsm8k-291", None),
])
def test_negative_values_on_real_traces(trace_id: str, fires_at: int | None) -> None:
    t = trace(trace_id)
    verdict = _run("negative_values", t["problem"], t["steps"])
    assert (verdict.step_index if verdict is not None else None) == fires_at


@pytest.mark.parametrize(("name", "params"), [
    ("magnitude", {"ratio": 0.5}),
    ("magnitude", {"reference": "median"}),
    ("magnitude", {"typo": True}),
    ("negative_values", {"plausible_words": "debt"}),
])
def test_bad_params_are_a_load_error(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ValidatorLoadError):
        build(name, params)


@pytest.mark.parametrize(("name", "step"), [
    ("magnitude", "He has 9,999 apples."),
    ("negative_values", "So 3 - 7 = -4 apples."),
    ("arithmetic", "So 3 + 4 = 8 apples."),
])
def test_score_on_fault_sets_the_soft_weight(name: str, step: str) -> None:
    hard = _run(name, APPLES, [step])
    soft = _run(name, APPLES, [step], {"score_on_fault": 0.7})
    assert hard is not None and hard.score == 0.0
    assert soft is not None and soft.score == 0.7 and soft.reason == hard.reason
    with pytest.raises(ValidatorLoadError):
        build(name, {"score_on_fault": 1.0})  # a fault must lower the score
