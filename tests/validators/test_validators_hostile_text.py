"""Hostile text: every answer/text validator judges (or skips) each checkpoint quickly and never
raises. The stated bound is 50 ms per checkpoint; the assertion allows a generous factor for
slow CI machines, so it only catches a real blow-up (quadratic work, regex backtracking)."""

from __future__ import annotations

import random
import time

import pytest

from validators.base import Checkpoint, ProblemContext, Verdict
from validators.checkpoints import CheckpointSplitter
from validators.registry import build

VALIDATORS = ["final_answer", "answer_marker", "hallucination", "well_posed", "repetition",
              "reference_answer", "length_budget"]
BOUND_MS = 50 * 5
CTX = ProblemContext(problem="What is 3 + 4?", reference_answer="7", expected_tokens=200)

_rng = random.Random(7)
# 20,000 characters of distinct words: only the repetition of the whole step is a loop.
_STEP_20K = " ".join(f"w{_rng.randrange(10**6)}" for _ in range(3000))[:20_000]

HOSTILE: dict[str, str] = {
    "one_megabyte_line": "x" * 1_000_000,
    "one_megabyte_of_words": "lorem ipsum dolor sit " * 45_000,
    "boxed_nested_1000_unclosed": "\\boxed{" * 1000,
    "boxed_nested_1000_closed": "\\boxed{" * 1000 + "7" + "}" * 1000,
    "boxed_flood": "\\boxed{1} \\boxed{2} " * 1000,
    "empty_boxes": "\\boxed{}" * 2500,
    "gsm8k_marker_lines": "#### 5\n" * 3000,
    "answer_lines": "A: 1\nAnswer: 2\n" * 1000,
    "answer_phrases": "the final answer is 5. " * 1000,
    "dollars": "$" * 20_000,
    "open_parens": "\\(" * 10_000,
    "braces": "{" * 20_000,
    "bold_markers": "**" * 10_000,
    "unicode_lookalikes": ("Ａｎｓｗｅｒ: ７２ \u0410nswer: 5 the \u0430nswer is ٧٢ "
                           "\\b\u03bfxed{1} \u0391s \u0430n \u0391I ") * 300,
    "control_characters": "\x00\x1b[31m\x07\r\x0b\x0c\u200b\u202e\ufeff" * 2500,
    "step_of_20000_chars_repeated": (_STEP_20K + "\n") * 6,
    "digits": "1" * 200_000,
    "periodic_units": "ab1" * 70_000,
    "random_single_letters": " ".join(_rng.choice("abcdefghijklmnopqrstuvwxyz")
                                      for _ in range(200_000)),
    "surrogate_escapes": "\udcff\udc80 answer is \udcfe" * 2000,
}


def checkpoints(text: str) -> list[Checkpoint]:
    """Cut hostile text as the stream would: 4,000-character chunks of 1,000 'tokens', a
    fraction checkpoint at half the expected length (so a tail is judged too), then close."""
    splitter = CheckpointSplitter(separator="\n", fractions=[0.5], expected_tokens=2000)
    out: list[Checkpoint] = []
    for start in range(0, len(text), 4000):
        out += splitter.push(text[start:start + 4000], 1000)
    out.append(splitter.close())
    return out


_CUT = {name: checkpoints(text) for name, text in HOSTILE.items()}


@pytest.mark.parametrize("validator", VALIDATORS)
@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_never_raises_and_stays_fast(validator: str, hostile: str) -> None:
    session = build(validator).open(CTX)
    slowest = 0.0
    for cp in _CUT[hostile]:
        started = time.perf_counter()
        verdict = session.feed(cp)
        slowest = max(slowest, (time.perf_counter() - started) * 1000)
        assert isinstance(verdict, Verdict) and verdict.validator == validator
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.ok or (verdict.reason and verdict.reason.islower())
        assert len(verdict.detail) <= 500
    assert slowest < BOUND_MS, f"{validator} took {slowest:.0f} ms on one checkpoint"


@pytest.mark.parametrize(
    ("hostile", "validator", "reason"),
    [
        ("boxed_nested_1000_unclosed", "final_answer", "unparseable_answer"),
        ("one_megabyte_line", "final_answer", "no_final_answer"),
        ("step_of_20000_chars_repeated", "repetition", "repeated_step"),
        ("one_megabyte_of_words", "repetition", "repeated_phrase"),
        ("digits", "repetition", "degenerate_run"),
        ("one_megabyte_line", "length_budget", "over_length_budget"),
        ("empty_boxes", "final_answer", "unparseable_answer"),
    ],
)
def test_hostile_text_is_judged_sensibly(hostile: str, validator: str, reason: str) -> None:
    session = build(validator).open(CTX)
    reasons = [session.feed(cp).reason for cp in _CUT[hostile]]
    assert reason in reasons


def test_lookalike_letters_are_not_markers() -> None:
    """Fullwidth 'Ａｎｓｗｅｒ' and Cyrillic 'А' are not the ASCII markers."""
    session = build("final_answer", {"accept_conclusion": False}).open(CTX)
    reasons = [session.feed(cp) for cp in _CUT["unicode_lookalikes"]]
    assert all(v.final_answer is None for v in reasons)
