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
`²`, `:30`, `pm`, `choose`). Steps about modular or other-base arithmetic are skipped. Rounded
results are accepted within the precision they are written in (see safe_math.agrees).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice

from pydantic import BaseModel, ConfigDict, Field

from validators._verdicts import ok_verdict
from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.registry import register
from validators.safe_math import MAX_EXPR_CHARS, Parsed, agrees, parse_arithmetic

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
    """One equation that does not hold."""

    written: str
    exact: Fraction

    def describe(self) -> str:
        return f"{self.written} (exact: {format_exact(self.exact)})"


def format_exact(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    as_float = f"{float(value):.6g}" if abs(value) < 10**15 else "…"
    return f"{value.numerator}/{value.denominator} ≈ {as_float}"


@dataclass(frozen=True, slots=True)
class _Side:
    text: str
    parsed: Parsed


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
        prose = _APPROX_WORDS.sub("≈ ", _ANY_ANNOTATION.sub("", text))
        for start, end in relation_runs(prose):
            if budget[0] <= 0:
                return None
            found = self._check_run(prose, start, end, budget)
            if found is not None:
                return found
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
                return Mismatch(f"<<{m.group(1)}>>", lhs.exact)
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
                    return Mismatch(f"<<{m.group(1)}>>{after.group().strip()}", lhs.exact)
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
        for k in range(len(sides) - 1):
            lhs, rhs = sides[k], sides[k + 1]
            if lhs is None or rhs is None or not lhs.parsed.operators or not rhs.parsed.plain:
                continue
            budget[0] -= 1
            if budget[0] < 0:
                return None
            rel = rels[k].group()
            if self.holds(lhs, rhs.parsed, approx="=" not in rel or "~" in rel):
                continue
            if "/" in rhs.text and self._running_total(lhs, rhs.text):
                continue
            written = text[pieces[k][0]:pieces[k + 1][1]]
            return Mismatch(" ".join(written.split()), lhs.parsed.exact)
        return None

    def _running_total(self, lhs: _Side, rhs_text: str) -> bool:
        """`4 × 3 = 12/2 = 6` writes the running total 12 and goes on dividing it."""
        lead = _LEADING_NUMBER.match(rhs_text)
        stated = parse_arithmetic(lead.group()) if lead else None
        return isinstance(stated, Parsed) and (
            abs(stated.exact - lhs.parsed.exact) <= lhs.parsed.uncertainty)


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
                return self.validator.fault("arithmetic_error", mismatch.describe(),
                                            step_index=step.index, score=self.score)
        return self.ok


@register
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
