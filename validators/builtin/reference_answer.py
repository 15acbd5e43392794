"""The final answer differs from the known reference answer.

Judged the moment the first final answer is written in a complete step (the answer the policy
would accept on early exit), so a wrong answer is rejected before anything else is generated.
Without a reference answer (or one that does not normalise) the check is skipped silently.
Answers are compared exactly where both are plain numbers or words, else with math-verify
(validators.lib.answers.answers_match); an answer that cannot be compared within bounds is not
rejected. A fault's span is the marker and the answer it writes (`#### 12`, `\\boxed{12}`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.lib.answer_equivalence import warm_up
from validators.lib.answers import (
    AnswerMatch,
    AnswerReader,
    answers_match,
    find_concluding_answer,
    normalize_answer,
)
from validators.lib.verdicts import ok_verdict


class ReferenceAnswerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_conclusion: bool = Field(
        False, description="At the end of a stream with no marker, compare the answer read from "
                           "the concluding sentence. Off by default: that reading is a guess, "
                           "and a wrong guess would reject a correct solution.")


class ReferenceAnswer(Validator):
    name = "reference_answer"
    reason_codes = frozenset({"wrong_answer"})
    description = "Rejects as soon as a final answer is written that differs from the reference."
    Params = ReferenceAnswerParams

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        warm_up()  # once per process, when configured: not on a sample's time

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, ReferenceAnswerParams)
        reference = ctx.reference_answer
        if reference is not None and normalize_answer(reference) is None:
            reference = None
        return _ReferenceSession(self, reference, self.params.use_conclusion)


class _ReferenceSession(ValidatorSession):
    def __init__(self, validator: ReferenceAnswer, reference: str | None,
                 use_conclusion: bool) -> None:
        self.v = validator
        self.reference = reference
        self.use_conclusion = use_conclusion
        self.judged = reference is None  # nothing to do without a reference
        self.last_step_text = ""
        self.last_step_start = 0
        self.reader = AnswerReader()
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.judged:
            return self.ok
        for step in checkpoint.steps:
            self.last_step_text, self.last_step_start = step.text, step.start
            answers = [m for m in self.reader.read(step.text) if m.normalized is not None]
            if answers:  # the step's last marker is its answer (as final_answer reports it)
                self.judged = True
                return self._compare(answers[-1], step.index, step.start)
        if checkpoint.final and self.use_conclusion:
            self.judged = True
            concluded = find_concluding_answer(self.last_step_text)
            if concluded is not None:
                return self._compare(concluded, None, self.last_step_start)
        return self.ok

    def _compare(self, match: AnswerMatch, step_index: int | None, start: int) -> Verdict:
        assert self.reference is not None
        answer = match.raw
        if answers_match(answer, self.reference) is not False:
            return self.ok  # the same answer, or one that cannot be compared within bounds
        return self.v.fault("wrong_answer",
                            f"final answer {normalize_answer(answer)!r} differs from the "
                            f"reference {normalize_answer(self.reference)!r}",
                            step_index=step_index, span=(start + match.start, start + match.end))
