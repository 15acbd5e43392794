"""Ungrounded quantities: an operand of a computation that comes from nowhere.

A number used as an operand on the left side of an equation (found as the arithmetic validator
finds equations: calculator annotations `<<a*b=c>>`, prose `a op b = c`, LaTeX) must be
*grounded*: stated in the problem (digits, number words, percents as both 20 and 0.2 and their
complements 0.8 / 1.2, ordinal fractions "a third"), derived earlier in the solution (a value an
earlier equation produced, or any number written earlier), or a common constant (scales, clock
and calendar, pi; unit conversions once their unit is mentioned; all configurable). A number that
is none of these is often a misread or invented quantity.

State is kept per sample and grows step by step: a step's operands are judged against what was
grounded before them, then every number the step writes and every value its equations produce
is added. Rounded operands (`3.33` for 10/3, `4` buses for 3.5) count as grounded.

Figures on the shared traces (each trace streamed step by step; docs/VALIDATORS.md): on grade-
school word problems it fired on 0 of 193 clean ProcessBench-GSM8K traces and on 1 of 1,008
GPT-3 solutions with a correct answer (2.8% of the wrong ones, at 0.62 of the text). Competition
math brings in numbers from knowledge (8 x 7 x 6, 180 degrees): 34 of 406 clean MATH traces
(8.4%). Hence not a default validator: opt in for word problems (soft, score 0.7, is the
cautious setting: it rejects on a second firing at threshold 0.5).

A fault's span is the first ungrounded operand, where its equation writes it.
"""

from __future__ import annotations

import re
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field, field_validator

from validators.base import (
    Checkpoint,
    ProblemContext,
    Step,
    Validator,
    ValidatorSession,
    Verdict,
)
from validators.lib.operands import (
    Computation,
    Operand,
    computations,
    problem_values,
    stated_numbers,
)

#: Identities and halving, percent and metric scales (also as factors: `80 * .01`), clock and
#: calendar, pi as written.
DEFAULT_CONSTANTS: tuple[float, ...] = (
    0, 1, 2, 0.5, 10, 100, 1000, 0.1, 0.01, 0.001, 7, 12, 24, 52, 60, 365, 366, 3600,
    3.14, 3.1416, 3.14159)

#: Conversions grounded once a unit word (a regex stem, matched at a word start) appears in the
#: problem or the solution: 16 is free in a problem about pounds, not in one about apples.
DEFAULT_UNIT_CONSTANTS: dict[str, list[float]] = {
    "week": [5, 2], "month": [28, 30, 31, 4], "pound|ounce|lbs?\\b|oz\\b": [16],
    "yard": [3, 36], "f(?:oo|ee)t\\b|inch": [144], "mile": [5280, 1760, 1.6, 1.609],
    "ton": [2000], "gallon": [4, 8, 16, 128], "quart": [4, 32], "pint": [8, 16], "cup": [8, 16],
    "cent|penn": [0.01], "nickel": [5, 0.05], "dime": [0.1], "quarter": [25, 0.25, 4],
    "degree|angle|triangle|circle|clock": [90, 180, 360], "celsius|fahrenheit": [32, 1.8, 5, 9],
    "decade": [10], "centur": [100], "byte|bit\\b": [8, 1024],
}

_ROUNDED_PLACES = 3  # an operand may be a value rounded, floored or ceiled to 0..3 decimals
_MAX_KNOWN = 50_000  # bound on state; past it the session stops judging (never guesses)


class UngroundedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constants: list[float] = Field(
        default_factory=lambda: list(DEFAULT_CONSTANTS),
        description="numbers any solution may use without a source")
    extra_constants: list[float] = Field(default_factory=list, description="added to constants")
    unit_constants: dict[str, list[float]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_UNIT_CONSTANTS.items()},
        description="unit word (regex stem) -> numbers grounded once the word appears")
    free_integers_up_to: int = Field(
        default=0, ge=0, le=1000,
        description="integers 0..N are always grounded (counting: 'Tom and 2 friends' -> 3)")
    ground_same_step_text: bool = Field(
        default=True, description="numbers written earlier in the same step ground operands")
    max_equations_per_step: int = Field(default=100, ge=1, le=10_000)
    score_on_fault: float = Field(
        default=0.7, ge=0, lt=1,
        description="verdict score when it fires (below 1; matters in soft mode)")

    @field_validator("unit_constants")
    @classmethod
    def _stems_compile(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for stem in v:
            if not stem or len(stem) > 200:
                raise ValueError(f"unit word {stem[:40]!r}: 1 to 200 characters")
            try:
                named = re.compile(stem).groupindex
            except re.error as exc:
                raise ValueError(f"unit word {stem!r} is not a valid regex: {exc}") from None
            if named:
                raise ValueError(f"unit word {stem!r}: named groups are not allowed")
        return v


class Known:
    """A set of grounded values that also answers for their roundings at 0..3 decimals."""

    __slots__ = ("exact", "rounded")

    def __init__(self) -> None:
        self.exact: set[Fraction] = set()
        self.rounded: set[tuple[int, int]] = set()  # (places, floor or ceil of value * 10^places)

    def __len__(self) -> int:
        return len(self.exact)

    def add(self, value: Fraction) -> None:
        value = abs(value)
        self.exact.add(value)
        if value.denominator != 1:
            for places in range(_ROUNDED_PLACES + 1):
                down, rest = divmod(value.numerator * 10 ** places, value.denominator)
                self.rounded |= {(places, down), (places, down + 1)} if rest else {(places, down)}

    def has(self, value: Fraction, places: int) -> bool:
        if value in self.exact:
            return True
        scaled = value * 10 ** places
        return (places <= _ROUNDED_PLACES and scaled.denominator == 1
                and (places, scaled.numerator) in self.rounded)


class _UngroundedSession(ValidatorSession):
    def __init__(self, validator: UngroundedValidator, problem: str) -> None:
        params = validator.params
        assert isinstance(params, UngroundedParams)
        self.v, self.p = validator, params
        self.known = Known()
        for value in problem_values(problem):
            self.known.add(value)
        self.units_unseen = set(validator.unit_values)
        self._ground_units(problem)

    def _ground_units(self, text: str) -> None:
        for m in self.v.unit_words.finditer(text):
            if m.lastgroup in self.units_unseen:
                self.units_unseen.discard(m.lastgroup)
                for value in self.v.unit_values[m.lastgroup]:
                    self.known.add(value)

    def _grounded(self, operand: Operand, local: Known) -> bool:
        def known(value: Fraction, places: int) -> bool:
            return (self.known.has(value, places) or local.has(value, places)
                    or self.v.constants.has(value, places)
                    or (value.denominator == 1 and value <= self.p.free_integers_up_to))

        return any(known(v, p) for v, p in operand.values) or bool(operand.parts) and all(
            known(part, 0) for part in operand.parts)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        faults: list[tuple[Step, Operand, Computation]] = []
        for step in checkpoint.steps:
            if len(self.known) >= _MAX_KNOWN:
                break  # a degenerate text with tens of thousands of numbers: stop judging
            if self.units_unseen:
                self._ground_units(step.text)
            found = self._judge_step(step.text)
            if found is not None:
                faults.append((step, *found))
        if not faults:
            return self.v.ok()
        step, operand, comp = faults[0]
        at = step.text.find(operand.text, comp.start) if operand.text else -1
        more = f" (and in {len(faults) - 1} later step(s))" if len(faults) > 1 else ""
        return self.v.fault(
            "ungrounded_quantity",
            f"{operand.text} in {comp.written[:120]!r} is not in the problem, not derived "
            f"earlier and not a common constant{more}", step_index=step.index,
            score=self.p.score_on_fault,
            span=(step.start + at, step.start + at + len(operand.text)) if at >= 0 else None)

    def _judge_step(self, text: str) -> tuple[Operand, Computation] | None:
        """Judge the step's operands in order of position, then ground all it writes."""
        p = self.p
        fault: tuple[Operand, Computation] | None = None
        local = Known()  # grounded for the rest of this step only
        derived: set[Fraction] = set()  # results, grounded for later steps too
        stated = stated_numbers(text)
        before = 0  # stated numbers before this position are in `local`
        for comp in computations(text, p.max_equations_per_step):
            while p.ground_same_step_text and before < len(stated) and (
                    stated[before][0] < comp.start):
                local.add(stated[before][1])
                before += 1
            if fault is None:
                fault = next(((o, comp) for o in comp.operands if not self._grounded(o, local)),
                             None)
            for value in comp.results:
                local.add(value)
                derived.add(value)
            for value in comp.partials():  # only for the rest of this step's chain
                local.add(value)
        for value in (*(value for _, value in stated), *derived):
            if value not in self.known.exact:
                self.known.add(value)
        return fault


class UngroundedValidator(Validator):
    name = "ungrounded_quantities"
    description = ("An operand of a computation that is neither in the problem, nor derived "
                   "earlier in the solution, nor a common constant (a misread or invented "
                   "quantity). Noisy on competition math: meant for word problems, soft mode.")
    Params = UngroundedParams
    stage_kinds = frozenset({"solve"})
    reason_codes = frozenset({"ungrounded_quantity"})

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        assert isinstance(self.params, UngroundedParams)
        self.constants = Known()
        for c in (*self.params.constants, *self.params.extra_constants):
            self.constants.add(Fraction(str(c)))
        # One pass over a text finds every unit word: a named group per unit.
        units = self.params.unit_constants
        self.unit_values = {f"unit{i}": [Fraction(str(c)) for c in values]
                            for i, values in enumerate(units.values())}
        self.unit_words = re.compile(
            r"\b(?:" + "|".join(f"(?P<unit{i}>{stem})" for i, stem in enumerate(units)) + ")"
            if units else r"(?!)", re.IGNORECASE)

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _UngroundedSession(self, ctx.problem)
