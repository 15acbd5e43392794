"""Arithmetic consistency: every equation a step writes must hold, checked exactly.

What is judged, per new step:
- GSM8K calculator annotations `<<48/2=24>>`: the expression must equal the result, and a
  number written right after `>>` must be that result (or its absolute value: `<<5-8=-3>>3
  less` is a way of speaking, not a slip);
- prose and LaTeX equations `3 × 4 = 12`, chains `2 + 3 = 5 + 1 = 6`, `\\frac{1}{3} \\times 18
  = 6` inside `\\( \\)` or `$ $`; `≈`, `\\approx` and "= approximately" loosen the tolerance.

False rejections cost more than misses, so an equation is judged only when it is unmistakably
arithmetic: the left side parses completely (safe_math) with at least one operator and starts
at a clean boundary (not glued to a letter or symbol as in `f(2)`, `a_1`, `3:30`; not the tail
of an operator word as in `choose (4 - 1)`, `half of 10 + 4`), and the right side is a plain
number or simple fraction not followed by anything that changes its meaning (`million`, `!`,
`²`, `:30`, `pm`, `choose`). In a chain that computes a number (`= (7 - 28) = (60 * (-21))
= -1260`) each link between two expressions is judged too, with exact arithmetic only (see
`_exact_link`). Steps about modular or other-base arithmetic are skipped. Rounded
results are accepted within the precision they are written in (see safe_math.agrees).
Finding the equations and their cleanly bounded sides is validators/lib/equations.py; this module
checks that they hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import islice

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.lib.equations import (  # the equation finder, shared with operands.py
    _ANNOTATION,
    _ANY_ANNOTATION,
    _APPROX_WORDS,
    _MAX_RELATIONS_PER_RUN,
    _RELATION,
    _first_side,
    _last_side,
    _Side,
    _side,
    _skip_step,
    relation_runs,
)
from validators.lib.safe_math import Parsed, agrees, parse_arithmetic
from validators.lib.verdicts import ok_verdict

_LEADING_NUMBER = re.compile(
    r"\s*[-−–]?\s*\$?\s*(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\s*\.[0-9]+")


class ArithmeticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rel_tolerance: float = Field(
        default=1e-4, ge=0, le=0.5, description="relative slack on every equation")
    approx_tolerance: float = Field(
        default=0.01, ge=0, le=0.5, description="relative slack for ≈ / 'approximately'")
    check_annotations: bool = Field(default=True, description="check <<expr=result>> annotations")
    check_annotation_text: bool = Field(
        default=True, description="a number right after >> must equal the annotation's result")
    max_equations_per_step: int = Field(
        default=100, ge=1, le=10_000, description="bound on work per step; later ones are skipped")
    score_on_fault: float = Field(
        default=0.0, ge=0, lt=1,
        description="verdict score when it fires (below 1; matters in soft mode)")


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One equation that does not hold; `span` is where it is written in the step's text."""

    written: str
    exact: Fraction
    span: tuple[int, int] = (0, 0)

    def describe(self) -> str:
        return f"{self.written} (exact: {format_exact(self.exact)})"


def format_exact(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    as_float = f"{float(value):.6g}" if abs(value) < 10**15 else "…"
    return f"{value.numerator}/{value.denominator} ≈ {as_float}"


def _exact_link(lhs: _Side, rhs: _Side, rel: str) -> bool:
    """Whether a link to an expression or a bracketed number (`(7 - -7 * 4) = (7 - 28)`,
    `= (41)`) is judged: both sides
    computed, "=" (not ≈), and exact arithmetic only (no decimals, percents or rounded
    literals, where a rewritten side may legitimately be rounded)."""
    return (rel.strip() == "="
            and not (lhs.parsed.percent or rhs.parsed.percent)
            and lhs.parsed.uncertainty == 0 and rhs.parsed.uncertainty == 0
            and "." not in lhs.text and "." not in rhs.text)


_CLEAN_END = re.compile(r"[ \t]*(?:$|\n|[.,;:!?)\]}$]|\\\)|\\\]|\*\*)")


def _ends(text: str, at: int) -> bool:
    """Whether an expression ending at `at` ends there: `2 \\cdot 3 \\cos C` goes on."""
    return _CLEAN_END.match(text, at) is not None


class EquationChecker:
    """Finds and checks the equations of one step of text (stateless between steps)."""

    def __init__(self, params: ArithmeticParams) -> None:
        self.params = params
        self.rel = Fraction(str(params.rel_tolerance))
        self.approx = Fraction(str(params.approx_tolerance))

    def holds(self, lhs: _Side, rhs: Parsed, approx: bool = False) -> bool:
        if agrees(lhs.parsed, rhs, approx=approx, rel_tolerance=self.rel,
                  approx_tolerance=self.approx):
            return True
        if not lhs.parsed.percent:
            return False
        # `0.5 * 40% = 20`: the percent sign carried along as a unit.
        as_label = parse_arithmetic(lhs.text, percent_as_label=True)
        return isinstance(as_label, Parsed) and agrees(
            as_label, rhs, approx=approx, rel_tolerance=self.rel, approx_tolerance=self.approx)

    def check(self, text: str) -> Mismatch | None:
        """The first equation in `text` that does not hold, or None."""
        budget = [self.params.max_equations_per_step]
        if self.params.check_annotations and "<<" in text:
            found = self._check_annotations(text, budget)
            if found is not None:
                return found
        if ("=" not in text and "≈" not in text and "\\approx" not in text) or _skip_step(text):
            return None
        prose = _prose(text)
        for start, end in relation_runs(prose):
            if budget[0] <= 0:
                return None
            found = self._check_run(prose, start, end, budget)
            if found is not None:
                return replace(found, span=_source_span(text, *found.span))
        return None

    def _check_annotations(self, text: str, budget: list[int]) -> Mismatch | None:
        for m in _ANNOTATION.finditer(text):
            budget[0] -= 1
            if budget[0] < 0:
                return None
            parts = m.group(1).split("=")
            if len(parts) != 2:
                continue
            lhs, rhs = parse_arithmetic(parts[0]), parse_arithmetic(parts[1])
            if not (isinstance(lhs, Parsed) and isinstance(rhs, Parsed)
                    and lhs.operators and rhs.plain):
                continue
            side = _Side(parts[0], lhs)
            if not self.holds(side, rhs):
                return Mismatch(f"<<{m.group(1)}>>", lhs.exact, m.span())
            after = _LEADING_NUMBER.match(text, m.end())
            if not self.params.check_annotation_text or after is None:
                continue
            follow = text[after.end():after.end() + 2]
            stated = parse_arithmetic(after.group())
            if (not isinstance(stated, Parsed) or follow[:1].isalnum() or follow[:1] in ("/", "^")
                    or (follow[:1].isspace() and follow[1:].isdigit())):  # `17 500`
                continue
            if not self.holds(side, stated):
                negated = Parsed(-stated.exact, 0, True, stated.decimals, stated.percent,
                                 stated.uncertainty)
                if not self.holds(side, negated):
                    return Mismatch(f"<<{m.group(1)}>>{after.group().strip()}", lhs.exact,
                                    (m.start(), after.end()))
        return None

    def _check_run(self, text: str, start: int, end: int, budget: list[int]) -> Mismatch | None:
        run = text[start:end]
        rels = list(islice(_RELATION.finditer(run), _MAX_RELATIONS_PER_RUN + 1))
        if len(rels) > _MAX_RELATIONS_PER_RUN:
            return None  # `1=1=1=...`: not something a solution writes
        bounds = [0, *[p for r in rels for p in (r.start(), r.end())], len(run)]
        pieces = [(start + bounds[i], start + bounds[i + 1]) for i in range(0, len(bounds), 2)]
        sides: list[_Side | None] = []
        for k, (a, b) in enumerate(pieces):
            if k == 0:
                sides.append(_first_side(text, a, b))
            elif k == len(pieces) - 1:
                sides.append(_last_side(text, a, b))
            else:
                sides.append(_side(text[a:b]))
        # A chain that computes a number step by step (`= (7 - 28) = (60 * (-21)) = -1260`):
        # every link is judged, also between two expressions. A lone `10 - 2 = 5 + 4` is not.
        computes = (len(sides) >= 3 and sides[-1] is not None and not sides[-1].parsed.operators
                    and _ends(text, pieces[-1][1]))
        for k in range(len(sides) - 1):
            lhs, rhs = sides[k], sides[k + 1]
            if lhs is None or rhs is None or not lhs.parsed.operators:
                continue
            rel = rels[k].group()
            if not rhs.parsed.plain:
                if not (computes and _exact_link(lhs, rhs, rel)):
                    continue
                budget[0] -= 1
                if budget[0] < 0:
                    return None
                if lhs.parsed.exact == rhs.parsed.exact or self._running_total(lhs, rhs.text):
                    continue
                return _link(text, pieces[k][0], pieces[k + 1][1], lhs.parsed.exact)
            budget[0] -= 1
            if budget[0] < 0:
                return None
            if self.holds(lhs, rhs.parsed, approx="=" not in rel or "~" in rel):
                continue
            if "/" in rhs.text and self._running_total(lhs, rhs.text):
                continue
            return _link(text, pieces[k][0], pieces[k + 1][1], lhs.parsed.exact)
        return None

    def _running_total(self, lhs: _Side, rhs_text: str) -> bool:
        """`4 × 3 = 12/2 = 6` writes the running total 12 and goes on dividing it."""
        lead = _LEADING_NUMBER.match(rhs_text)
        stated = parse_arithmetic(lead.group()) if lead else None
        return isinstance(stated, Parsed) and (
            abs(stated.exact - lhs.parsed.exact) <= lhs.parsed.uncertainty)


def _link(text: str, start: int, end: int, exact: Fraction) -> Mismatch:
    """The link `text[start:end]` of a chain, which does not hold (its span trimmed of the
    whitespace around the sides)."""
    written = text[start:end]
    lead = len(written) - len(written.lstrip())
    return Mismatch(" ".join(written.split()), exact,
                    (start + lead, start + len(written.rstrip())))


def _prose(text: str) -> str:
    """The text as equations are read from it: annotations out, "= approximately" as `≈`."""
    return _APPROX_WORDS.sub("≈ ", _ANY_ANNOTATION.sub("", text))


def _source_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Where `_prose(text)[start:end]` was written in `text`: the two substitutions replayed
    with a map from each character of the result to the character it came from (one put in by
    a substitution maps to the start of what it replaced). Only on a fault: cost is no issue."""
    current, origin = text, list(range(len(text)))
    for pattern, repl in ((_ANY_ANNOTATION, ""), (_APPROX_WORDS, "≈ ")):
        pieces, mapped, pos = [], [], 0
        for m in pattern.finditer(current):
            pieces += [current[pos:m.start()], repl]
            mapped += origin[pos:m.start()] + [origin[m.start()]] * len(repl)
            pos = m.end()
        pieces.append(current[pos:])
        mapped += origin[pos:]
        current, origin = "".join(pieces), mapped
    if not 0 <= start < end <= len(origin):
        return (0, 0)
    return origin[start], origin[end - 1] + 1


class _ArithmeticSession(ValidatorSession):
    def __init__(self, validator: ArithmeticValidator, checker: EquationChecker) -> None:
        self.validator = validator
        self.checker = checker  # stateless between steps: one per configured validator
        self.score = checker.params.score_on_fault
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        for step in checkpoint.steps:
            mismatch = self.checker.check(step.text)
            if mismatch is not None:
                start, end = mismatch.span
                return self.validator.fault("arithmetic_error", mismatch.describe(),
                                            step_index=step.index, score=self.score,
                                            span=(step.start + start, step.start + end))
        return self.ok


class ArithmeticValidator(Validator):
    name = "arithmetic"
    reason_codes = frozenset({"arithmetic_error"})
    description = ("Equations written in the reasoning (calculator annotations, prose, LaTeX) "
                   "must hold exactly, within the precision the result is written in.")
    Params = ArithmeticParams
    _checker: EquationChecker | None = None

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, ArithmeticParams)
        if self._checker is None:
            self._checker = EquationChecker(self.params)
        return _ArithmeticSession(self, self._checker)
