"""The text validators: hallucination, well_posed, repetition, reference_answer, length_budget."""

from __future__ import annotations

from typing import Any

import pytest

from foldem.core.errors import ValidatorLoadError
from tests.support.tracedata import trace, traces
from tests.support.verdicts import CTX, first_fault, stream
from validators.base import Checkpoint, ProblemContext, Step, Verdict
from validators.builtin.repetition import MAX_DISTINCT_STEPS
from validators.registry import build


def trace_fault(name: str, trace_id: str, params: dict[str, Any] | None = None) -> Verdict | None:
    t = trace(trace_id)
    ctx = ProblemContext(problem=t["problem"], reference_answer=t["reference_answer"])
    return first_fault(stream(name, list(t["steps"]), t["separator"], params, ctx))


def clean_traces() -> list[dict[str, Any]]:
    return [t for name in ("pb_gsm8k", "pb_math") for t in traces(name)
            if t["first_error_step"] == -1]


# --- hallucination ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "fires"),
    [
        ("As an AI language model, I can't do that.", True),
        ("I’m sorry, but the numbers do not add up.", True),  # typographic apostrophe
        ("There is NOT ENOUGH \t information to decide.", True),  # case and whitespace
        ("Let me know if you need anything else!", True),
        ("This needs numerical methods to solve.", True),
        ("Final Answer: The final answer is 7. I hope it is correct.", False),
        ("We cannot divide by zero, so x is not 0.", False),
        ("The value cannot be determinedly guessed.", False),  # word boundary
        ("Basian AI-free text", False),
    ],
)
def test_hallucination_phrases(text: str, fires: bool) -> None:
    fault = first_fault(stream("hallucination", ["3 + 4 = 7.", text]))
    assert (fault is not None) is fires
    if fault:
        assert fault.reason == "hallucination_phrase" and fault.step_index == 1


@pytest.mark.parametrize(
    ("params", "text", "fires"),
    [
        ({"extra_phrases": ["wait, actually"]}, "Wait,   actually it is 8.", True),
        ({"phrases": ["banana split"]}, "As an AI I think so.", False),
        ({"phrases": [], "patterns": [r"\bx{3,}\b"]}, "the value is xxxx", True),
        ({"phrases": []}, "As an AI I think so.", False),
    ],
)
def test_hallucination_params(params: dict[str, Any], text: str, fires: bool) -> None:
    assert (first_fault(stream("hallucination", [text], params=params)) is not None) is fires


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"patterns": ["(unclosed"]}, "invalid regular expression"),
        ({"phrases": ["  "]}, "must not be empty"),
        ({"extra_phrases": ["x" * 300]}, "longer than"),
        ({"phrase": ["typo"]}, "phrase"),
    ],
)
def test_hallucination_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidatorLoadError, match=message):
        build("hallucination", params)


@pytest.mark.parametrize(
    ("trace_id", "step_index"),
    [("processbench-math-59", 3), ("processbench-gsm8k-32", 2), ("processbench-math-21", 4)],
)
def test_hallucination_real_faults(trace_id: str, step_index: int) -> None:
    fault = trace_fault("hallucination", trace_id)
    assert fault is not None and fault.step_index == step_index


def test_hallucination_no_false_rejections_on_clean_traces() -> None:
    assert [t["id"] for t in clean_traces() if trace_fault("hallucination", t["id"])] == []


# --- well_posed ---------------------------------------------------------------------------------

def judge_problem(text: str, params: dict[str, Any] | None = None) -> Verdict | None:
    return first_fault(stream("well_posed", text.split("\n"), params=params))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Tom has 3 apples and buys 4 more. How many apples does Tom have now?", None),
        ("Tom has 3 apples and buys 4 more.\nCalculate the number of apples he has.", None),
        ("Let $x$ be a real number with $x^2 = 9$ and $x > 0$. Find $x$.", None),
        ("How many apples?", "too_short"),
        ("Tom has 3 apples and buys 4 more apples at the market on Sunday.", "not_a_question"),
        ("Marie possède trois pommes. Elle en achète quatre de plus au marché. Combien de "
         "pommes possède-t-elle maintenant ?", "not_english"),
        ("María tiene tres manzanas y compra cuatro más en el mercado. ¿Cuántas manzanas "
         "tiene ahora?", "not_english"),
        ("Maria hat drei Äpfel und kauft vier weitere auf dem Markt. Wie viele Äpfel hat sie "
         "jetzt?", "not_english"),
        ("汤姆有三个苹果，又买了四个。汤姆现在有多少个苹果？ How many apples does he have?",
         "not_english"),
        ("How many " + "very " * 120 + "apples?", "too_long"),
    ],
)
def test_well_posed(text: str, reason: str | None) -> None:
    fault = judge_problem(text)
    assert (fault.reason if fault else None) == reason


def test_well_posed_rejects_length_before_the_stream_ends() -> None:
    session = build("well_posed").open(CTX)
    long_step = Checkpoint(index=0, steps=(Step(0, "word " * 101),))
    assert session.feed(long_step).reason == "too_long"
    in_tail = build("well_posed").open(CTX)
    assert in_tail.feed(Checkpoint(index=0, steps=(), tail="word " * 101)).reason == "too_long"


def test_well_posed_params() -> None:
    assert judge_problem("How many apples?", {"min_words": 3}) is None
    assert judge_problem("Tom has three apples.", {"min_words": 2, "require_question": False}) \
        is None
    with pytest.raises(ValidatorLoadError, match="min_words"):
        build("well_posed", {"min_words": 50, "max_words": 10})


def test_well_posed_is_a_problem_stage_validator() -> None:
    assert build("well_posed").stage_kinds == frozenset({"problem"})


def test_well_posed_accepts_real_gsm8k_problems() -> None:
    """Measured on the 660 GSM8K problems: about 1% exceed 100 words; nothing else fires."""
    problems = {t["problem"] for t in traces("gpt3")}
    faults = [f for p in problems if (f := judge_problem(p)) is not None]
    assert {f.reason for f in faults} <= {"too_long"}
    assert len(faults) <= 0.02 * len(problems)


def test_well_posed_real_short_math_problem() -> None:
    fault = judge_problem(trace("processbench-math-0")["problem"])
    assert fault is not None and fault.reason == "too_short"


# --- repetition ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("trace_id", "reason"),
    [
        ("gsm8k-gpt3-5-175b_finetuning", "repeated_step"),
        ("processbench-gsm8k-49", "repeated_phrase"),
        ("gsm8k-gpt3-48-175b_finetuning", "degenerate_run"),
        ("processbench-math-401", "degenerate_run"),
    ],
)
def test_repetition_real_loops(trace_id: str, reason: str) -> None:
    fault = trace_fault("repetition", trace_id)
    assert fault is not None and fault.reason == reason


@pytest.mark.parametrize(
    "trace_id",
    [
        "gsm8k-gpt3-309-6b_finetuning",  # day 1, day 2, ...: the numbers make progress
        "gsm8k-gpt3-593-6b_finetuning",
        "processbench-math-887",
        "processbench-math-517",
        "gsm8k-gpt3-66-6b_verification",  # four parallel cases (team A/B, girls/boys)
        "gsm8k-gpt3-0-6b_finetuning",
    ],
)
def test_repetition_enumerations_pass(trace_id: str) -> None:
    assert trace_fault("repetition", trace_id) is None


def test_repetition_no_false_rejections_on_clean_traces() -> None:
    assert [t["id"] for t in clean_traces() if trace_fault("repetition", t["id"])] == []


def test_repetition_fires_before_the_loop_ends() -> None:
    loop = ["We start with 5 apples in the basket today."] * 10
    verdicts = stream("repetition", ["Setup."] + loop)
    faults = [i for i, v in enumerate(verdicts) if not v.ok]
    assert faults == [3]  # the third copy; reported once


def test_repetition_near_duplicates_need_the_same_numbers() -> None:
    ordinals = ("first", "second", "third", "fourth", "fifth")
    same = [f"For the {w} glass she pays 5 * 1/2 = 2.5 dollars." for w in ordinals]
    assert first_fault(stream("repetition", same)) is not None
    assert first_fault(stream("repetition", same[:4])) is None  # a few parallel cases are fine
    progress = [f"On day {d} the plant is {2 ** d} feet tall, twice the day before."
                for d in range(1, 9)]
    assert first_fault(stream("repetition", progress)) is None


def test_repetition_catches_a_loop_inside_an_unfinished_line() -> None:
    session = build("repetition").open(CTX)
    tail = "The value is 0." + "27" * 40
    verdict = session.feed(Checkpoint(index=0, steps=(), tail=tail))
    assert verdict.reason == "degenerate_run"


def test_repetition_scans_a_tail_only_once() -> None:
    """A phrase 5 times in the tail, then the finished step: 5 occurrences, not 10."""
    phrase = "one two three four five six seven eight nine ten eleven "
    session = build("repetition").open(CTX)
    assert session.feed(Checkpoint(index=0, steps=(), tail=phrase * 5)).ok
    assert session.feed(Checkpoint(index=1, steps=(Step(0, phrase * 5 + "end"),))).ok
    assert not session.feed(Checkpoint(index=2, steps=(Step(1, phrase * 4),))).ok


def test_repetition_memory_is_bounded() -> None:
    session = build("repetition").open(CTX)
    for i in range(MAX_DISTINCT_STEPS + 500):
        cp = Checkpoint(index=i, steps=(Step(i, f"distinct step number {i} has words {i * 7}"),))
        assert session.feed(cp).ok
    assert len(session.exact) <= MAX_DISTINCT_STEPS  # type: ignore[attr-defined]
    assert len(session.gram_window) <= 500  # type: ignore[attr-defined]


# --- reference_answer ---------------------------------------------------------------------------

def ref_ctx(reference: str | None) -> ProblemContext:
    return ProblemContext(problem="How many apples?", reference_answer=reference)


@pytest.mark.parametrize(
    ("steps", "reference", "fault_at"),
    [
        (["3 + 4 = 7", "#### 7", "more"], "7", None),
        (["3 + 4 = 7", "#### 7.00", "more"], "7", None),
        (["3 + 4 = 8", "#### 8", "more"], "7", 1),  # at once, not at the end
        (["3 + 4 = 8", "#### 8"], None, None),  # no reference: skipped
        (["3 + 4 = 8", "#### 8"], "", None),  # unusable reference: skipped
        (["Therefore, she has 8 apples."], "7", None),  # no marker, conclusion not used
    ],
)
def test_reference_answer(steps: list[str], reference: str | None, fault_at: int | None) -> None:
    verdicts = stream("reference_answer", steps, ctx=ref_ctx(reference))
    faults = [i for i, v in enumerate(verdicts) if not v.ok]
    assert faults == ([] if fault_at is None else [fault_at])
    if fault_at is not None:
        assert verdicts[fault_at].reason == "wrong_answer"


def test_reference_answer_can_use_the_conclusion() -> None:
    verdicts = stream("reference_answer", ["Therefore, she has 8 apples."],
                      params={"use_conclusion": True}, ctx=ref_ctx("7"))
    assert verdicts[-1].reason == "wrong_answer"


def test_reference_answer_agrees_with_gpt3_labels() -> None:
    for t in traces("gpt3")[:600]:
        fault = trace_fault("reference_answer", t["id"])
        answered = "A:" in t["steps"][-1]
        assert (fault is not None) == (answered and not t["final_answer_correct"]), t["id"]


# --- length_budget ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("expected", "params", "tokens", "fires"),
    [
        (100, None, 300, False), (100, None, 301, True), (100, {"k": 1.5}, 151, True),
        (None, None, 10**6, False),
    ],
)
def test_length_budget(expected: int | None, params: dict[str, Any] | None, tokens: int,
                       fires: bool) -> None:
    ctx = ProblemContext(problem="q", expected_tokens=expected)
    session = build("length_budget", params).open(ctx)
    verdict = session.feed(Checkpoint(index=0, steps=(Step(0, "x"),), tokens_so_far=tokens))
    assert (not verdict.ok) is fires
    if fires:
        assert verdict.reason == "over_length_budget" and session.feed(
            Checkpoint(index=1, steps=(), tokens_so_far=tokens + 1)).ok  # reported once


@pytest.mark.parametrize("params", [{"k": 0}, {"k": -1}, {"budget": 3}])
def test_length_budget_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(ValidatorLoadError):
        build("length_budget", params)
