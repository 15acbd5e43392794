"""Every fault points at the text that explains it: `Verdict.span` slices the stage text.

Real recorded generations (../shared/data, by trace id) are streamed through the splitter in
small chunks and whole; the first fault of each validator must point at the triggering text
(the wrong equation, the repeated occurrence, the number, the phrase, the answer). Hostile text
must never produce a span outside the text.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.tracedata import full_text, trace
from tests.validators.test_validators_hostile_text import HOSTILE, checkpoints
from validators.base import Checkpoint, ProblemContext, Verdict
from validators.builtin import BUILTIN_VALIDATORS
from validators.checkpoints import CheckpointSplitter
from validators.registry import build

# (validator, params, trace id, reason, text the span must contain)
REAL: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("arithmetic", {}, "gsm8k-gpt3-2-175b_finetuning", "arithmetic_error",
     "<<130000*.15=19500.0>>195,000"),
    ("arithmetic", {}, "gsm8k-gpt3-20-175b_verification", "arithmetic_error",
     "<<10*(2/3)=8>>"),
    ("arithmetic", {}, "gsm8k-gpt3-24-175b_verification", "arithmetic_error",
     "$19.50 * (100/75) = $23"),
    ("repetition", {}, "gsm8k-gpt3-5-175b_finetuning", "repeated_step",
     "For the fifth glass Kylar needs to pay"),
    ("repetition", {}, "gsm8k-gpt3-150-6b_finetuning", "degenerate_run", "8181818181"),
    ("repetition", {}, "processbench-gsm8k-49", "repeated_phrase", "the price increases by 20%"),
    ("magnitude", {}, "gsm8k-gpt3-17-175b_finetuning", "implausible_magnitude", "35000"),
    ("negative_values", {}, "gsm8k-gpt3-16-175b_finetuning", "unexpected_negative", "-140"),
    ("negative_values", {}, "gsm8k-gpt3-30-175b_finetuning", "unexpected_negative", "-9.38"),
    ("hallucination", {}, "processbench-gsm8k-32", "hallucination_phrase",
     "the problem does not provide"),
    ("hallucination", {}, "processbench-math-21", "hallucination_phrase",
     "mistake in the problem"),
    ("reference_answer", {}, "gsm8k-gpt3-0-6b_verification", "wrong_answer", "224"),
    ("answer_marker", {}, "processbench-math-47", "duplicate_answer_marker", "\\boxed{0}"),
    ("answer_marker", {}, "processbench-gsm8k-208", "reasoning_after_answer",
     "This represents the total cost"),
    ("ungrounded_quantities", {}, "gsm8k-gpt3-27-6b_finetuning", "ungrounded_quantity", ".05"),
]


def first_fault(validator: str, params: dict[str, Any], ctx: ProblemContext,
                cuts: list[Checkpoint]) -> Verdict | None:
    session = build(validator, params).open(ctx)
    for cp in cuts:
        verdict = session.feed(cp)
        if not verdict.ok:
            return verdict
    return None


def streamed(text: str, separator: str, chunk: int) -> list[Checkpoint]:
    """The text in `chunk`-character pushes, with a fraction cut mid-way (a tail is judged)."""
    splitter = CheckpointSplitter(separator=separator, fractions=[0.5],
                                  expected_tokens=max(2, len(text) // chunk))
    out = [cp for i in range(0, len(text), chunk) for cp in splitter.push(text[i:i + chunk])]
    out.append(splitter.close())
    assert splitter.text == text
    return out


def assert_slices(verdict: Verdict, text: str) -> str:
    assert verdict.span is not None, f"{verdict.validator} ({verdict.reason}) has no span"
    start, end = verdict.span
    assert 0 <= start < end <= len(text), verdict.span
    return text[start:end]


@pytest.mark.parametrize("chunk", [9, 1_000_000])
@pytest.mark.parametrize(("validator", "params", "trace_id", "reason", "quote"), REAL,
                         ids=[f"{r[0]}-{r[3]}-{r[2]}" for r in REAL])
def test_fault_points_at_its_text(validator: str, params: dict[str, Any], trace_id: str,
                                  reason: str, quote: str, chunk: int) -> None:
    t, text = trace(trace_id), full_text(trace_id)
    ctx = ProblemContext(problem=t["problem"], reference_answer=t.get("reference_answer"))
    verdict = first_fault(validator, params, ctx, streamed(text, t["separator"], chunk))
    assert verdict is not None and verdict.reason == reason
    quoted = assert_slices(verdict, text)
    assert quote in quoted
    assert len(quoted) <= max(len(quote) * 4, 400), quoted  # the smallest text, not the step


def test_missing_answer_has_no_span() -> None:
    """No text explains an answer that was never written."""
    text = full_text("gsm8k-gpt3-48-175b_finetuning")
    verdict = first_fault("final_answer", {}, ProblemContext("p"), streamed(text, "\n", 64))
    assert verdict is not None and verdict.reason == "no_final_answer" and verdict.span is None


@pytest.mark.parametrize(("validator", "text", "reason", "quote"), [
    ("answer_marker", "The answer is 42.\nBecause 6 * 7 = 42 obviously.", "premature_answer_marker",
     "The answer is 42"),
    ("final_answer", "So 3 + 4 = 7.\n#### \\boxed{", "unparseable_answer", "\\boxed{"),
    ("json_prefix", '{"a": 1,\n\n "b": [1, 2,\n 3x]}', "invalid_json", "x"),
    ("arithmetic", "He had <<2+2=4>>4 apples, so 5 + 5 = approximately 17.\nok", "arithmetic_error",
     "5 + 5 = approximately 17"),
])
def test_synthetic_faults_point_at_their_text(validator: str, text: str, reason: str,
                                              quote: str) -> None:
    for chunk in (1, 5, len(text)):
        verdict = first_fault(validator, {}, ProblemContext("What is 3 + 4?"),
                              streamed(text, "\n", chunk))
        assert verdict is not None and verdict.reason == reason
        assert assert_slices(verdict, text) == quote


@pytest.mark.parametrize("validator", sorted(v.name for v in BUILTIN_VALIDATORS
                                             if v.name != "confidence"))
@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_hostile_spans_stay_in_the_text(validator: str, hostile: str) -> None:
    text = HOSTILE[hostile]
    ctx = ProblemContext(problem="What is 3 + 4?", reference_answer="7", expected_tokens=2000)
    session = build(validator).open(ctx)
    for cp in checkpoints(text):
        verdict = session.feed(cp)
        if verdict.span is not None:
            assert_slices(verdict, text)


@pytest.mark.parametrize(("text", "quote"), [
    # Characters whose case-folding differs (İ lowers to two characters) before the phrase.
    ("İİİ ıı ſ we get 4. I apologize for that.\nnext", "I apologize"),
    ("\x00\x00 \udcff then I'M SORRY, BUT no.\n", "I'M SORRY, BUT"),
    ("😀" * 50 + " as an AI I cannot.\n", "as an AI"),
])
def test_phrase_span_survives_odd_characters(text: str, quote: str) -> None:
    verdict = first_fault("hallucination", {}, ProblemContext("p"), streamed(text, "\n", 3))
    assert verdict is not None and assert_slices(verdict, text) == quote


def test_runaway_line_run_is_located_in_its_piece() -> None:
    """A 50,000-character line is judged in bounded pieces; the run is found where it is."""
    text = "Step one is fine.\n" + "x" * 30_000 + " 12" * 20_000 + "\nend"
    verdict = first_fault("repetition", {}, ProblemContext("p"), streamed(text, "\n", 4000))
    assert verdict is not None and verdict.reason == "degenerate_run"
    quoted = assert_slices(verdict, text)
    assert set(quoted) == {"x"} and verdict.span[0] == len("Step one is fine.\n")
