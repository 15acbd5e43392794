"""A custom validator that keeps the contract: pure, incremental (each step is read once, in
linear time) and bounded; plus one with a bug, to show the policy contains it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict


class ShoutingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_letters: int = Field(12, ge=1, description="Shorter steps are not judged.")


class NoShouting(Validator):
    name = "no_shouting"
    description = "A step written entirely in capitals is shouting, not reasoning."
    reason_codes = frozenset({"shouting"})  # every code its faults carry (the quality gate)
    Params = ShoutingParams

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, ShoutingParams)
        return _ShoutingSession(self, self.params.min_letters)


class _ShoutingSession(ValidatorSession):
    def __init__(self, validator: NoShouting, min_letters: int) -> None:
        self.v = validator
        self.min_letters = min_letters

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        for step in checkpoint.steps:
            letters = [ch for ch in step.text if ch.isalpha()]
            if len(letters) >= self.min_letters and all(ch.isupper() for ch in letters):
                return self.v.fault("shouting", f"step {step.index} is all capitals",
                                    step_index=step.index,
                                    span=(step.start, step.start + len(step.text)))
        return self.v.ok()


class RaisesInFeed(Validator):
    """Breaks the 'feed never raises' rule on every checkpoint."""

    name = "raises_in_feed"
    description = "A buggy validator."

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _RaisingSession()


class _RaisingSession(ValidatorSession):
    def feed(self, checkpoint: Checkpoint) -> Verdict:
        raise RuntimeError("bug in a custom validator")
