"""Whether two answers are mathematically the same, with Hugging Face's math-verify, bounded.

Behind the exact fast path of validators.lib.answer_text: only answers whose normal forms differ
and are not both plain numbers or words get here (``\\frac{\\sqrt{2}}{2}`` vs ``\\sqrt2/2``,
intervals, sets, ``2\\pi`` vs ``6.2832``).

math-verify bounds its own work with SIGALRM, which only works in the main thread; validators run
in threads and inside async code, so its timeout is switched off (the parser and comparer are
called directly, without the timeout wrapper) and the work is bounded here instead:

- a prefilter: only a short answer built from an allowlist of LaTeX commands, with no nested
  or large exponents, no long numbers, shallow brackets and few factorials is parsed at all
  (a tower like ``9^{9^{9}}`` makes sympy compute a huge power, ``(x+y+z)^{99}`` expand a huge
  polynomial; deep parentheses make the ANTLR parser backtrack);
- results are cached per pair of answers, so a restated answer costs nothing;
- a one-time warm-up of the parser on typical answers (the first parse of each kind of LaTeX
  builds ANTLR's prediction tables, and sympy's first simplification loads and caches much, many
  times the cost of later ones). Measured after it: 1-50 ms per comparison of typical answers,
  more for the first answer of an unusual shape (printed by `foldem bench validators` as the
  slowest checkpoint); hostile text never reaches the parser.

Nothing is evaluated beyond what math-verify's parser does on the bounded extracted answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

MAX_CHARS = 120  # longer answers are not compared by math-verify
MAX_DEPTH = 4  # bracket nesting
MAX_DIGITS = 15  # per number
_ALLOWED_COMMANDS = frozenset(
    "frac dfrac tfrac sqrt pi cdot times div pm mp infty cup cap left right le ge leq geq lt gt "
    "ne neq text mathrm textbf mathbf circ degree angle emptyset varnothing in notin setminus "
    "ln log sin cos tan sec csc cot exp min max gcd lcm mid approx boxed quad qquad dots ldots "
    "cdots alpha beta gamma theta phi lambda mu sigma omega mbox displaystyle tfrac sqrt"
    .split())
# ASCII math only, with a digit or a command: prose and stray symbols are not compared.
_MATHLIKE = re.compile(r"[0-9a-zA-Z\\{}()\[\]^_+\-*/.,=<>|%$! ']+")
_HAS_MATH = re.compile(r"\d|\\[a-zA-Z]")
_DOUBLE_OPERATOR = re.compile(r"[+*/^=<>][ ]*[+*/^=]|\^[ ]*-|--")  # junk, not an answer
_COMMAND = re.compile(r"\\([a-zA-Z]+)")
_EXPONENT = re.compile(r"(\d*)\s*\^\s*(\{|\\?[a-zA-Z0-9.]+)")
# An exponent: one digit, 10-12, a letter, or minus one of those; 10^k with k up to 99.
_TAME_EXPONENT = re.compile(r"-?(?:\d|1[0-2]|[a-zA-Z])")
_LONG_NUMBER = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")
_FACTORIAL = re.compile(r"(\d+)\s*!")


def _depth(s: str) -> int:
    """Bracket nesting depth of `s`, or a depth over the limit when the brackets do not
    balance (counted together: an interval `[0, 1)` balances)."""
    depth = worst = 0
    for ch in s:
        if ch in "({[":
            depth += 1
            worst = max(worst, depth)
        elif ch in ")}]":
            depth -= 1
            if depth < 0:
                return MAX_DEPTH + 1
    return worst if depth == 0 else MAX_DEPTH + 1


def _tame_exponent(s: str, m: re.Match[str]) -> bool:
    body = m.group(2)
    if body == "{":  # the braced body, up to its closing brace (no nesting: nothing to scan)
        close = s.find("}", m.end())
        body = s[m.end():close].strip() if close >= 0 else "{"
    if m.group(1) == "10" and re.fullmatch(r"-?\d{1,2}", body):
        return True  # powers of ten: sympy computes them at once
    return bool(_TAME_EXPONENT.fullmatch(body))


def safe_to_parse(s: str) -> bool:
    """The prefilter: whether `s` is small and tame enough for math-verify's parser."""
    if not s or len(s) > MAX_CHARS or not _MATHLIKE.fullmatch(s) or not _HAS_MATH.search(s):
        return False
    if _LONG_NUMBER.search(s) or _depth(s) > MAX_DEPTH or _DOUBLE_OPERATOR.search(s):
        return False
    if any(c not in _ALLOWED_COMMANDS for c in _COMMAND.findall(s)):
        return False
    if s.count("^") > 3 or not all(_tame_exponent(s, m) for m in _EXPONENT.finditer(s)):
        return False
    return all(int(n) <= 20 for n in _FACTORIAL.findall(s)) and s.count("!") <= 2


def _bounded(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run `fn`: (finished, result); a parser or comparer error is no judgement."""
    try:
        return True, fn()
    except Exception:
        return False, None


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Callable[[str], list[Any]], Callable[[Any, Any], bool]]:
    """math-verify's parser and comparer, without its signal-based timeout (imported lazily:
    sympy and the LaTeX grammar take a while to load)."""
    from math_verify import LatexExtractionConfig
    from math_verify.grader import sympy_expr_eq
    from math_verify.parser import (
        extract_target_from_pred,
        get_extraction_regexes,
    )

    regexes = get_extraction_regexes([LatexExtractionConfig(boxed_match_priority=0)])

    def parse(answer: str) -> list[Any]:
        found = extract_target_from_pred("\\boxed{" + answer + "}", regexes,
                                         fallback_mode="no_fallback",
                                         extraction_mode="first_match")
        return [x for x in found if not isinstance(x, str)]

    def same(gold: Any, target: Any) -> bool:
        return bool(sympy_expr_eq(gold, target, float_rounding=6, numeric_precision=15,
                                  allow_set_relation_comp=False, strict=True))

    return parse, same


_WARM_UP = ("42", "-3.5", "\\frac{3}{4}", "\\dfrac{\\sqrt{3}}{2}", "2\\sqrt{5}", "3\\pi",
            "\\frac{\\pi}{6}", "(1, 2)", "[0, \\infty)", "(-\\infty, 2) \\cup (3, \\infty)",
            "\\{1, 2, 3\\}", "x^2 + 2x + 1", "(x+1)^{2}", "x = 5", "50\\%", "60^\\circ",
            "18 \\text{ dollars}", "2 + \\sqrt{3}", "\\log_2 8", "a \\le 3", "-\\frac{1}{2}",
            "1, 2, 3", "\\text{(C)}", "10^{6}", "3 \\times 4", "(x-1)(x+1)", "\\{3, 5\\}")
# Pairs compared once at warm-up: sympy's simplification is slow the first time it runs.
_WARM_UP_PAIRS = (("x^2 - 1", "(x-1)(x+1)"), ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}"),
                  ("\\{1, 2\\}", "\\{2, 1\\}"), ("2\\pi", "6.2832"))


@lru_cache(maxsize=1)
def warm_up() -> bool:
    """Parse typical answers once per process (see the module doc); True when math-verify is
    available. Called when a validator that compares answers is configured, not per sample."""
    try:
        parse, same = _math_verify()
    except ImportError:
        return False
    for answer in _WARM_UP:
        ok, parsed = _bounded(lambda a=answer: parse(a))  # type: ignore[misc]
        if ok and parsed:
            _bounded(lambda p=parsed: same(p[0], p[0]))  # type: ignore[misc]
    for a, b in _WARM_UP_PAIRS:
        _bounded(lambda a=a, b=b: any(same(x, y) for x in parse(a)  # type: ignore[misc]
                                      for y in parse(b)))
    return True


@lru_cache(maxsize=4096)
def equivalent(answer: str, reference: str) -> bool | None:
    """Whether `answer` states the `reference` answer (math-verify's judgement), or None when
    it cannot tell within bounds (the prefilter refuses one side, or a side does not parse)."""
    answer, reference = _prepare(answer), _prepare(reference)
    if not (safe_to_parse(answer) and safe_to_parse(reference)) or not warm_up():
        return None
    parse, same = _math_verify()

    def judge() -> bool | None:
        gold, target = parse(reference), parse(answer)
        if not gold or not target:
            return None
        return any(same(g, t) for g in gold for t in target)

    finished, result = _bounded(judge)
    return result if finished else None


_WRAPPERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _prepare(s: str) -> str:
    """Strip the math delimiters math-verify would otherwise read as text inside the box."""
    s = s.strip().rstrip(".").strip()
    for left, right in _WRAPPERS:
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left):-len(right)].strip()
    return s
