"""A generation far longer than expected: reject once it passes k times the expected length.

A model that loops until max_tokens is the most expensive failure; this is the backstop for
loops the repetition check does not recognise. Skipped when the stage has no expected length.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.tuning import Tunable


class LengthBudgetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: float = Field(3.0, gt=0, description="Reject when tokens so far exceed k x expected_tokens.")


class LengthBudget(Validator):
    name = "length_budget"
    reason_codes = frozenset({"over_length_budget"})
    description = "Rejects a generation once it exceeds k times the expected number of tokens."
    Params = LengthBudgetParams
    # Multiples of the expected length: below 1.5 a long correct solution is cut.
    tunable = Tunable("k", (1.5, 2.0, 3.0, 4.0, 6.0))

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, LengthBudgetParams)
        budget = self.params.k * ctx.expected_tokens if ctx.expected_tokens else None
        return _LengthBudgetSession(self, budget)


class _LengthBudgetSession(ValidatorSession):
    def __init__(self, validator: LengthBudget, budget: float | None) -> None:
        self.v = validator
        self.budget = budget
        self.done = False  # one fault per sample

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.done or self.budget is None or checkpoint.tokens_so_far <= self.budget:
            return self.v.ok()
        self.done = True
        last = checkpoint.steps[-1].index if checkpoint.steps else None
        return self.v.fault("over_length_budget",
                            f"{checkpoint.tokens_so_far} tokens exceed the budget of "
                            f"{self.budget:.0f}", step_index=last)
