"""Where the equations of a step are: calculator annotations, the runs of arithmetic material
that hold a relation (`=`, `≈`, `\\approx`), and each run's sides, read only when cleanly bounded.

Used by the arithmetic validator (validators/builtin/arithmetic.py, which checks that each equation
holds; its docstring gives the boundary rules) and by validators/lib/operands.py, so both read the
same equations. Registers no validator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from validators.lib.math_primitives import MAX_EXPR_CHARS
from validators.lib.safe_math import Parsed, parse_arithmetic

_ANNOTATION = re.compile(r"<<([^<>\n]{1,200})>>")
_ANY_ANNOTATION = re.compile(r"<<[^<>\n]{0,400}>>")
# A stretch of arithmetic material on one line: numbers, operators, brackets, LaTeX commands.
_RUN = re.compile(
    r"""(?:
        [0-9 \t+\-*/^×÷·⋅∗−–%=≈~$]+ | [.,](?=[0-9]) | \{,\}
      | \\[,;:!\ ] | \\q?quad(?![A-Za-z])
      | \\(?:times|cdot|div|ast|[dt]?frac|left|right|approx|%|\$)(?![A-Za-z])
      | (?<!\\)[()\[\]{}]
      | (?<![A-Za-z])[xX](?![A-Za-z])
    )+""",
    re.VERBOSE,
)
_RELATION = re.compile(r"~?\s*(?:=|≈|\\approx(?![A-Za-z]))(\s*~)?")
_RELATION_MARK = re.compile(r"[=≈]|\\approx")
# Characters no _RUN atom starts at or spans: letters in none of the LaTeX commands of _RUN
# (nor x/X), newlines and a few symbols. A run never crosses one, so the scan for runs can
# resume right after one and find exactly the runs a scan from the start finds there.
_RUN_BARRIER = re.compile(r"[bjknwyzA-WYZ\n?\"'#&@_|<>]")
_MAX_RELATIONS_PER_RUN = 24
_APPROX_WORDS = re.compile(
    r"=\s*(?:approximately|approx\.|about|roughly|around|nearly|almost)\s+", re.IGNORECASE)
_SKIP_STEP = re.compile(
    r"\bmod(?:ulo)?\b|\\[bp]?mod\b|\\equiv|≡|\bbase[\s-]*\{?[0-9]|o'clock|\bin binary\b",
    re.IGNORECASE)
# A literal every _SKIP_STEP match contains (lowercased), and the characters that match an
# ASCII letter of them under re.IGNORECASE but lower() to something else (ı, ſ, İ -> i̇).
_SKIP_HINTS = ("mod", "equiv", "≡", "base", "o'clock", "binary")
_CASE_ODDITIES = ("ı", "ſ", "\u0307")
# Right after the stated number: anything that changes what the number means.
_CHANGES_MEANING = re.compile(
    r"\s*(?:thousand|million|billion|trillion|hundred|dozen|lakh|crore|k\b|m\b|bn\b"
    r"|[ap]\.?m\b\.?|:[0-9]|\^|[²³¹⁰⁴-⁹]|±|∓|\\pm|\\mp|√|\\sqrt|π|\\pi|!|i\b"
    r"|choose\b|[CP]\b|times\b|plus\b|minus\b|over\b|divided\b|multiplied\b|squared\b"
    r"|cubed\b|raised\b|to the\b|factorial\b)",
    re.IGNORECASE)
# A word right before the left side that makes the side an operand of something larger.
_OPERATOR_WORDS = frozenset(
    "choose c p plus minus times by over than from to mod modulo add subtract multiply "
    "divide sqrt root log ln sin cos tan exp abs floor ceil max min gcd lcm det twice double "
    "triple thrice quadruple half negative".split())
_FRACTION_WORDS = frozenset(
    "half halves third thirds quarter quarters fourth fourths fifth fifths sixth sixths "
    "seventh sevenths eighth eighths ninth ninths tenth tenths twice double triple thrice "
    "percent times fraction portion part square cube".split())
_GLUED_AFTER_OK = set(" \t\n.,;:?)]}\"'”’°`|")
_GLUED_AFTER_LATEX_OK = re.compile(r"\\(?:\)|\]|\\|text|mathrm|quad|,|;)")
_GLUED_BEFORE_OK = set(" \t\n\"'“‘`|")
_SIGN_CONTEXT_OK = set("([{:;,$")


@dataclass(frozen=True, slots=True)
class _Side:
    text: str
    parsed: Parsed


def _skip_step(text: str) -> bool:
    """Whether the step is about modular or other-base arithmetic (or clock time); a cheap
    substring test first, since almost no step is."""
    low = text.lower()
    if not any(h in low for h in _SKIP_HINTS) and not any(c in low for c in _CASE_ODDITIES):
        return False
    return _SKIP_STEP.search(text) is not None


def relation_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of every _RUN match of `text` that holds a relation, as a scan of `text`
    from its start finds them, without scanning the prose far from any relation: from each
    relation not yet covered, back to the nearest run barrier (or the end of the last run
    found), then forward over the runs up to it. Each stretch between relations is searched a
    bounded number of times, so the work stays linear in `text` (test_validator_prefilters)."""
    out: list[tuple[int, int]] = []
    reverse: str | None = None
    scanned = 0  # a scan from the start resumes here: the end of the last run looked at
    for mark in _RELATION_MARK.finditer(text):
        at = mark.start()
        if at < scanned:
            continue  # inside a run already looked at
        if reverse is None:
            reverse = text[::-1]
        barrier = _RUN_BARRIER.search(reverse, len(text) - at, len(text) - scanned)
        resume = len(text) - barrier.start() if barrier is not None else scanned
        for run in _RUN.finditer(text, resume):
            if run.start() > at:
                # The relation is in no run, and no run starts before this one: a scan from
                # the start reaches it next too (and it may hold the next relation).
                scanned = run.start()
                break
            scanned = run.end()
            if _RELATION.search(run.group()) is not None:
                out.append((run.start(), run.end()))
        else:
            scanned = len(text)  # no run after the relation: no later relation is in one
    return out


def _side(text: str) -> _Side | None:
    parsed = parse_arithmetic(text)
    return _Side(text, parsed) if isinstance(parsed, Parsed) else None


def _first_side(text: str, a: int, b: int) -> _Side | None:
    """The left side of a run's first relation, if it is a complete, cleanly bounded operand."""
    seg = text[a:b]
    if len(seg) > MAX_EXPR_CHARS or not _clean_start(text, a, seg):
        return None  # glued to a word or symbol: f(2), a_1, 3:30, x²
    seg = _strip_markdown_bold(seg.lstrip(" \t$"), glued=a > 0 and not text[a - 1].isspace())
    balance = _balance(seg)
    while seg[:1] in ("(", "[", "{") and balance > 0:  # `(so 3 + 4 = 7)`: unmatched opener
        seg = seg[1:].lstrip(" \t")
        balance -= 1
    if _operand_of_word(text, b - len(seg)):
        return None  # `choose (4 - 1) = 3`, `half of 10 + 4 = 7`
    if seg[:1] in ("-", "−", "–", "+", "*", "/", "^", "×", "·", "÷"):
        before = _char_before(text, b - len(seg))
        if seg[0] not in "-−–" or (before and before not in _SIGN_CONTEXT_OK):
            return None  # `apples - 3 + 5`: the sign belongs to the words before
    return _side(seg)


def _last_side(text: str, a: int, b: int) -> _Side | None:
    """The right side of a run's last relation, unless what follows changes its meaning."""
    seg = text[a:b].rstrip(" \t$*")
    if len(seg) > MAX_EXPR_CHARS:
        return None
    balance = _balance(seg)
    while seg[-1:] in (")", "]", "}") and balance < 0:  # `(so 3 + 4 = 7)`: unmatched closer
        seg = seg[:-1].rstrip(" \t$*")
        balance += 1
    after = text[b:b + 24]
    if text[b - 1:b] not in (" ", "\t") and after:
        glued_ok = after[0] in _GLUED_AFTER_OK or _GLUED_AFTER_LATEX_OK.match(after)
        if not glued_ok or (after[0] == ":" and after[1:2].isdigit()):
            return None
    if _CHANGES_MEANING.match(after):
        return None
    side = _side(seg)
    if side is not None and side.parsed.plain and re.match(r"\s*(?:percent|%)", after, re.I):
        p = side.parsed
        return _Side(seg, Parsed(p.exact / 100, 0, True, p.decimals, True, p.uncertainty))
    if side is not None and (side.parsed.percent or "/" in seg) and re.match(r"\s*of\b", after):
        return None  # `= 3/5 of the total` states a product, not a number
    return side


def _strip_markdown_bold(seg: str, glued: bool) -> str:
    """`Total:** 5 + 3` (closing bold) and `**5 + 3 = 8**` (opening bold), not `* 3`."""
    if seg.startswith("**") and (glued or not seg[2:3].isspace()):
        return seg[2:].lstrip(" \t")
    return seg


def _balance(text: str) -> int:
    count = text.count
    return count("(") + count("[") + count("{") - count(")") - count("]") - count("}")


def _clean_start(text: str, a: int, seg: str) -> bool:
    """The run is not glued to what precedes it (or only to `\\(`, `\\[`, a quote, `**`)."""
    if a == 0 or seg[:1] in _GLUED_BEFORE_OK or text[a - 1] in _GLUED_BEFORE_OK:
        return True
    if text[a - 1] in "([" and text[a - 2:a - 1] == "\\":
        return True
    return seg.startswith("**")  # closing markdown bold: `**Total:** 5 + 3`


def _char_before(text: str, pos: int, limit: int = 200) -> str:
    """The last non-blank character before `pos` ('' at the start); bounded look-back."""
    for i in range(pos - 1, max(pos - limit, 0) - 1, -1):
        if not text[i].isspace():
            return text[i]
    return "" if pos <= limit else "?"


def _word_before(text: str, pos: int, limit: int = 40) -> tuple[str, int]:
    """The word (letters, digits, %) ending just before `pos` across blanks, and where it
    starts; bounded look-back."""
    end = pos
    while end > 0 and pos - end < limit and text[end - 1] in " \t":
        end -= 1
    begin = end
    while begin > 0 and end - begin < limit and (text[begin - 1].isalnum()
                                                 or text[begin - 1] in "%/."):
        begin -= 1
    return text[begin:end], begin


def _operand_of_word(text: str, pos: int) -> bool:
    """Whether the expression starting at `pos` is the operand of an operator word before it:
    `choose (4 - 1)`, `3 times 4 + 2`, `half of 10 + 4`, `20% of 30 - 5` (but not the common
    `a total of 4 + 3`)."""
    word, begin = _word_before(text, pos)
    word = word.lower()
    if word not in ("of", "and"):
        return word in _OPERATOR_WORDS
    quantity, quantity_begin = _word_before(text, begin)
    quantity = quantity.lower()
    if word == "and":  # `the sum of 2 and 3 + 4`, but not `... = 7 and 7 x 2 = 14`
        stated = _char_before(text, quantity_begin) in ("=", "≈")
        return any(ch.isdigit() for ch in quantity) and not stated
    return quantity in _FRACTION_WORDS or quantity[-1:] in ("%",) or any(
        ch.isdigit() for ch in quantity)
