"""The `ungrounded_quantities` validator: an operand from nowhere fires; numbers from the
problem, from earlier steps, from constants (and units mentioned) do not."""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import pytest

from foldem.core.errors import ValidatorLoadError
from tests.support.tracedata import trace
from tests.validators.test_validators_hostile import HOSTILE as SHARED_HOSTILE
from validators.base import MAX_STEP_CHARS, Checkpoint, ProblemContext, Step, Verdict
from validators.builtin.ungrounded import Known
from validators.checkpoints import CheckpointSplitter
from validators.lib.operands import computations, problem_values
from validators.registry import build

BUDGET_S = 0.05 * 5  # 50 ms per checkpoint, with a factor of 5 for slow shared runners


def first_fire(problem: str, steps: list[str], params: dict[str, Any] | None = None,
               one_checkpoint: bool = False) -> Verdict | None:
    """Feed the steps one checkpoint each (or all in one); the first verdict below 1."""
    session = build("ungrounded_quantities", params).open(ProblemContext(problem=problem))
    numbered = [Step(i, text) for i, text in enumerate(steps)]
    batches = [numbered] if one_checkpoint else [[s] for s in numbered]
    for k, batch in enumerate(batches):
        verdict = session.feed(Checkpoint(k, tuple(batch), final=k == len(batches) - 1))
        if not verdict.ok:
            return verdict
    return None


APPLES = "Tom has 3 apples and buys 4 more bags of 6 apples. How many apples does he have?"
SALE = "A $50 jacket is 20% off. Tax is seven percent. What does it cost?"

# (problem, steps, index of the step that fires or None, operand the detail must quote)
CASES: list[tuple[str, list[str], int | None, str]] = [
    (APPLES, ["4 * 6 = 24 apples in bags.", "3 + 24 = 27 apples."], None, ""),
    (APPLES, ["4 * 5 = 20 apples in bags."], 0, "5"),  # 5 is in no source
    (APPLES, ["So 3 + 4 * 6 = <<3+4*6=27>>27."], None, ""),
    (APPLES, ["He has <<3+9*6=57>>57."], 0, "9"),  # a calculator annotation
    (APPLES, ["4 * 6 = 24", "24 + 3 = 27", "27 * 2 = 54"], None, ""),  # derived, constant 2
    (APPLES, ["There are 8 apples in a crate.", "8 * 3 = 24"], None, ""),  # stated earlier
    (APPLES, ["Each crate has 8 apples, so 8 * 3 = 24."], None, ""),  # stated in the step
    (APPLES, ["So 8 * 3 = 24, since a crate has 8."], 0, "8"),  # stated only after its use
    (APPLES, ["4 \\times 6 = 24", "\\frac{24}{3} = 8", "\\( 8 \\cdot 11 = 88 \\)"], 2, "11"),
    (APPLES, ["3 + (4 * 6) = 3 + 24 = 27"], None, ""),  # a chain: 24 is a partial result
    (APPLES, ["20 - (3 + 4) = 20 - 7 = 13"], 0, "20"),
    (APPLES, ["6 / 4 = 1.5", "1.5 * 3 = 4.5", "So about 5 * 3 = 15 bags."], None, ""),  # 4.5→5
    (APPLES, ["24 / 7 = 3.43", "3.43 * 2 = 6.86"], None, ""),  # 24/7 written rounded
    (APPLES, ["3^2 = 9", "9 + 4 = 13"], None, ""),  # an exponent is not a quantity
    (APPLES, ["\\frac{3}{4} \\times 4 = 3"], None, ""),  # a fraction from its parts
    (APPLES, ["He sleeps 8 hours: 24 - 8 = 16"], None, ""),
    (APPLES, ["Over a week: 7 * 24 = 168", "168 * 60 = 10080"], None, ""),  # constants
    (APPLES, ["4 * 6 = 24", "24 * 16 = 384"], 1, "16"),  # 16 only once a unit calls for it
    (APPLES + " Each weighs 8 ounces.", ["4 * 6 = 24", "24 * 8 = 192", "192 / 16 = 12"], None,
     ""),
    (SALE, ["50 * 0.8 = 40", "40 * 1.07 = 42.8"], None, ""),  # complements of percents
    (SALE, ["50 * 20% = 10", "50 - 10 = 40", "40 * 0.07 = 2.8"], None, ""),
    (SALE, ["100 - 20 = 80", "80% * 50 = 40"], None, ""),
    (SALE, ["50 * 0.25 = 12.5"], 0, "0.25"),  # not 20%
    ("Half of the 40 pupils and a third of the 30 teachers came.",
     ["40 * 0.5 = 20", "30 / 3 = 10", "20 + 10 = 30"], None, ""),
    ("Twenty-five kids share one fifty-dollar bill.", ["50 / 25 = 2"], None, ""),
    ("A stamp costs 45 cents. How many dollars do 4 stamps cost?", ["4 * 0.45 = 1.8"], None,
     ""),
    ("What is 3 mod 2?", ["In base 7, 13 + 5 = 21"], None, ""),  # other bases are skipped
]


@pytest.mark.parametrize(("problem", "steps", "fires_at", "quoted"), CASES)
def test_made_up_solutions(problem: str, steps: list[str], fires_at: int | None,
                           quoted: str) -> None:
    verdict = first_fire(problem, steps)
    if fires_at is None:
        assert verdict is None, verdict.detail if verdict else ""
        return
    assert verdict is not None and verdict.step_index == fires_at
    assert verdict.reason == "ungrounded_quantity" and verdict.score == 0.7
    assert verdict.detail.startswith(quoted + " in ")


@pytest.mark.parametrize(("problem", "steps", "fires_at", "quoted"), CASES)
def test_one_checkpoint_with_all_steps_fires_at_the_same_step(
        problem: str, steps: list[str], fires_at: int | None, quoted: str) -> None:
    verdict = first_fire(problem, steps, one_checkpoint=True)
    assert (verdict.step_index if verdict else None) == fires_at


@pytest.mark.parametrize(("params", "steps", "fires"), [
    ({}, ["4 * 5 = 20"], True),
    ({"free_integers_up_to": 5}, ["4 * 5 = 20"], False),
    ({"extra_constants": [5]}, ["4 * 5 = 20"], False),
    ({"constants": []}, ["4 * 6 = 24", "24 * 60 = 1440"], True),
    ({"unit_constants": {"apple": [11]}}, ["3 * 11 = 33"], False),
    ({"unit_constants": {}}, ["3 * 16 = 48 ounces"], True),
    ({}, ["3 * 16 = 48 ounces"], False),
    ({"ground_same_step_text": False}, ["Each crate has 8 apples, so 8 * 3 = 24."], True),
    ({"score_on_fault": 0.2}, ["4 * 5 = 20"], True),
])
def test_params(params: dict[str, Any], steps: list[str], fires: bool) -> None:
    verdict = first_fire(APPLES, steps, params)
    assert (verdict is not None) == fires
    if verdict is not None:
        assert verdict.score == params.get("score_on_fault", 0.7)


@pytest.mark.parametrize("params", [
    {"unit_constants": {"(": [1]}},
    {"unit_constants": {"(?P<x>mile)": [5280]}},
    {"unit_constants": {"": [1]}},
    {"free_integers_up_to": -1},
    {"score_on_fault": 1.0},
    {"constant": [1]},
])
def test_bad_params_are_a_load_error(params: dict[str, Any]) -> None:
    with pytest.raises(ValidatorLoadError):
        build("ungrounded_quantities", params)


def test_problem_values_read_words_percents_and_complements() -> None:
    values = problem_values("Three quarters of 200 people, 15% of them, a fifth, 2 dozen.")
    assert {Fraction(3), Fraction(3, 4), Fraction(200), Fraction(15), Fraction(3, 20),
            Fraction(17, 20), Fraction(85), Fraction(5), Fraction(1, 5), Fraction(12)} <= values


def test_known_values_answer_for_their_roundings() -> None:
    known = Known()
    known.add(Fraction(10, 3))
    assert known.has(Fraction("3.33"), 2) and known.has(Fraction("3.34"), 2)
    assert known.has(Fraction(3), 0) and known.has(Fraction(4), 0)
    assert not known.has(Fraction("3.35"), 2) and not known.has(Fraction("3.3333"), 4)
    known.add(Fraction(5, 2))
    assert known.has(Fraction("2.5"), 1) and not known.has(Fraction("2.6"), 1)


def test_computations_find_operands_and_results() -> None:
    found = computations("So 16 - 3 = <<16-3=13>>13 eggs, and \\(13 \\times 2 = 26\\).")
    assert [[o.text for o in c.operands] for c in found] == [["16", "3"], ["16", "3"],
                                                              ["13", "2"]]
    assert found[-1].results == (Fraction(26), Fraction(26))


# Real steps: faults a reader would call invented numbers, and clean solutions that must pass.
@pytest.mark.parametrize(("trace_id", "step", "quoted"), [
    ("gsm8k-gpt3-2-175b_finetuning", 1, ".15"),  # 150% read as .15
    ("gsm8k-gpt3-49-6b_finetuning", 3, "1200"),
    ("gsm8k-gpt3-62-6b_verification", 0, "5000"),  # $50,000 read as 5000
    ("processbench-gsm8k-126", 0, "470"),  # 7 * 70 - 40 = 470 - 40
])
def test_real_invented_operands_fire(trace_id: str, step: int, quoted: str) -> None:
    t = trace(trace_id)
    verdict = first_fire(t["problem"], t["steps"])
    assert verdict is not None and verdict.step_index == step
    assert verdict.detail.startswith(quoted + " in ")


@pytest.mark.parametrize("trace_id", [
    "processbench-gsm8k-220",  # 20 - (12 + 4) = 20 - 16 = 4
    "processbench-gsm8k-228",  # 14x = 84 then 84 / 14
    "processbench-gsm8k-315",  # 600 + 4 x 600 = 600 + 2400
    "processbench-gsm8k-326",  # pennies, nickels, dimes
    "processbench-gsm8k-344",  # yards to feet
    "gsm8k-gpt3-257-175b_finetuning",  # 30% written as 30 * .01
    "gsm8k-gpt3-551-6b_finetuning",  # `one fifty-dollar bill`
    "gsm8k-gpt3-612-175b_verification",  # a one-pound steak is 16 ounces
])
def test_real_grounded_solutions_pass(trace_id: str) -> None:
    t = trace(trace_id)
    assert first_fire(t["problem"], t["steps"]) is None


def test_streamed_like_the_runner_with_fraction_tails() -> None:
    t = trace("gsm8k-gpt3-62-6b_verification")
    session = build("ungrounded_quantities").open(ProblemContext(problem=t["problem"]))
    splitter = CheckpointSplitter(separator=t["separator"], fractions=[0.3, 0.6],
                                  expected_tokens=40)
    text = t["separator"].join(t["steps"])
    verdicts = [session.feed(cp) for start in range(0, len(text), 5)
                for cp in splitter.push(text[start:start + 5])]
    verdicts.append(session.feed(splitter.close()))
    fired = [v for v in verdicts if not v.ok]
    assert fired and fired[0].step_index == 0


# Hostile text: bounded per checkpoint (own inputs, and those of the other number validators).
HOSTILE = {
    "ten_thousand_digits": "1" * 10_000 + " + 1 = 2",
    "many_equations": "1+7=8, " * 2_800,
    "many_annotations": "<<3*7=21>>21 " * 1_500,
    "many_numbers": "123456789.123 " * 1_400,
    "many_fractions": "\\frac{1}{3} + \\frac{2}{7} = 0.62 " * 600,
    "long_chain": "1" + " + 1 = 2" * 2_400,
    "parens": "(" * 10_000 + "1" + ")" * 9_999 + " = 2",
    "many_units": "pounds miles gallons weeks " * 700,
    "control_chars": "\x00\x01 3 + 4 = 7 \ufeff\u202e 2 × 9 = 18" * 400,
}


ALL_HOSTILE = {**HOSTILE, **{f"shared_{k}": v for k, v in SHARED_HOSTILE.items()}}


@pytest.mark.parametrize("case", sorted(ALL_HOSTILE))
def test_hostile_step_is_bounded_and_never_raises(case: str) -> None:
    session = build("ungrounded_quantities").open(ProblemContext(problem=APPLES))
    worst = 0.0
    for k in range(3):  # later checkpoints see a grown state
        started = time.perf_counter()
        verdict = session.feed(Checkpoint(k, (Step(k, ALL_HOSTILE[case][:MAX_STEP_CHARS]),)))
        worst = max(worst, time.perf_counter() - started)
        assert isinstance(verdict, Verdict) and 0.0 <= verdict.score <= 1.0
    assert worst < BUDGET_S, f"{case}: {worst * 1000:.1f} ms"
