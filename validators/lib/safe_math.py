"""Exact arithmetic over untrusted text, without eval: a tokenizer and a recursive-descent parser.

`parse_arithmetic(text)` reads a whole string as one arithmetic expression (prose operators,
LaTeX `\\frac`, `\\times`, percents, thousands separators) and returns a `Parsed` value, or a
`ParseFailure` when the text is not plainly arithmetic or would cost too much to compute. It
never raises on any input and never computes anything large: literal length, token count,
nesting depth and result size are all bounded before work is done. The limits, the tokenizer
and the bounded exact operations are in validators/lib/math_primitives.py; the parser is here.

Design decisions:
- Values are computed with `fractions.Fraction` (exact, stdlib, no symbolic auto-evaluation)
  and handed out as `sympy.Rational` via `Parsed.value`, so callers compare exactly.
- Only ASCII digits are digits. Unicode digits (fullwidth, Arabic-Indic, superscripts) and
  look-alike operators not listed below (fullwidth +, fraction slash, ✕ ...) make the parse
  fail. Normalising them (e.g. NFKC) would silently turn `3²` into `32`; refusing means the
  text is skipped, which can only cost a missed fault, never a false rejection.
- `x`/`X` is a times sign only between two numbers (`3 x 4`, `3x4`), never next to a letter
  or an operator (`2x + 3` is algebra, refused).
- Literals with two or more decimals (`0.33`, `3.14`) may be rounded by the writer, so each
  carries an uncertainty of one unit in its last place, propagated through the arithmetic;
  `agrees()` accepts a stated result within that uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import sympy

from validators.lib.math_primitives import (
    _OP_NAMES,
    _ZERO,
    MAX_DEPTH,
    MAX_EXPR_CHARS,
    _check_size,
    _div,
    _mul,
    _pow,
    _Refuse,
    _Tok,
    _tokenize,
    _Val,
)

_CLOSER = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Why a text was not read as arithmetic (a value, never an exception)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Parsed:
    """An exactly evaluated arithmetic expression.

    `operators` counts the operations written (`3/4` has one). `plain` means a single stated
    quantity: a number (optionally signed, optionally a percent) or a simple fraction of
    integers (`3/4`, `\\frac{3}{4}`). `decimals` is the number of
    decimal places of a plain decimal literal. `uncertainty` bounds |true - exact| when the
    text used rounded literals.
    """

    exact: Fraction
    operators: int
    plain: bool
    decimals: int
    percent: bool
    uncertainty: Fraction

    @property
    def value(self) -> sympy.Rational:
        return sympy.Rational(self.exact.numerator, self.exact.denominator)


def _op(tok: _Tok | None, names: str) -> bool:
    """Whether `tok` is an operator whose canonical name is one of `names`."""
    return tok is not None and tok.kind == "op" and _OP_NAMES[tok.text] in names


class _Parser:
    """Recursive descent that evaluates as it goes; every nesting level counts toward depth."""

    def __init__(self, toks: list[_Tok], percent_scale: int) -> None:
        self.toks, self.percent_scale = toks, percent_scale
        self.i = self.depth = self.operators = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> _Tok:
        if self.i >= len(self.toks):
            raise _Refuse("unexpected end")
        self.i += 1
        return self.toks[self.i - 1]

    def nested(self, parse: Callable[[], _Val]) -> _Val:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refuse("nested too deeply")
        val = parse()
        self.depth -= 1
        return val

    def expr(self) -> _Val:
        acc = self.term()
        while (tok := self.peek()) is not None and _op(tok, "+-"):
            self.take()
            self.operators += 1
            rhs = self.term()
            sign = 1 if _OP_NAMES[tok.text] == "+" else -1
            value = acc[0] + rhs[0] if sign > 0 else acc[0] - rhs[0]
            acc = (_check_size(value), acc[1] + rhs[1] if rhs[1] else acc[1])
        return acc

    def term(self) -> _Val:
        acc = self.unary()
        while (tok := self.peek()) is not None:
            prev = self.toks[self.i - 1]
            if _op(tok, "*/x"):
                if _OP_NAMES[tok.text] == "x":
                    self._check_times_x(tok, prev, self.peek(1))
                self.take()
                rhs = self.unary()
                acc = _div(acc, rhs) if _OP_NAMES[tok.text] == "/" else _mul(acc, rhs)
            elif tok.text == "(" and not tok.spaced and prev.kind in ("num", "close"):
                acc = _mul(acc, self.unary())  # `2(3+4)`, `(2)(3)`: only written unspaced
            else:
                break
            self.operators += 1
        return acc

    @staticmethod
    def _check_times_x(tok: _Tok, prev: _Tok, nxt: _Tok | None) -> None:
        """`3 x 4` and `3x4` are products; `2x + 3`, `2x`, `x 3` are algebra or prose."""
        if prev.kind not in ("num", "pct", "close") or nxt is None:
            raise _Refuse("x is not a times sign here")
        if nxt.kind not in ("num", "open") or (
                not tok.spaced and not (nxt.kind == "num" and not nxt.spaced)):
            raise _Refuse("x next to a number reads as a variable")

    def unary(self) -> _Val:
        tok = self.peek()
        if tok is not None and _op(tok, "+-"):
            self.take()
            val = self.nested(self.unary)
            return (-val[0], val[1]) if _OP_NAMES[tok.text] == "-" else val
        return self.power()

    def power(self) -> _Val:
        base = self.atom()
        if not _op(self.peek(), "^"):
            return base
        self.take()
        self.operators += 1
        return _pow(base, self.nested(self.unary))  # right-associative: 2^3^2 = 2^9

    def atom(self) -> _Val:
        tok = self.take()
        if tok.kind == "num":
            nxt = self.peek()
            if nxt is not None and nxt.kind in ("num", "frac"):
                raise _Refuse("two numbers side by side (a mixed number or a list)")
            whole, _, decimals = tok.text.partition(".")
            value = (Fraction(int(whole + decimals or "0"), 10 ** tok.decimals) if tok.decimals
                     else Fraction(int(whole or "0")))  # an int: no gcd to normalise
            err = Fraction(1, 10 ** tok.decimals) if tok.decimals >= 2 else _ZERO
            if nxt is not None and nxt.kind == "pct":
                self.take()
                return value / self.percent_scale, err / self.percent_scale
            return value, err
        if tok.kind == "open":
            val = self.nested(self.expr)
            if self.take().text != _CLOSER[tok.text]:
                raise _Refuse("unbalanced brackets")
            return val
        if tok.kind == "frac":
            self.operators += 1
            return self.nested(lambda: _div(self.group(), self.group()))
        raise _Refuse(f"unexpected {tok.text!r}")

    def group(self) -> _Val:
        if self.take().text != "{":
            raise _Refuse("\\frac needs braced arguments")
        val = self.nested(self.expr)
        if self.take().text != "}":
            raise _Refuse("unbalanced braces")
        return val


def _is_plain(toks: list[_Tok]) -> bool:
    body = toks[1:] if toks and toks[0].kind == "op" and _OP_NAMES[toks[0].text] in "+-" else toks
    kinds = [t.kind for t in body]
    if kinds in (["num"], ["num", "pct"]):
        return True
    if kinds == ["num", "op", "num"] and body[1].text == "/":
        return body[0].decimals == 0 and body[2].decimals == 0 and "." not in body[0].text
    texts = [t.text for t in body]
    return (len(body) == 7 and kinds[0] == "frac" and texts[1::3] == ["{", "{"]
            and texts[3::3] == ["}", "}"] and kinds[2] == kinds[5] == "num"
            and "." not in texts[2] + texts[5])


@lru_cache(maxsize=4096)  # results are immutable; samples of one prompt repeat expressions
def parse_arithmetic(text: str, *, percent_as_label: bool = False) -> Parsed | ParseFailure:
    """Read all of `text` as one arithmetic expression; a ParseFailure if it is not one.

    `percent_as_label` reads `40%` as 40 (writers often carry the sign along as a unit:
    `0.5 * 40% = 20`); by default it is 40/100.
    """
    if len(text) > MAX_EXPR_CHARS:
        return ParseFailure("expression too long")
    try:
        toks = _tokenize(text)
        if not toks:
            return ParseFailure("empty")
        parser = _Parser(toks, 1 if percent_as_label else 100)
        exact, err = parser.nested(parser.expr)
        if parser.i != len(toks):
            return ParseFailure(f"unexpected {toks[parser.i].text!r}")
    except _Refuse as exc:
        return ParseFailure(str(exc))
    except (ArithmeticError, ValueError, RecursionError) as exc:  # defence in depth
        return ParseFailure(f"{type(exc).__name__}")
    plain = _is_plain(toks)
    decimals = max((t.decimals for t in toks if t.kind == "num"), default=0) if plain else 0
    return Parsed(exact, parser.operators, plain, decimals,
                  any(t.kind == "pct" for t in toks), err)


def evaluate(text: str) -> sympy.Rational | None:
    """The exact value of an arithmetic expression, or None when it is refused."""
    parsed = parse_arithmetic(text)
    return parsed.value if isinstance(parsed, Parsed) else None


def agrees(expr: Parsed, stated: Parsed, *, approx: bool = False,
           rel_tolerance: Fraction = Fraction(1, 10_000),
           approx_tolerance: Fraction = Fraction(1, 100)) -> bool:
    """Whether `stated` is an acceptable written result of `expr`.

    A result written with d decimals may be rounded, floored or ceiled to d places, so it is
    accepted within one unit of the d-th place — unless the exact value has at most d decimals,
    or the result is written as a fraction, when it must match. Rounded input literals widen
    that by their propagated uncertainty. A stated percent may be meant as a fraction
    (25% = 1/4) or as a label (x 100 = 25%).
    """
    # (target, unit of its last written place): a percent may be a fraction or a label.
    if expr.exact == stated.exact:
        return True  # the common case; every tolerance below accepts a zero difference
    candidates = [(stated.exact, Fraction(1, 10 ** (stated.decimals + 2 * stated.percent)))]
    if stated.percent:
        candidates.append((stated.exact * 100, Fraction(1, 10 ** stated.decimals)))
    value = expr.exact
    slack = expr.uncertainty + rel_tolerance * abs(value)
    if approx:
        slack += approx_tolerance * abs(value)
    for target, unit in candidates:
        diff = abs(value - target)
        if stated.operators or (value / unit).denominator == 1:
            # A stated fraction (`2/3`), or a value exact at the stated precision: must match.
            if diff <= slack:
                return True
        elif diff < slack + unit:  # rounded, floored or ceiled at the stated precision
            return True
    return False
