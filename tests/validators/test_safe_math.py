"""safe_math: exact values for arithmetic text, refusals (never exceptions) for everything else."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
import sympy

from validators.lib.math_primitives import MAX_DEPTH
from validators.lib.safe_math import Parsed, ParseFailure, agrees, evaluate, parse_arithmetic


@pytest.mark.parametrize(("text", "expected"), [
    ("48/2", 24),
    ("16 - 3", 13),
    ("1,234,567 + 1", 1234568),
    ("1{,}000 + 1", 1001),
    ("2.5 * 4", 10),
    (".5 + .25", Fraction(3, 4)),
    ("20% * 50", 10),
    ("3 x 4", 12),
    ("3X4", 12),
    ("3 × 4 ÷ 6", 2),
    ("7 · 6", 42),
    ("7 ⋅ 6", 42),
    ("7 ∗ 6", 42),
    ("10 − 4", 6),  # U+2212 minus
    ("10 – 4", 6),  # en dash
    ("2^10", 1024),
    ("2**10", 1024),
    ("2^3^2", 512),  # right-associative
    ("-2^2", -4),
    ("2^-2", Fraction(1, 4)),
    ("(3 + 4) * 2", 14),
    ("[3 + 4] * 2", 14),
    ("2(3+4)", 14),
    ("(2)(3)", 6),
    (r"\frac{1}{3} \times 18", 6),
    (r"\dfrac{3}{4} \cdot 8", 6),
    (r"\tfrac{1}{2} \div 2", Fraction(1, 4)),
    (r"\left( 3 + 4 \right) \times 2", 14),
    (r"{3 + 4} \times 2", 14),
    (r"10^{3}", 1000),
    (r"\frac{\frac{1}{2}}{2}", Fraction(1, 4)),
    ("$5 + $3", 8),
    (r"\$5 + \$3", 8),
    (r"50\% \times 8", 4),
    ("- -3", 3),
])
def test_values_are_exact(text: str, expected: int | Fraction) -> None:
    parsed = parse_arithmetic(text)
    assert isinstance(parsed, Parsed), parsed
    assert parsed.exact == expected
    assert parsed.value == sympy.Rational(expected)
    assert isinstance(parsed.value, sympy.Rational)


@pytest.mark.parametrize("text", [
    "3,4",  # not a thousands separator
    "1,0000",
    "2x + 3",  # algebra: x next to a letterless operator reads as a variable
    "2x",
    "x * 3",
    "3 x y",
    "2 1/2 * 4",  # a mixed number
    r"2\frac{1}{2}",
    "(2) 3",  # a numbered list item, not a product
    "1 / 0",
    "0^-1",
    "(3 + 4",
    "3 + 4]",
    "f(2)",
    "sqrt(16)",
    "3!",
    "3 + ",
    "",
    "   ",
    r"\frac12",  # LaTeX shorthand without braces: refused, not guessed
    "2^0.5",  # a non-integer exponent has no exact rational value
    "2^(1/2)",
    "1.2.3",
])
def test_not_arithmetic_is_a_failure_value(text: str) -> None:
    assert isinstance(parse_arithmetic(text), ParseFailure)
    assert evaluate(text) is None


# Unicode digits and look-alike operators are refused, not normalised: NFKC would turn `3²`
# into `32`, and a refusal can only cost a missed check, never a false rejection.
@pytest.mark.parametrize("text", [
    "١٢ + ٣",  # Arabic-Indic digits
    "１２ + ３",  # fullwidth digits
    "3²",
    "2 ＋ 2",  # fullwidth plus
    "6 ∕ 2",  # division slash
    "8 ⁄ 2",  # fraction slash
    "2 ✕ 3",
    "2 — 3",  # em dash is punctuation
])
def test_unicode_digits_and_lookalikes_are_refused(text: str) -> None:
    assert isinstance(parse_arithmetic(text), ParseFailure)


@pytest.mark.parametrize("text", [
    "9^9^9^9",
    "2**2**2**2**2**2**2",
    "10^100000",
    "(10^999)^2",
    "10^999 * 10^999 * 10^999 * 10^999",
    "2^(2^(2^(2^(2^2))))",
    "1" * 10_000 + " + 1",  # a 10,000-digit literal
    "0." + "3" * 10_000,
    "1 + " * 1000 + "1",  # too many tokens
    r"\frac{" * 1000 + "1" + "}{2}" * 1000,  # nested 1,000 deep
    "(" * 1000 + "1" + ")" * 1000,
    "-" * 1000 + "1",
    "2^" * 1000 + "2",
    "1" * 1_000_000,  # a 1 MB line
])
def test_hostile_input_is_refused_quickly(text: str) -> None:
    started = time.perf_counter()
    result = parse_arithmetic(text)
    elapsed = time.perf_counter() - started
    assert isinstance(result, ParseFailure)
    assert elapsed < 0.25, f"took {elapsed:.3f}s"


def test_depth_limit_is_the_refusal_not_a_recursion_error() -> None:
    shallow = "(" * (MAX_DEPTH // 2 - 1) + "1" + ")" * (MAX_DEPTH // 2 - 1)
    assert evaluate(shallow) == 1
    assert isinstance(parse_arithmetic("(" * 5000 + "1" + ")" * 5000), ParseFailure)


def test_large_but_bounded_powers_are_computed() -> None:
    assert evaluate("10^900") == sympy.Integer(10) ** 900
    assert evaluate("1^100000") == 1  # trivial bases are cheap whatever the exponent


@pytest.mark.parametrize(("text", "plain", "operators", "decimals", "percent"), [
    ("24", True, 0, 0, False),
    ("-24", True, 0, 0, False),
    ("24.50", True, 0, 2, False),
    ("25%", True, 0, 0, True),
    ("3/4", True, 1, 0, False),
    (r"\frac{3}{4}", True, 1, 0, False),
    ("1.5/2", False, 1, 0, False),
    ("3 + 4", False, 1, 0, False),
    ("2 * 3 - 1", False, 2, 0, False),
])
def test_shape_of_a_parse(text: str, plain: bool, operators: int, decimals: int,
                          percent: bool) -> None:
    parsed = parse_arithmetic(text)
    assert isinstance(parsed, Parsed)
    assert (parsed.plain, parsed.operators, parsed.decimals, parsed.percent) == (
        plain, operators, decimals, percent)


def test_percent_as_label() -> None:
    assert evaluate("0.5 * 40%") == sympy.Rational(1, 5)
    parsed = parse_arithmetic("0.5 * 40%", percent_as_label=True)
    assert isinstance(parsed, Parsed) and parsed.exact == 20


def _agrees(lhs: str, rhs: str, approx: bool = False) -> bool:
    left, right = parse_arithmetic(lhs), parse_arithmetic(rhs)
    assert isinstance(left, Parsed) and isinstance(right, Parsed)
    return agrees(left, right, approx=approx)


@pytest.mark.parametrize(("lhs", "rhs", "approx", "expected"), [
    ("48/2", "24", False, True),
    ("48/2", "25", False, False),
    ("48/2", "24.0", False, True),
    ("48/2", "24.1", False, False),
    ("10/3", "3.33", False, True),  # rounded
    ("10/3", "3.34", False, True),  # ceiled at the stated precision
    ("10/3", "3.3", False, True),
    ("10/3", "3.35", False, False),
    ("2/3", "0.67", False, True),
    ("2/3", "0.66", False, True),  # truncated
    ("2/3", "0.6", False, True),
    ("2/3", "0.5", False, False),
    ("29/10", "2", False, True),  # whole items: floor
    ("29/10", "3", False, True),  # whole items: ceiling
    ("29/10", "4", False, False),
    ("7.5 * 2", "14", False, False),  # exact at the stated precision: must match
    ("0.33 * 300", "100", False, True),  # 0.33 stands for 1/3
    ("0.25 * 80", "21", False, False),
    ("3/12 * 100", "25%", False, True),  # percent as a label
    ("3/12", "25%", False, True),  # percent as a fraction
    ("3/12", "30%", False, False),
    ("6/8", "3/4", False, True),
    ("6/8", r"\frac{3}{4}", False, True),
    ("6/8", "2/3", False, False),
    ("22/7", "3.1", True, True),
    ("100/3", "33", True, True),
    ("100/3", "30", True, False),
    ("5 - 8", "-3", False, True),
    ("5 - 8", "3", False, False),
])
def test_agrees(lhs: str, rhs: str, approx: bool, expected: bool) -> None:
    assert _agrees(lhs, rhs, approx) is expected
