"""Normalising a final answer for comparison: foldem's own exact fast path.

Numbers (with $, commas, %, a unit word or a few, \\frac{a}{b}, a/b, decimals) become an exact
rational string ("72", "3/2", "-1/4"); a multiple-choice letter becomes the lower-case letter;
anything else a lowercase string with whitespace collapsed and LaTeX spacing removed. Two answers
whose normal forms are equal are the same answer; unequal normal forms are only conclusive when
both are plain (see `is_plain`), otherwise validators.lib.answer_equivalence decides.

Model text is untrusted: numbers are parsed with `fractions.Fraction` from a strict regex, never
evaluated. Only ASCII digits are digits (re.ASCII), so "٧٢" is not silently read as 72.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

MAX_ANSWER_CHARS = 200  # a normalised answer longer than this is kept as text, not parsed
MAX_INPUT_CHARS = 800  # an answer longer than this is unparseable
MAX_TOKEN_CHARS = 60  # a long answer is text only when no word in it is longer than this
MAX_NUMBER_CHARS = 60  # digits beyond this are not a number anyone meant as an answer

_NUMBER = re.compile(
    r"^(?P<sign>[-+]?)(?:(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d*))?|\.(?P<frac2>\d+))$",
    re.ASCII)
_SLASH_FRACTION = re.compile(r"^(?P<sign>[-+]?)(?P<num>\d+)\s*/\s*(?P<den>\d+)$", re.ASCII)
_LATEX_FRACTION = re.compile(
    r"^(?P<sign>[-+]?)\\[dt]?frac\s*\{\s*(?P<num>[-+]?\d+)\s*\}\s*\{\s*(?P<den>[-+]?\d+)\s*\}$",
    re.ASCII)
_TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|boldsymbol|bm|emph|mbox|textnormal)"
    r"\s*\{([^{}]*)\}")
_INNER_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b")
_LATEX_SPACING = re.compile(r"\\[,;:! ()\[\]]|\\q?quad\b|\\(?:left|right)\b|~")
_VARIABLE_PREFIX = re.compile(r"^[a-zA-Z]\s*=\s*(?=[^=])")
_UNIT = r"[a-zA-Z]+\.?(?:\^\{?\d\}?)?"
_NUMBER_THEN_WORDS = re.compile(  # "12 tomatoes", "5 cm^2", "18 dollars per day"
    rf"^(?P<num>[^a-zA-Z\\]*\d[^a-zA-Z\\]*?)\s*{_UNIT}(?:\s+{_UNIT}){{0,5}}\s*$")
_UNICODE_MINUS = str.maketrans({"−": "-", "–": "-", "\u00a0": " ", "\u2009": " ",
                                "\u202f": " "})
_INEQUALITY = re.compile(r"[<>!]=|\\(?:le|ge|ne|leq|geq|neq)\b")
_CHOICE = re.compile(  # "(C)", "(C) 42", "C)", "option C", "choice (b)"
    r"^(?:(?:option|choice)\s*)?\(?(?P<letter>[A-Ja-j])\)(?:\s.*)?$|"
    r"^(?:option|choice)\s*(?P<letter2>[A-Ja-j])\b.*$", re.IGNORECASE | re.DOTALL)
_PARENTHESISED_WORD = re.compile(r"^\((\w+)\)$")
_PHANTOM = re.compile(r"\\phantom\s*\{[^{}]*\}")
_WS = re.compile(r"\s+")
_SPACE_AROUND_PUNCT = re.compile(r"\s*([,;=()\[\]{}+*/^-])\s*")
_PLAIN = re.compile(r"^-?\d+(?:/\d+)?$|^[a-z][a-z'-]*(?:(?:, ?| )[a-z][a-z'-]*)*$", re.ASCII)


def _strip_wrappers(s: str) -> str:
    """Remove what surrounds an answer: math delimiters, bold, a trailing period, \\text{}."""
    for _ in range(4):  # wrappers nest a little ("$\\(...\\)$."); bounded
        before = s
        s = s.strip().rstrip(".").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("**", "**"),
                            ("__", "__")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left):len(s) - len(right)]
        if s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s[1:-1]
        if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
            s = s[1:-1]
        s = s.strip("*").strip()  # a stray bold marker ("**Answer: 42**" leaves "42**")
        if s == before:
            break
    return s.strip()


def _canonical_number(s: str) -> str | None:
    """An exact rational, as "n" or "n/d", or None when `s` is not a plain number."""
    if len(s) > MAX_NUMBER_CHARS:
        return None
    value: Fraction | None = None
    if m := _NUMBER.match(s):
        whole = (m.group("int") or "0").replace(",", "")
        frac = m.group("frac") or m.group("frac2") or ""
        value = Fraction(int(whole + frac), 10 ** len(frac))
        if m.group("sign") == "-":
            value = -value
    elif m := (_SLASH_FRACTION.match(s) or _LATEX_FRACTION.match(s)):
        num, den = int(m.group("num")), int(m.group("den"))
        if den == 0:
            return None
        value = Fraction(num, den) * (-1 if m.group("sign") == "-" else 1)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


@lru_cache(maxsize=4096)  # several validators normalise the same marker and reference
def normalize_answer(s: str) -> str | None:
    """A canonical form of an answer for comparison, or None when there is nothing to compare."""
    if not s or len(s) > MAX_INPUT_CHARS:
        return None
    s = s.translate(_UNICODE_MINUS)
    s = _TEXT_WRAPPER.sub(r" \1 ", s)
    s = _INNER_BOXED.sub(r"\1", s)  # "a = \boxed{b}" inside an answer
    s = _LATEX_SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = _strip_wrappers(s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _PHANTOM.sub("", s)
    s = _WS.sub(" ", s).strip().rstrip(".").strip()
    s = _VARIABLE_PREFIX.sub("", s)
    if "=" in s and not _INEQUALITY.search(s):
        # "6 \\cdot 5 = 30", "(b, c) = (6, 5)": a chain or assignment answers its last side
        s = s.rpartition("=")[2].strip()
    s = _PARENTHESISED_WORD.sub(r"\1", s)  # "(C)" is the choice "C"
    if len(s) <= 80 and (m := _CHOICE.match(s)):
        return (m.group("letter") or m.group("letter2")).lower()
    if not s:
        return None
    if len(s) > MAX_ANSWER_CHARS:  # long text (a sorted word list, a long formula): as text
        if max(map(len, s.split())) > MAX_TOKEN_CHARS or not any(c.isalnum() for c in s):
            return None
        return _SPACE_AROUND_PUNCT.sub(r"\1", s.lower())
    number = _canonical_number(s.replace(" ", "")) if len(s) <= MAX_NUMBER_CHARS else None
    if number is None and (m := _NUMBER_THEN_WORDS.match(s)):
        number = _canonical_number(m.group("num").replace(" ", ""))
    if number is not None:
        return number
    if not any(ch.isalnum() for ch in s):
        return None  # punctuation only: nothing was answered
    return _SPACE_AROUND_PUNCT.sub(r"\1", s.lower())


def is_plain(normalized: str) -> bool:
    """Whether a normal form is a plain number or plain words, where string equality decides."""
    return bool(_PLAIN.match(normalized))


def answers_equal(a: str, b: str) -> bool:
    """Whether two answers are the same after normalisation (False if either is unparseable)."""
    na, nb = normalize_answer(a), normalize_answer(b)
    return na is not None and na == nb
