"""arithmetic checks every link of a chain, bracketed and signed, with exact arithmetic; repetition
tells a step that carries a changing state from a verbatim loop. Made-up steps in the styles
models write."""

from __future__ import annotations

import pytest

from validators.base import Checkpoint, ProblemContext, Step, Verdict
from validators.registry import build

CTX = ProblemContext(problem="Compute the expression step by step.")


def judge(name: str, steps: list[str]) -> Verdict | None:
    """The first fault of a session fed the steps one checkpoint each, or None."""
    session = build(name).open(CTX)
    for i, text in enumerate(steps):
        verdict = session.feed(Checkpoint(i, (Step(i, text),), final=i == len(steps) - 1))
        if not verdict.ok:
            return verdict
    return None


@pytest.mark.parametrize(
    "step",
    [
        "A = ((3 * 4 * 5) * (7 - -7 * 4)) = ((3 * 4 * 5) * (7 - 28)) = (60 * (-21)) = -1260.",
        "B = (-1 * 9 + 1 + -1) = ((-1 * 9) + 1 + -1) = (-9 + 1 + -1) = (-9 + -1) = -9.",
        "C = (-6 * -8 + -6 + 9) = ((-6 * -8) + -6 + 9) = (48 + -6 + 9) = (41).",
        "So (-4 + 120) * (-3 * 5) = 116 * (-15) = -1750.",
    ],
)
def test_a_wrong_link_inside_a_chain_is_caught(step: str) -> None:
    fault = judge("arithmetic", [step])
    assert fault is not None and fault.reason == "arithmetic_error"


@pytest.mark.parametrize(
    "step",
    [
        "A = ((3 * 4 * 5) * (7 - -7 * 4)) = ((3 * 4 * 5) * (7 + 28)) = (60 * 35) = 2100.",
        "So (-4 + 120) * (-3 * 5) = 116 * (-15) = -1740.",
        "D = (-6 + 4 - -9) = (-6 + 4 + 9) = (-2 + 9) = (7).",
        "4 × 3 = 12/2 = 6 slices each.",  # a running total, divided on
        "2 + 3 = 5 + 1 = 6",  # a running total, added to
        "The cost is 10/3 = 3.33 * 3 = 10 dollars.",  # rounded: decimals are not linked exactly
        "By the law of cosines, 4^2 = 2^2 + 3^2 - 2 \\cdot 2 \\cdot 3 \\cos C.",  # goes on
        "Then 7 * 8 = 56 = 50 + 6.",
    ],
)
def test_right_or_unjudgeable_chains_pass(step: str) -> None:
    assert judge("arithmetic", [step]) is None


STATE_LINES = [
    "The raven is left of the quail. So from left to right: first is the raven, then second "
    "is the quail, then third is the owl.",
    "The owl is left of the raven. So from left to right: first is the owl, then second is "
    "the raven, then third is the quail.",
    "The quail is left of the owl. So from left to right: first is the quail, then second is "
    "the owl, then third is the raven.",
    "The raven is left of the owl. So from left to right: first is the raven, then second is "
    "the owl, then third is the quail.",
    "The owl is left of the quail. So from left to right: first is the owl, then second is "
    "the quail, then third is the raven.",
    "The quail is left of the raven. So from left to right: first is the quail, then second "
    "is the raven, then third is the owl.",
]


def test_lines_that_carry_a_changing_state_are_no_loop() -> None:
    assert judge("repetition", STATE_LINES) is None


def test_a_loop_that_substitutes_one_word_is_still_a_loop() -> None:
    ordinals = ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth"]
    loop = [f"For the {o} glass Kylar needs to pay 5 * 1/2 = 2.5 dollars." for o in ordinals]
    fault = judge("repetition", loop)
    assert fault is not None and fault.reason == "repeated_step"


def test_the_same_state_line_written_again_and_again_is_a_loop() -> None:
    fault = judge("repetition", [STATE_LINES[0]] * 3)
    assert fault is not None and fault.reason == "repeated_step"
