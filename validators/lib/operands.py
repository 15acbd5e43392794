"""The quantities of a step: the operands of the equations it writes, the numbers it states,
and the numbers a problem gives (read generously: they are a reference, never a verdict).

`computations(text)` finds equations exactly where the arithmetic validator finds them
(calculator annotations `<<a*b=c>>`, prose `a op b = c`, LaTeX, chains `a = b = c`) and returns,
for each side that computes something, its operands (literals, percents read both ways, simple
fractions with their parts; exponents are skipped) and the values it produces. Work is linear in
the text and bounded per step (`limit` equations, 40-digit literals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice

# The arithmetic validator's equation finder, reused so both read the same equations.
from validators.lib.equations import (
    _ANNOTATION,
    _APPROX_WORDS,
    _MAX_RELATIONS_PER_RUN,
    _RELATION,
    _RUN,
    _SKIP_STEP,
    _first_side,
    _last_side,
    _side,
)
from validators.lib.numbers import extract_numbers, iter_numbers, numbers_in_problem
from validators.lib.safe_math import Parsed, parse_arithmetic

_ORDINALS = {w: i for i, w in enumerate(
    "third fourth fifth sixth seventh eighth ninth tenth".split(), start=3)}
_ORDINAL = re.compile(rf"\b({'|'.join(_ORDINALS)})s?\b", re.IGNORECASE)
_COUNTING = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())} | {w: 10 * i for i, w in enumerate(
        "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_COUNTING_WORD = re.compile(rf"\b({'|'.join(_COUNTING)})\b", re.IGNORECASE)
_HUNDREDTHS = re.compile(r"%|\bpercent|\bcents?\b", re.IGNORECASE)
_NUM = r"[0-9]{1,3}(?:(?:,|\{,\})[0-9]{3})+(?:\.[0-9]+)?(?![0-9])|[0-9]+(?:\.[0-9]+)?|\.[0-9]+"
# An operand: a simple fraction (`\frac{2}{5}`, `2/5`: grounded by its value or by both parts),
# or a literal with an optional percent sign. Exponents (`^2`, `^{55}`) are not quantities.
_OPERAND = re.compile(
    r"\\[dt]?frac\{\s*(?P<fnum>[0-9]{1,40})\s*\}\{\s*(?P<fden>[0-9]{1,40})\s*\}"
    r"|(?<![0-9./])(?P<num>[0-9]{1,40})\s*/\s*(?P<den>[0-9]{1,40})(?![0-9./])"
    rf"|(?P<pow>\^\s*\{{?\s*-?(?:{_NUM}))"
    rf"|(?<![0-9.])(?P<lit>{_NUM})(?P<pct>\s?\\?%)?")
_LOOSE = re.compile(_NUM)  # digits in earlier text ground later operands, even `14x`
_READ_BY_NUMBERS = re.compile(r"[%/]|frac|percent|thousand|illion", re.IGNORECASE)
_MAX_PAIRED = 12  # operands of one side combined pairwise (bounded work)


@dataclass(frozen=True, slots=True)
class Operand:
    """A quantity on an equation's left side: grounded when one of `values` (value, decimals
    written) is, as a percent may mean 20 or 0.2, or when all its `parts` are (a fraction)."""

    text: str
    values: tuple[tuple[Fraction, int], ...]
    parts: tuple[Fraction, ...] = ()


@dataclass(frozen=True, slots=True)
class Computation:
    """One equation of a step: where it starts, its operands, the values it produces."""

    start: int
    written: str
    operands: tuple[Operand, ...]
    results: tuple[Fraction, ...]

    def partials(self) -> set[Fraction]:
        """Values of operand pairs: what a chain writes next (`20 - (12 + 4) = 20 - 16`)."""
        values = [o.values[0][0] for o in self.operands[:_MAX_PAIRED]]
        out: set[Fraction] = set()
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                out |= {a + b, abs(a - b), a * b, *([a / b] if b else []), *([b / a] if a else [])}
        return out


def _number(text: str) -> tuple[Fraction, int] | None:
    """A digit string (`1,234.5`, `1{,}234`) as (exact value, decimals); None past 40 digits."""
    whole, _, decimals = text.replace("{,}", "").replace(",", "").partition(".")
    if len(whole) + len(decimals) > 40:
        return None
    return Fraction(int(whole + decimals or "0"), 10 ** len(decimals)), len(decimals)


def _operands(side_text: str) -> tuple[Operand, ...]:
    found = []
    for m in _OPERAND.finditer(side_text):
        if m.group("lit") is not None and (literal := _number(m.group("lit"))) is not None:
            value, places = literal
            alternatives = ((value, places), (value / 100, places + 2)) if m.group("pct") else (
                (value, places),)
            found.append(Operand(m.group().strip(), alternatives))
        elif m.group("lit") is None and m.group("pow") is None:
            num = _number(m.group("fnum") or m.group("num"))
            den = _number(m.group("fden") or m.group("den"))
            if num is not None and den is not None and den[0]:
                found.append(Operand(m.group(), ((num[0] / den[0], 0),), (num[0], den[0])))
    return tuple(found)


# Replacements of the same length keep positions those of the step, so that equations and the
# numbers written before them interleave correctly.
def _blank(m: re.Match[str]) -> str:
    return " " * len(m.group())


def _approx(m: re.Match[str]) -> str:
    return "≈" + " " * (len(m.group()) - 1)


def computations(text: str, limit: int = 100) -> list[Computation]:
    """The equations of one step whose left side computes something, in order of position."""
    found: list[Computation] = []
    if "<<" in text:
        for m in islice(_ANNOTATION.finditer(text), limit):
            sides = [parse_arithmetic(part) for part in m.group(1).split("=")]
            lhs, rhs = sides if len(sides) == 2 else (None, None)
            if isinstance(lhs, Parsed) and isinstance(rhs, Parsed) and lhs.operators:
                found.append(Computation(m.start(), m.group(), _operands(m.group(1).split("=")[0]),
                                         (abs(lhs.exact), abs(rhs.exact))))
    if ("=" in text or "≈" in text or "\\approx" in text) and not _SKIP_STEP.search(text):
        prose = _APPROX_WORDS.sub(_approx, _ANNOTATION.sub(_blank, text))
        for run in _RUN.finditer(prose):
            if len(found) >= limit:
                break
            if _RELATION.search(run.group()) is not None:
                found += _run_computations(prose, run.start(), run.end())
    found.sort(key=lambda c: c.start)
    return found[:limit]


def _run_computations(text: str, start: int, end: int) -> list[Computation]:
    """Sides between relations, as EquationChecker._check_run finds them; a side with operators
    followed by another readable side is a computation (`20 - (12 + 4) = 20 - 16 = 4` has two)."""
    run = text[start:end]
    rels = list(islice(_RELATION.finditer(run), _MAX_RELATIONS_PER_RUN + 1))
    if len(rels) > _MAX_RELATIONS_PER_RUN:
        return []
    bounds = [0, *[p for r in rels for p in (r.start(), r.end())], len(run)]
    pieces = [(start + bounds[i], start + bounds[i + 1]) for i in range(0, len(bounds), 2)]
    sides = [(_first_side(text, a, b) if k == 0 else _last_side(text, a, b)
              if k == len(pieces) - 1 else _side(text[a:b])) for k, (a, b) in enumerate(pieces)]
    out = []
    for k in range(len(sides) - 1):
        lhs, rhs = sides[k], sides[k + 1]
        if lhs is not None and rhs is not None and lhs.parsed.operators:
            written = " ".join(text[pieces[k][0]:pieces[k + 1][1]].split())
            out.append(Computation(pieces[k][0], written, _operands(lhs.text),
                                   (abs(lhs.parsed.exact), abs(rhs.parsed.exact))))
    return out


def problem_values(problem: str) -> set[Fraction]:
    """What the problem states, generously: a problem's numbers are a reference, not a verdict."""
    values = {Fraction(int(v.p), int(v.q)) for v in numbers_in_problem(problem)}
    # Each counting word alone too: `one fifty-dollar bill` reads as 51 in the shared reader.
    values |= {Fraction(_COUNTING[w.lower()]) for w in _COUNTING_WORD.findall(problem)}
    for m in _ORDINAL.finditer(problem):
        parts = _ORDINALS[m.group(1).lower()]
        values |= {Fraction(parts), Fraction(1, parts)}
    if _HUNDREDTHS.search(problem):  # `seventy-five percent`, `25 cents` -> 0.75, 0.25
        values |= {v / 100 for v in values if v.denominator == 1}
    for v in list(values):
        if 0 < v < 1:  # 20% off -> 0.8 of the price; a 20% raise -> 1.2; a quarter -> 4 parts
            values |= {1 - v, 1 + v, 1 / v}
    for mention in extract_numbers(problem):
        if mention.percent:
            values |= {100 - abs(mention.exact) * 100, 100 + abs(mention.exact) * 100}
    return values


MAX_MENTIONS_PER_STEP = 300


def stated_numbers(text: str) -> list[tuple[int, Fraction]]:
    """(first position, value) of every distinct number a text writes, generously: digits glued
    to letters too (`14x`), percents as 20 and 0.2, fractions and scale words as read by
    validators.lib.numbers (only consulted when the text has a `%`, `/` or a word it reads)."""
    first: dict[str, tuple[int, Fraction]] = {}
    for m in _LOOSE.finditer(text):
        if m.group() not in first and (literal := _number(m.group())) is not None:
            first[m.group()] = (m.start(), literal[0])
    found = list(first.values())
    if _READ_BY_NUMBERS.search(text):
        # Bounded: a hostile step can hold thousands of numbers; grounding needs only the
        # distinct values, and repeats beyond the cap add nothing a real solution writes.
        for count, mention in enumerate(iter_numbers(text)):
            if count >= MAX_MENTIONS_PER_STEP:
                break
            found.append((mention.start, abs(mention.exact)))
    found.sort(key=lambda pair: pair[0])
    return found
