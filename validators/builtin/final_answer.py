"""S3 convergence: the solution ends with a final answer that parses.

As soon as a complete step holds a final-answer marker whose answer normalises, the verdict
carries `final_answer`, so the policy can stop the stream early (the rest would be a restatement,
or tokens the sample does not need). At the `final` checkpoint a stream that never wrote an
answer — typically one cut at max_tokens in the middle of a loop — is a fault.

Spans: `unparseable_answer` points at the marker that did not parse; `no_final_answer` has no
span (no text explains an answer that is missing; the stored stage text shows how it ended).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.lib.answers import (
    AnswerMatch,
    AnswerReader,
    find_concluding_answer,
    find_stated_answer,
)
from validators.lib.verdicts import ok_verdict

MarkerKind = Literal["gsm8k", "boxed", "line", "phrase"]
ALL_KINDS: list[MarkerKind] = ["gsm8k", "boxed", "line", "phrase"]


class FinalAnswerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[MarkerKind] = Field(
        default_factory=lambda: list(ALL_KINDS), min_length=1,
        description="Marker formats that count as a final answer: '#### 72', '\\boxed{72}', "
                    "'Answer: 72' (or an answer heading), the 'answer is' phrasings "
                    "(validators.lib.answer_markers.MARKERS).")
    accept_conclusion: bool = Field(
        True, description="At the end, accept an answer stated without a marker in one of the "
                          "last two sentences of a finished text ('Therefore, ... is 20.', "
                          "'Elvis is 54 miles east of his house.').")


class FinalAnswer(Validator):
    name = "final_answer"
    reason_codes = frozenset({"no_final_answer", "unparseable_answer"})
    description = ("S3 convergence: reports the final answer once a complete step holds one (for "
                   "early exit); at the end of the stream, faults a missing or unparseable answer.")
    Params = FinalAnswerParams

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, FinalAnswerParams)
        return _FinalAnswerSession(self, self.params)


class _FinalAnswerSession(ValidatorSession):
    def __init__(self, validator: FinalAnswer, params: FinalAnswerParams) -> None:
        self.v = validator
        self.kinds = frozenset(params.kinds)
        self.accept_conclusion = params.accept_conclusion
        self.answer: str | None = None  # the last normalised answer seen
        self.answer_step: int | None = None
        self.reported = False
        # A marker that did not parse: its step's index, its step's start, the marker.
        self.unparseable: tuple[int, int, AnswerMatch] | None = None
        self.last_step_text = ""
        self.reader = AnswerReader()
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        before = self.answer_step
        for step in checkpoint.steps:
            self.last_step_text = step.text
            for match in self.reader.read(step.text):
                if match.kind not in self.kinds:
                    continue
                normalized = match.normalized
                if normalized is None:
                    self.unparseable = (step.index, step.start, match)
                    continue
                self.answer, self.answer_step = normalized, step.index
        if not self.reported and self.answer_step != before:
            # The text so far ends with this answer: the last marker is the final answer.
            self.reported = True
            return self.v.ok(final_answer=self.answer, step_index=self.answer_step,
                             detail="complete final answer written")
        if checkpoint.final:
            return self._judge_end()
        return self.ok

    def _judge_end(self) -> Verdict:
        if self.answer is not None:
            return self.v.ok(final_answer=self.answer)
        if self.accept_conclusion and self.unparseable is None:
            concluded = (find_concluding_answer(self.last_step_text)
                         or find_stated_answer(self.last_step_text))
            if concluded is not None:
                return self.v.ok(final_answer=concluded.normalized,
                                 detail="no marker; answer read from the concluding sentence")
        if self.unparseable is not None:
            step_index, start, match = self.unparseable
            shown = match.raw[:80] if match.complete else "an unclosed \\boxed{"
            return self.v.fault("unparseable_answer",
                                f"final-answer marker ({match.kind}) with no usable answer: "
                                f"{shown!r}", step_index=step_index,
                                span=(start + match.start, start + match.end))
        return self.v.fault("no_final_answer",
                            "the stream ended without a final answer (cut at the length limit?)")
