"""validators.lib.answers: finding, normalising and comparing final answers.

Real fragments are loaded by trace id at test time (tests/support/tracedata.py); made-up strings
cover the formats and the edge cases.
"""

from __future__ import annotations

import pytest

from tests.support.tracedata import fragment, full_text, traces
from validators.lib.answers import (
    answers_equal,
    find_answers,
    find_concluding_answer,
    find_final_answer,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "kind", "normalized"),
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "gsm8k", "72"),
        ("#### $1,080", "gsm8k", "1080"),
        ("So she makes 9 * 2 = 18 dollars.\nA: 18", "line", "18"),
        ("Answer: 26", "line", "26"),
        ("**Final Answer:** 3/4", "line", "3/4"),
        ("Thus the area is $\\boxed{16\\pi}$.", "boxed", "16\\pi"),
        ("so $x = \\boxed{\\frac{3}{2}}$", "boxed", "3/2"),
        ("\\boxed{\\dfrac{-6}{8}}", "boxed", "-3/4"),
        ("The answer is 42.", "phrase", "42"),
        ("Therefore, the final answer is: $\\frac{1}{4}$.", "phrase", "1/4"),
        ("The final answer is:\n\\[ 7 \\]", "phrase", "7"),
        ("Final Answer: The final answer is 107. I hope it is correct.", "phrase", "107"),
        ("The answer is: \\(\\boxed{10}\\).", "boxed", "10"),
    ],
)
def test_recognises_final_answer_formats(text: str, kind: str, normalized: str) -> None:
    match = find_final_answer(text)
    assert match is not None
    assert (match.kind, match.normalized) == (kind, normalized)


@pytest.mark.parametrize(
    "text",
    [
        "#### Part 1: the first interval",  # a Markdown heading, not a GSM8K marker
        "Publisher A: 5000 cents",  # "A:" not at a line start
        "a: the first case",  # lower-case list item
        "multiply by 100% to express the answer as a percentage",
        "the answer is:\n\\[ 6 \\cdot 5 = 30 \\]",  # an intermediate display, not "final"
        "no answer here at all",
        "",
    ],
)
def test_ignores_text_that_only_looks_like_a_marker(text: str) -> None:
    assert find_final_answer(text) is None


def test_unclosed_boxed_is_an_incomplete_match() -> None:
    match = find_final_answer("so the result is \\boxed{12")
    assert match is not None and not match.complete and match.normalized is None


def test_nested_boxed_is_one_answer() -> None:
    found = find_answers("\\boxed{180 - 90 = \\boxed{90}}")
    assert len(found) == 1 and found[0].normalized == "90"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("72", "72"), ("72.0", "72"), ("$1,234.50", "2469/2"), ("-$15", "-15"),
        ("−4", "-4"), ("0.5", "1/2"), ("1/2", "1/2"), ("\\frac{2}{4}", "1/2"),
        ("\\tfrac{10}{5}", "2"), ("25\\%", "25"), ("30%", "30"), ("12 tomatoes", "12"),
        ("\\(52\\) candles", "52"), ("\\text{5 cm}", "5"), ("47^\\circ", "47"),
        ("18.", "18"), ("x = 5", "5"), ("C = 25", "25"), ("(b, c) = (6, 5)", "(6,5)"),
        ("115{,}000", "115000"), ("(C)", "c"), ("\\left( 1, 2 \\right)", "(1,2)"),
        ("  Numerically   Determined ", "numerically determined"),
        ("x \\le 3", "x \\le 3"), ("\\frac{1}{0}", "\\frac{1}{0}"),
    ],
)
def test_normalize_answer(raw: str, canonical: str) -> None:
    assert normalize_answer(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "$", ".", "\\phantom{2}", "{}", "x" * 1000],
)
def test_normalize_answer_rejects_nothing_to_compare(raw: str) -> None:
    assert normalize_answer(raw) is None


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("18", "18.00", True), ("$256.70", "256.7", True), ("\\frac{11}{36}", "11/36", True),
        ("1,000", "1000", True), ("3", "4", False), ("", "", False), ("x", "X", True),
        ("0.33", "1/3", False),
    ],
)
def test_answers_equal(a: str, b: str, equal: bool) -> None:
    assert answers_equal(a, b) is equal


def test_numbers_are_parsed_not_evaluated() -> None:
    assert normalize_answer("__import__('os').system('true')") is not None  # just a string
    assert normalize_answer("2**100000") == "2**100000"  # no arithmetic on model text
    assert normalize_answer("1" * 70) is not None  # too long to be a number: kept as text


# --- real fragments -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("trace_id", "step", "kind", "normalized"),
    [
        ("gsm8k-gpt3-0-6b_finetuning", 2, "line", "26"),
        ("processbench-math-8", 3, "phrase", "107"),
        ("processbench-math-671", 4, "boxed", "115000"),
        ("processbench-math-767", 4, "boxed", "6"),  # "within \boxed{}" then \boxed{6}
        ("processbench-math-935", 3, "boxed", "11/36"),
    ],
)
def test_real_fragments(trace_id: str, step: int, kind: str, normalized: str) -> None:
    match = find_final_answer(fragment(trace_id, step))
    assert match is not None
    assert (match.kind, match.normalized) == (kind, normalized)


@pytest.mark.parametrize(
    ("trace_id", "step"),
    [
        ("processbench-math-627", 11),  # "#### Part 1" heading
        ("processbench-math-718", 1),  # "the answer is:" before an intermediate display
    ],
)
def test_real_fragments_without_a_marker(trace_id: str, step: int) -> None:
    assert find_final_answer(fragment(trace_id, step)) is None


def test_two_different_boxes_in_one_real_step() -> None:
    found = [m.normalized for m in find_answers(fragment("processbench-math-47", 3))]
    assert len(found) == 2 and found[0] != found[1]


def test_gsm8k_gpt3_answers_agree_with_the_correctness_labels() -> None:
    """On every GPT-3 trace with an answer, answers_equal(answer, reference) is the label."""
    disagreements = []
    for t in traces("gpt3"):
        match = find_final_answer(full_text(t["id"]))
        if match is None:
            continue
        if answers_equal(match.raw, t["reference_answer"]) != t["final_answer_correct"]:
            disagreements.append(t["id"])
    assert disagreements == []


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("First 3 + 4 = 7.\nTherefore, she has 7 apples left.", "7"),
        ("So, the family uses **12 eggs** a week.", "12"),
        ("Thus, the area is \\(4 \\times 9 = 36\\).", "36"),
        ("Thus, the equation is:\n\\[ y = 13 \\]", "13"),
        ("So, after all that, Raymond has $8 left.", "8"),
    ],
)
def test_concluding_answer(text: str, normalized: str) -> None:
    match = find_concluding_answer(text)
    assert match is not None and match.normalized == normalized


@pytest.mark.parametrize(
    "text",
    [
        "For the thirteenth glass Kylar needs to pay 5 * 1",  # cut off mid-sentence
        "So the price will be $41.472+$8.2944 = $<<41.472+8.",  # cut inside a calculation
        "She has 7 apples left.",  # no conclusion cue
        "Therefore, the answer depends on x.",  # nothing numeric
    ],
)
def test_no_concluding_answer(text: str) -> None:
    assert find_concluding_answer(text) is None


@pytest.mark.parametrize(
    "trace_id",
    ["gsm8k-gpt3-5-175b_finetuning", "gsm8k-gpt3-162-175b_finetuning",
     "gsm8k-gpt3-593-6b_finetuning"],
)
def test_streams_cut_at_the_length_limit_have_no_conclusion(trace_id: str) -> None:
    assert find_final_answer(full_text(trace_id)) is None
    assert find_concluding_answer(full_text(trace_id)) is None
