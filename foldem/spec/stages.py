"""A job's stages: what each stage asks (its template), where its text is judged (checkpoints),
by which validators, and the optional step judge that scores partial solutions while they
stream.
"""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from foldem.spec.sections import _Strict

TEMPLATE_FIELDS = {"problem", "seed", "reference", "solution"}
STEP_JUDGE_FIELDS = {"problem", "partial"}

# A rubric any instruct model can follow; the reply is parsed like the S4 judge's (a 1-5 score).
DEFAULT_STEP_JUDGE_TEMPLATE = (
    "Problem:\n{problem}\n\nPartial solution (it may stop mid-way):\n{partial}\n\n"
    "Is every step of this partial solution correct so far (calculations, logic, use of the "
    "problem's facts)? Do not judge whether it is finished. Reply with 'Score: N' first, "
    "N from 1 (a step is wrong) to 5 (every step is right), then one sentence why.")


def _template_fields(template: str, allowed: set[str]) -> str:
    """The template, or a ValueError naming what is wrong with its {fields}."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(
            f"bad template: {exc} (write literal braces as {{{{ and }}}})") from None
    bad = names - allowed
    if bad:
        raise ValueError(f"unknown template field(s) {sorted(bad)}; allowed: {sorted(allowed)}")
    return template


class Checkpoints(_Strict):
    separator: str = Field("\n", min_length=1, description="Step separator in the stream.")
    every_step: bool = Field(True, description="Judge at every step boundary.")
    fractions: list[float] = Field(default_factory=list, description="Also judge when these "
                                   "fractions of expected_tokens have streamed (paper: [0.5]).")
    max_step_tokens: int | None = Field(
        256, ge=8, le=1_000_000, description="Also judge a step that has run this many tokens "
        "without a separator (a runaway line), with the line so far; null: only at separators.")

    @field_validator("separator", mode="before")
    @classmethod
    def _unescape(cls, v: Any) -> Any:
        return v.encode().decode("unicode_escape") if isinstance(v, str) and "\\" in v else v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("fractions must lie strictly between 0 and 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _some(self) -> Checkpoints:
        if not self.every_step and not self.fractions:
            raise ValueError("set every_step: true or give at least one fraction")
        return self


class ValidatorRef(_Strict):
    name: str = Field(description="Registered name, entry-point name or dotted path.")
    params: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["hard", "soft"] = Field("hard", description="hard: any fault rejects; "
                                          "soft: the score multiplies into the utility.")


class StepJudge(_Strict):
    """A model judges the partial solution at step boundaries, while the solution streams on.

    Each judgement is a call of its own (in the ledger with call_kind 'step_judge'); the stream
    is not paused for it, so a rejection lands a judge's latency after the step it judged.
    Every judged prefix is judged the same way in flight and after the fact, so the kept set
    equals generate-then-filter with the same judge (for a deterministic judge)."""

    endpoint: str | list[str] = Field(
        description="Name of the endpoint that serves the judge model, or a list of names to "
        "spread the judge calls over (as a stage's `endpoint`).")
    system: str | None = Field(None, description="System message of the judge.")
    template: str = Field(DEFAULT_STEP_JUDGE_TEMPLATE, description="Judge's user message; "
                          "fields: {problem}, {partial} (the solution up to the last step).")
    every_steps: int = Field(1, ge=1, description="Judge after every N complete steps.")
    max_calls: int = Field(12, ge=1, le=1000, description="At most this many judgements per "
                           "sample (a stream of many short lines must not cost a call each).")
    accept_at: int = Field(3, ge=1, le=5, description="Accept scores >= this; a reply without "
                           "a 1-5 score rejects (reason judge_unparseable).")
    max_tokens: int = Field(64, ge=1, le=4096, description="Length cap of a judge reply "
                            "(reading stops anyway once the score line is complete).")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return _template_fields(v, STEP_JUDGE_FIELDS)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_list(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"give one or more distinct endpoint names, got {v}")
        return v

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        return (self.endpoint,) if isinstance(self.endpoint, str) else tuple(self.endpoint)


class Stage(_Strict):
    name: str
    kind: Literal["problem", "solve", "judge"] = Field(
        "solve", description="problem: S1, generate a problem from a seed; solve: answer it; "
        "judge: S4, a model scores the solution 1-5 ({solution} in the template).")
    endpoint: str | list[str] | None = Field(
        None, description="Endpoint name, or a list of names to spread the calls over (by "
        "weight and load, away from failing ones); default: the first endpoint.")
    system: str | None = Field(None, description="System message.")
    template: str = Field(description="User message; fields: {problem}, {seed}, {reference}.")
    checkpoints: Checkpoints = Field(default_factory=lambda: Checkpoints())
    validators: list[ValidatorRef] = Field(default_factory=list)
    threshold: float = Field(0.5, ge=0, le=1, description="Reject when the product of soft "
                             "scores falls below this.")
    early_exit: bool = Field(True, description="Stop the stream once a complete final answer "
                             "has been written. (Stopping a prompt's other samples once k agree "
                             "is the job-level `early_exit: {agreement: k}`.)")
    expected_tokens: int | None = Field(None, ge=1, description="Expected completion length; "
                                        "used by fraction checkpoints and tokens-saved figures.")
    max_tokens: int | None = Field(None, ge=1, description="Overrides sampling.max_tokens.")
    accept_at: int = Field(3, ge=1, le=5, description="judge stages: accept scores >= this "
                           "(the paper: 3).")
    step_judge: StepJudge | None = Field(
        None, description="solve stages: also have a judge model score the partial solution "
        "at step checkpoints while it streams, and reject (abort) on a low score.")
    max_false_rejection: float | None = Field(
        None, gt=0, lt=1, description="The false-rejection budget the stage's validators were "
        "calibrated to: the largest share of good samples (no wrong step, or a correct answer) "
        "they may reject. Recorded in the run's spec snapshot; with `calibration`, checked.")
    calibration: str | None = Field(
        None, description="Labelled traces (JSONL, the shared trace format) on which `foldem "
        "run` checks, before any call, that the validators keep within max_false_rejection; "
        "relative to the spec, or data://...")

    @model_validator(mode="after")
    def _budget(self) -> Stage:
        if self.calibration is not None and self.max_false_rejection is None:
            raise ValueError("calibration needs max_false_rejection (the budget to check)")
        if self.calibration is not None and self.kind != "solve":
            raise ValueError("calibration: labelled traces are solutions, so only a 'solve' "
                             f"stage can be calibrated on them (this one is {self.kind!r})")
        return self

    @field_validator("early_exit", mode="before")
    @classmethod
    def _early_exit_is_a_switch(cls, v: Any) -> Any:
        if isinstance(v, dict):
            raise ValueError("a stage's early_exit is true or false (stop the stream at a "
                             "complete final answer); agreement across a prompt's samples is "
                             "set for the whole job: move it to the top level as "
                             "`early_exit: {agreement: k}`")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one endpoint name (or leave endpoint out)")
            if len(set(v)) != len(v):
                raise ValueError(f"endpoint names repeat: {v}")
        return v

    @property
    def endpoint_names(self) -> list[str] | None:
        """The endpoint names this stage may call, in the spec's order; None: the default."""
        return [self.endpoint] if isinstance(self.endpoint, str) else self.endpoint

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return _template_fields(v, TEMPLATE_FIELDS)
