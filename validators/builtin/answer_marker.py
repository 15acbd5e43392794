"""A final-answer marker in the wrong place: before the reasoning, or a second, different one.

Definitions (chosen on recorded traces so that they fire on real faults only):

- duplicate: a second marker whose answer differs from the first one's after normalisation
  ("\\boxed{4 \\log 1} = \\boxed{0}"). Restating the same answer ("... is \\boxed{7}. The answer
  is: \\boxed{7}") is common in correct solutions and is not a fault.
- premature, answer first: the first marker comes before any reasoning — fewer than
  `min_words_before` words and no digit written before it ("The answer is 42." as the opening).
  Short correct solutions exist (a dozen words), so the bar is "no reasoning at all".
- premature, reasoning after the answer: after the first marker, at least `max_words_after`
  words follow in complete steps without restating the answer — the model answered, then kept
  working. (Only seen when the policy does not stop at the first answer.)
- premature by position (off unless `min_fraction` is set): the marker arrives before
  `min_fraction` of ctx.expected_tokens. Expected length is per stage, not per problem, so
  this fires on short correct solutions; measure before turning it on.

Spans: the premature or the second marker itself; for reasoning after the answer, the text from
the end of the (last restated) marker through the step where the words ran out.
"""

from __future__ import annotations

import re
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from validators.base import (
    Checkpoint,
    ProblemContext,
    Step,
    Validator,
    ValidatorSession,
    Verdict,
)
from validators.lib.answers import AnswerMatch, AnswerReader

_DIGIT = re.compile(r"\d")


class AnswerMarkerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duplicate: bool = Field(True, description="Fault a second marker with a different answer.")
    min_words_before: int = Field(
        5, ge=0, description="Fewer words than this, and no digit, before the first marker: "
                             "the answer came before any reasoning. 0 turns the check off.")
    max_words_after: int | None = Field(
        40, ge=1, description="This many words of further text after the first marker, "
                              "without restating the answer, is reasoning after the answer. "
                              "None turns the check off.")
    min_fraction: float | None = Field(
        None, gt=0, lt=1, description="A marker before this fraction of expected_tokens is "
                                      "premature (off by default; see the module doc).")
    fault_score: float = Field(
        0.0, ge=0, lt=1, description="Score of a fault. In soft mode a score above the stage "
                                     "threshold lowers the utility without rejecting alone.")


class AnswerMarker(Validator):
    name = "answer_marker"
    reason_codes = frozenset({"duplicate_answer_marker", "premature_answer_marker",
                              "reasoning_after_answer"})
    description = ("A final-answer marker before the reasoning, reasoning continued after it, or "
                   "a second marker with a different answer.")
    Params = AnswerMarkerParams

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, AnswerMarkerParams)
        return _AnswerMarkerSession(self, self.params)


class _AnswerMarkerSession(ValidatorSession):
    def __init__(self, validator: AnswerMarker, params: AnswerMarkerParams) -> None:
        self.v = validator
        self.p = params
        self.words_before = 0  # words written before the first marker
        self.digit_before = False
        self.first: str | None = None  # normalised answer of the first marker
        self.reader = AnswerReader()
        self.first_step: int | None = None
        self.words_after = 0  # words after the first marker since it was last restated
        self.after_from = 0  # where those words start in the stage text
        self.done = False  # a fault was reported: stay quiet afterwards

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.done:
            return self.v.ok()
        for step in checkpoint.steps:
            verdict = self._step(step, checkpoint)
            if verdict is not None:
                self.done = True
                return replace(verdict, score=self.p.fault_score)
        return self.v.ok()

    def _step(self, step: Step, cp: Checkpoint) -> Verdict | None:
        text = step.text
        markers = [m for m in self.reader.read(text) if m.normalized is not None]
        if self.first is None:
            if not markers:
                self.words_before += len(text.split())
                self.digit_before = self.digit_before or bool(_DIGIT.search(text))
                return None
            return self._first_marker(step, markers, cp)
        return self._after_first(step, markers, 0)

    def _first_marker(self, step: Step, markers: list[AnswerMatch],
                      cp: Checkpoint) -> Verdict | None:
        index, text = step.index, step.text
        head = text[:markers[0].start]
        span = (step.start + markers[0].start, step.start + markers[0].end)
        words = self.words_before + len(head.split())
        digit = self.digit_before or bool(_DIGIT.search(head))
        self.first, self.first_step = markers[0].normalized, index
        if self.p.min_words_before and words < self.p.min_words_before and not digit:
            return self.v.fault("premature_answer_marker",
                                f"final answer {self.first!r} written before any reasoning "
                                f"({words} words before it)", step_index=index, span=span)
        if (self.p.min_fraction is not None and cp.fraction is not None
                and cp.fraction < self.p.min_fraction):
            return self.v.fault("premature_answer_marker",
                                f"final answer at {cp.fraction:.0%} of the expected length",
                                step_index=index, span=span)
        self.after_from = span[1]
        return self._after_first(step, markers[1:], markers[0].end)

    def _after_first(self, step: Step, markers: list[AnswerMatch],
                     start: int) -> Verdict | None:
        """Judge `step.text[start:]`, which follows the first marker; `markers` lie in it."""
        index, text = step.index, step.text
        for m in markers:
            if self.p.duplicate and m.normalized != self.first:
                return self.v.fault("duplicate_answer_marker",
                                    f"second final answer {m.normalized!r} differs from the "
                                    f"first {self.first!r}", step_index=index,
                                    span=(step.start + m.start, step.start + m.end))
        if markers:  # restated: what came before it was part of the conclusion
            self.words_after = len(text[markers[-1].end:].split())
            self.after_from = step.start + markers[-1].end
        else:
            self.words_after += len(text[start:].split())
        if self.p.max_words_after is not None and self.words_after >= self.p.max_words_after:
            return self.v.fault("reasoning_after_answer",
                                f"{self.words_after} words of further text after the final "
                                f"answer {self.first!r} (step {self.first_step})",
                                step_index=index,
                                span=(self.after_from, step.start + len(text)))
        return None
