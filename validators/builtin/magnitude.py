"""Implausible numbers: magnitudes far beyond the problem's, and negatives it gives no room for.

`magnitude` is the paper's rule: a number in the solution larger than `ratio` (100) times the
largest number in the problem, or larger than `absolute_limit` (10,000,000), is a fault. A
number the problem itself states never fires. Word problems multiply their numbers (40 gallons
a week for 52 weeks), so `reference: largest_product` compares with the product of the
problem's two largest numbers instead, which is far quieter (tasks/bench/validator_bench.py
measures both).

`negative_values`: a negative number *stated as a result* (after `=`, `:` or "is", at the start
of a step) when the problem has no negative numbers, no minus signs in its math, and no words
that make negatives natural (temperature, debt, profit, coordinates, equations ...). Numbers
inside calculator annotations are left to the arithmetic validator.

Both point at the number that fired (`Verdict.span`).
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from itertools import islice
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.lib.numbers import extract_numbers, iter_numbers, number_at, numbers_in_problem
from validators.lib.verdicts import ok_verdict
from validators.tuning import Tunable


class MagnitudeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(
        default=100.0, gt=1, description="fault above ratio x the reference number")
    absolute_limit: float = Field(default=1e7, gt=0, description="fault above this in any case")
    reference: Literal["largest", "largest_product"] = Field(
        default="largest",
        description="the problem's largest number (the paper) or the product of its two largest")
    max_numbers_per_step: int = Field(
        default=1000, ge=1, le=100_000,
        description="bound on work per step; later numbers are skipped")
    score_on_fault: float = Field(
        default=0.0, ge=0, lt=1,
        description="verdict score when it fires (below 1; matters in soft mode)")


def _threshold(problem: str, params: MagnitudeParams) -> Fraction:
    values = sorted((Fraction(int(v.p), int(v.q)) for v in numbers_in_problem(problem)),
                    reverse=True)
    largest = values[0] if values else Fraction(0)
    reference = max(largest, Fraction(1))
    if params.reference == "largest_product" and len(values) > 1:
        reference = max(reference, values[0] * values[1])
    limit = min(Fraction(str(params.ratio)) * reference, Fraction(str(params.absolute_limit)))
    return max(largest, limit)  # a number the problem states is never implausible


def _shown(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.6g}"


# Without three digits in a row or a scale word no number in a text reaches 100.
_MAYBE_LARGE = re.compile(r"[0-9]{3}|illion|thousand", re.IGNORECASE)


class _MagnitudeSession(ValidatorSession):
    def __init__(self, validator: MagnitudeValidator, params: MagnitudeParams,
                 threshold: Fraction) -> None:
        self.validator = validator
        self.threshold = threshold
        self.budget = params.max_numbers_per_step
        self.score = params.score_on_fault

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        for step in checkpoint.steps:
            if self.threshold >= 100 and not _MAYBE_LARGE.search(step.text):
                continue
            for number in islice(iter_numbers(step.text), self.budget):
                if abs(number.exact) > self.threshold:
                    shown = step.text[number.start:number.end][:60]
                    return self.validator.fault(
                        "implausible_magnitude",
                        f"{shown} exceeds {_shown(self.threshold)} (limit from the problem's "
                        "numbers)", step_index=step.index, score=self.score,
                        span=(step.start + number.start, step.start + number.end))
        return self.validator.ok()


class MagnitudeValidator(Validator):
    name = "magnitude"
    reason_codes = frozenset({"implausible_magnitude"})
    description = ("Numbers far larger than the problem's (over 100x its largest, or over "
                   "10,000,000) signal a runaway calculation.")
    Params = MagnitudeParams
    # Orders of magnitude: word problems multiply their numbers, so the useful ratios differ
    # by factors, not by units.
    tunable = Tunable("ratio", (10.0, 30.0, 100.0, 300.0, 1000.0, 10000.0))

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, MagnitudeParams)
        return _MagnitudeSession(self, self.params, _threshold(ctx.problem, self.params))


DEFAULT_PLAUSIBLE_WORDS = (
    "negative", "minus", "below", "debt", "owe", "owed", "loss", "deficit", "temperature",
    "degree", "celsius", "fahrenheit", "elevation", "sea level", "altitude", "depth", "profit",
    "withdraw", "overdraw", "overdrawn", "balance", "integer", "real number", "coordinate",
    "slope", "solve", "equation", "root", "function", "polynomial", "vector",
)
# Math in the problem (`$x^2$`, `\(...\)`, `\frac`) or a minus sign before a number.
_PROBLEM_MATH = re.compile(r"\\[(\[a-zA-Z]|\$[^$0-9\s.,][^$]*\$|(?<![A-Za-z])-\s?[0-9]|−")
_ANNOTATION = re.compile(r"<<[^<>\n]{0,400}>>")
_STATED_AFTER_WORD = re.compile(
    r"(?:\b(?:is|are|was|were|be|equals|get|gets|got|gives|makes|becomes)|[=≈:])\s*\$?\s*\Z",
    re.IGNORECASE)


class NegativeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plausible_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PLAUSIBLE_WORDS),
        description="words in the problem that make negative numbers natural")
    extra_plausible_words: list[str] = Field(default_factory=list)
    score_on_fault: float = Field(
        default=0.0, ge=0, lt=1,
        description="verdict score when it fires (below 1; matters in soft mode)")


def negatives_plausible(problem: str, words: list[str]) -> bool:
    """Whether a negative result could be right for this problem."""
    return _negatives_plausible(problem, tuple(words))


@lru_cache(maxsize=4096)  # the n samples of one prompt share its problem
def _negatives_plausible(problem: str, words: tuple[str, ...]) -> bool:
    signed = "-" in problem or "−" in problem or "–" in problem  # else no number is negative
    if _PROBLEM_MATH.search(problem) or (
            signed and any(n.negative for n in extract_numbers(problem))):
        return True
    folded = problem.casefold()  # the regex only confirms a word found as a substring
    return any(w.casefold() in folded for w in words) and _words_regex(words).search(
        problem) is not None


@lru_cache(maxsize=64)
def _words_regex(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE)


_SIGN = re.compile(r"[-−–](?=\$?\.?[0-9])")
_MAX_SIGNS_PER_STEP = 500


def stated_negatives(text: str) -> list[tuple[int, int]]:
    """Spans of negative numbers written as a result: `= -5`, `is -5`, a step starting `-5`."""
    if "<<" in text:
        text = _ANNOTATION.sub(lambda m: " " * len(m.group()), text)
    spans = []
    for sign in islice(_SIGN.finditer(text), _MAX_SIGNS_PER_STEP):
        before = text[max(0, sign.start() - 24):sign.start()]
        if not ((sign.start() < 24 and not before.strip()) or _STATED_AFTER_WORD.search(before)):
            continue
        number = number_at(text, sign.start())
        if number is not None and number.negative and number.exact:
            spans.append((number.start, number.end))
    return spans


class _NegativeSession(ValidatorSession):
    def __init__(self, validator: NegativeValuesValidator, active: bool, score: float) -> None:
        self.validator = validator
        self.active = active
        self.score = score
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if not self.active:
            return self.ok
        for step in checkpoint.steps:
            spans = stated_negatives(step.text)
            if spans:
                start, end = spans[0]
                return self.validator.fault(
                    "unexpected_negative",
                    f"{step.text[start:end][:60]} stated, but the problem has no negative "
                    "quantities", step_index=step.index, score=self.score,
                    span=(step.start + start, step.start + end))
        return self.ok


class NegativeValuesValidator(Validator):
    name = "negative_values"
    reason_codes = frozenset({"unexpected_negative"})
    description = ("A negative result where the problem has no negative numbers and nothing "
                   "that makes one natural (temperatures, debts, equations).")
    Params = NegativeParams
    _words: tuple[str, ...] | None = None

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, NegativeParams)
        if self._words is None:  # params are fixed once built: join the word lists once
            self._words = (*self.params.plausible_words, *self.params.extra_plausible_words)
        return _NegativeSession(self, not _negatives_plausible(ctx.problem, self._words),
                                self.params.score_on_fault)
