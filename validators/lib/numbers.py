"""Numbers in text, with positions: what magnitude, arithmetic and grounding checks look at.

`extract_numbers(text)` finds numeric literals in prose and LaTeX: integers, decimals, thousands
separators (`1,234,567`), signs glued to the digits (`-5`, `−5`), percents, simple fractions
(`3/4`, `\\frac{3}{4}`) and a scale word after a literal (`2.5 million`). Digits glued to letters
(`x2`, `H2O`, `a_1`) are identifiers, not quantities, and are skipped. Only ASCII digits count
(see safe_math for why).

`numbers_in_problem(problem)` adds what problems spell out in words (`twenty-five`, `a dozen`,
`half`, `twice`) and simple powers (`2^{10}`), for comparing a solution's numbers to the
problem's. Work is linear in the text; literals longer than 40 digits are skipped, not parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import sympy

from validators.lib.math_primitives import MAX_LITERAL_DIGITS
from validators.lib.safe_math import Parsed, parse_arithmetic

_DIGITS = r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?(?![0-9])|[0-9]+(?:\.[0-9]+)?|\.[0-9]+"
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_NUMBER = re.compile(
    r"\\[dt]?frac\{\s*(?P<fnum>[0-9]{1,40})\s*\}\{\s*(?P<fden>[0-9]{1,40})\s*\}"
    r"|(?<![0-9A-Za-z_.\\])(?P<sign>[-−–](?=\$?[0-9.]))?\$?"
    rf"(?P<num>{_DIGITS})(?![0-9A-Za-z_²³¹⁰⁴-⁹]|[.,][0-9])"
    r"(?:/(?P<den>[0-9]+)(?![0-9./]))?"
    r"(?P<pct>\s?%|\\%|\s?percent\b)?"
    r"(?:\s+(?P<scale>thousand|million|billion|trillion)\b)?"
)


@dataclass(frozen=True, slots=True)
class NumberMention:
    """One number written in a text: its exact value and where it is (`text[start:end]`)."""

    exact: Fraction
    start: int
    end: int
    negative: bool = False
    percent: bool = False
    too_long: bool = False  # more than 40 digits: `exact` is only a lower bound (10^40)

    @property
    def value(self) -> sympy.Rational:
        return sympy.Rational(self.exact.numerator, self.exact.denominator)


_TOO_LONG = Fraction(10) ** MAX_LITERAL_DIGITS


def _literal(text: str) -> Fraction | None:
    """The value of a digit string (`1,234.5`); None when it is too long to parse cheaply."""
    digits = text.replace(",", "")
    if len(digits) > MAX_LITERAL_DIGITS + 1 and sum(ch.isdigit() for ch in digits) > (
            MAX_LITERAL_DIGITS):
        return None
    whole, _, decimals = digits.partition(".")
    # int() on a short ASCII string is several times cheaper than Fraction(str).
    return Fraction(int(whole + decimals or "0"), 10 ** len(decimals))


def _mention(m: re.Match[str]) -> NumberMention | None:
    if m.group("fnum") is not None:
        num, den = _literal(m.group("fnum")), _literal(m.group("fden"))
        return NumberMention(num / den, m.start(), m.end()) if num is not None and den else None
    value = _literal(m.group("num"))
    negative = m.group("sign") is not None
    if value is None:  # a 10,000-digit literal: huge, but not worth computing
        return NumberMention(-_TOO_LONG if negative else _TOO_LONG, m.start(), m.end(),
                             negative, too_long=True)
    if m.group("den") is not None and "." not in m.group("num"):
        den = _literal(m.group("den"))
        if not den:
            return None
        value /= den
    percent = m.group("pct") is not None
    if percent:
        value /= 100
    if m.group("scale"):
        value *= _SCALES[m.group("scale")]
    return NumberMention(-value if negative else value, m.start(), m.end(), negative, percent)


def iter_numbers(text: str, start: int = 0) -> Iterator[NumberMention]:
    """The numbers of `text` from `start` on, lazily (callers may stop after a budget)."""
    for m in _NUMBER.finditer(text, start):
        mention = _mention(m)
        if mention is not None:
            yield mention


def number_at(text: str, pos: int) -> NumberMention | None:
    """The number written exactly at `pos` (its sign, `$` or first digit), if there is one."""
    m = _NUMBER.match(text, pos)
    return _mention(m) if m is not None else None


def extract_numbers(text: str) -> list[NumberMention]:
    """Every number in `text`, in order of position."""
    return list(iter_numbers(text))


_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
_MULTIPLIERS = {"hundred": 100, **_SCALES}
_SINGLE_WORDS = {
    "dozen": Fraction(12), "dozens": Fraction(12), "twice": Fraction(2), "double": Fraction(2),
    "thrice": Fraction(3), "triple": Fraction(3), "quadruple": Fraction(4),
    "half": Fraction(1, 2), "halves": Fraction(1, 2), "quarter": Fraction(1, 4),
    "quarters": Fraction(1, 4), "pair": Fraction(2), "couple": Fraction(2),
    "thirds": Fraction(1, 3), "fourths": Fraction(1, 4), "fifths": Fraction(1, 5),
}
_COUNTING = "|".join(sorted([*_UNITS, *_TENS, *_MULTIPLIERS], key=len, reverse=True))
_WORD_NUMBER = re.compile(
    rf"\b(?:{_COUNTING})(?:(?:[\s-]+(?:and[\s-]+)?)(?:{_COUNTING}))*\b", re.IGNORECASE)
_SINGLE = re.compile(rf"\b(?:{'|'.join(_SINGLE_WORDS)})\b", re.IGNORECASE)
# Generous reading for problems: digits glued to words (`2004th`, `5km`) and space-separated
# thousands (`$400 000`) count too; a problem's numbers are a reference, never a verdict.
_LOOSE_DIGITS = re.compile(
    r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?(?![0-9])|[0-9]{1,3}(?: [0-9]{3})+(?![0-9])"
    r"|[0-9]+(?:\.[0-9]+)?")
_POWER = re.compile(r"(?<![0-9.])([0-9]{1,6})\s*(?:\^|\*\*)\s*\{?\s*(-?[0-9]{1,4})\s*\}?")


def _word_value(phrase: str) -> Fraction:
    """`two hundred and fifty thousand` -> 250000 (the usual English composition)."""
    total, current = 0, 0
    for word in re.split(r"[\s-]+", phrase.lower()):
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            current = 0
    return Fraction(total + current)


def numbers_in_problem(problem: str) -> list[sympy.Rational]:
    """The quantities a problem states, in digits or in words (order not meaningful)."""
    values = [abs(n.exact) for n in extract_numbers(problem)]
    for m in _LOOSE_DIGITS.finditer(problem):
        loose = _literal(m.group().replace(" ", ""))
        if loose is not None:
            values.append(loose)
    values += [_word_value(m.group()) for m in _WORD_NUMBER.finditer(problem)]
    values += [_SINGLE_WORDS[m.group().lower()] for m in _SINGLE.finditer(problem)]
    for m in _POWER.finditer(problem):
        parsed = parse_arithmetic(f"{m.group(1)}^{m.group(2)}")
        if isinstance(parsed, Parsed):
            values.append(abs(parsed.exact))
    return [sympy.Rational(v.numerator, v.denominator) for v in values]

