"""The bounded building blocks of safe_math's parser (validators/lib/safe_math.py): the limits,
the tokenizer (which refuses over-long literals and too many tokens), and exact arithmetic on
(value, uncertainty) pairs (which refuses any result too large). Each raises `_Refuse` rather
than do large work; safe_math turns that into a `ParseFailure`. Registers no validator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPR_CHARS = 2_000
MAX_LITERAL_DIGITS = 40  # a real calculation never needs more; a 10,000-digit literal is refused
MAX_TOKENS = 300
MAX_DEPTH = 48  # parentheses / \frac / unary signs / powers nested deeper are refused
MAX_RESULT_BITS = 3_400  # ~10^1000: any larger intermediate value is refused

_ZERO = Fraction(0)

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\\[,;:!\ ]|\\q?quad(?![A-Za-z])|\\?\$|\\left(?![A-Za-z])|\\right(?![A-Za-z]))
  | (?P<num>[0-9]{1,3}(?:(?:,|\{,\})[0-9]{3})+(?:\.[0-9]+)?(?![0-9])|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)
  | (?P<pct>\\?%)
  | (?P<frac>\\[dt]?frac(?![A-Za-z]))
  | (?P<op>\*\*|[-+*/^×÷·⋅∗−–]|\\(?:times|cdot|div|ast)(?![A-Za-z])|(?<![A-Za-z])[xX](?![A-Za-z]))
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
    """,
    re.VERBOSE,
)
_OP_NAMES = {
    "+": "+", "-": "-", "−": "-", "–": "-",
    "*": "*", "×": "*", "·": "*", "⋅": "*", "∗": "*", "\\times": "*", "\\cdot": "*",
    "\\ast": "*", "x": "x", "X": "x",
    "/": "/", "÷": "/", "\\div": "/",
    "^": "^", "**": "^",
}


@dataclass(slots=True)  # not frozen: internal, and a frozen __init__ costs per token
class _Tok:
    kind: str  # num, pct, frac, op, open, close
    text: str
    spaced: bool  # whitespace (or nothing) separates it from the previous token
    decimals: int = 0


class _Refuse(Exception):
    """Internal: abandon the parse (turned into a ParseFailure at the top)."""


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, spaced = 0, True
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _Refuse(f"not arithmetic at {text[pos:pos + 12]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "ws":
            spaced = True
            continue
        tok = m.group()
        decimals = 0
        if kind == "num":
            if len(tok) > MAX_LITERAL_DIGITS and sum(ch.isdigit() for ch in tok) > (
                    MAX_LITERAL_DIGITS):  # (a literal has no more digits than characters)
                raise _Refuse("literal too long")
            tok = tok.replace("{,}", "").replace(",", "")
            decimals = len(tok) - tok.index(".") - 1 if "." in tok else 0
        toks.append(_Tok(kind, tok, spaced, decimals))
        spaced = False
        if len(toks) > MAX_TOKENS:
            raise _Refuse("too many tokens")
    return toks


def _check_size(value: Fraction) -> Fraction:
    if (value.numerator.bit_length() > MAX_RESULT_BITS
            or value.denominator.bit_length() > MAX_RESULT_BITS):
        raise _Refuse("value too large")
    return value


_Val = tuple[Fraction, Fraction]  # (exact value, absolute uncertainty)


def _mul(a: _Val, b: _Val) -> _Val:
    if not a[1] and not b[1]:  # exact operands, the common case: no uncertainty to carry
        return _check_size(a[0] * b[0]), _ZERO
    err = abs(a[0]) * b[1] + abs(b[0]) * a[1] + a[1] * b[1]
    return _check_size(a[0] * b[0]), _check_size(err)


def _div(a: _Val, b: _Val) -> _Val:
    if b[0] == 0 or abs(b[0]) <= b[1]:
        raise _Refuse("division by zero (or by a value that may be zero)")
    if not a[1] and not b[1]:
        return _check_size(a[0] / b[0]), _ZERO
    err = (abs(a[0]) * b[1] + abs(b[0]) * a[1]) / (abs(b[0]) * (abs(b[0]) - b[1]))
    return _check_size(a[0] / b[0]), _check_size(err)


def _pow(base: _Val, exp: _Val) -> _Val:
    n, (b, b_err) = exp[0], base
    if exp[1] or n.denominator != 1:
        raise _Refuse("exponent is not an exact integer")
    k = abs(n.numerator)
    if b in (0, 1, -1) and not b_err:
        if b == 0 and n < 0:
            raise _Refuse("zero to a negative power")
        return (b ** k, _ZERO)
    # A lower bound on the result's size, decided before computing anything; the exact check
    # after computing costs at most twice this bound.
    size = (max(b.numerator.bit_length(), b.denominator.bit_length()) - 1) * k
    if k > 10_000 or size > MAX_RESULT_BITS:
        raise _Refuse("power too large")
    val = (_check_size(b ** k), _ZERO)
    if b_err:
        val = (val[0], _check_size((abs(b) + b_err) ** k - abs(b) ** k))
    return _div((Fraction(1), _ZERO), val) if n < 0 else val
