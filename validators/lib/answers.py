"""Final answers in model text: find them, normalise them, compare them.

Shared by the answer validators (final_answer, answer_marker, reference_answer); not a validator.
Recognised markers, in the formats models are prompted with:

- GSM8K      ``#### 72`` at a line start (a Markdown heading such as ``#### Part 1`` is not one:
             the rest of the line must read as a short number);
- boxed      ``\\boxed{...}`` with balanced braces (bounded depth and length);
- line       ``A: 26`` / ``Answer: 26`` / ``Final Answer: 26`` at a line start;
- phrase     "the answer is X", "the final answer is X".

Everything is bounded: each scan is linear in the text with capped lookahead, so hostile text
(a megabyte without a newline, ``\\boxed{`` nested a thousand deep) costs little. Model text is
untrusted: numbers are parsed with `fractions.Fraction` from a strict regex, never evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

MAX_BOXED_CHARS = 400  # a boxed answer longer than this is not an answer
MAX_BOXED_DEPTH = 16
MAX_PHRASE_CHARS = 160  # "the answer is X": X is at most this long (one sentence)
MAX_ANSWER_CHARS = 200  # a normalised answer longer than this is treated as unparseable
MAX_MARKERS = 32  # per text: the first and last ones are kept, the middle of a flood is not
MAX_NUMBER_CHARS = 60  # digits beyond this are not a number anyone meant as an answer


@dataclass(frozen=True, slots=True)
class AnswerMatch:
    """One final-answer marker in a text: its kind, the answer text, where it is.

    `complete` is False for a ``\\boxed{`` whose brace never closes (within the limits);
    its `raw` is then empty. `start`/`end` span the marker and its answer in the text.
    """

    kind: str
    raw: str
    start: int
    end: int
    complete: bool = True

    @property
    def normalized(self) -> str | None:
        return normalize_answer(self.raw) if self.complete else None


# --- finding markers --------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_GSM8K = re.compile(r"^[ \t>*]*####[ \t]*([^\n]{1,40}?)[ \t]*$", re.MULTILINE)
# The answer after "Answer:" / "the answer is": the rest of the line, or (after a *final* answer
# marker only) a display block on the next line ("The final answer is:\n\\[ 42 \\]"). A plain
# "the answer is:" before a display is as often an intermediate result as the solution's answer.
_INLINE = rf"(?P<inline>[^\s:][^\n]{{0,{MAX_PHRASE_CHARS}}}?)(?=\.(?:\s|$)|\n|$)"
_DISPLAY = rf"\n?[ \t]*(?:\\\[|\$\$)(?P<display>[^$]{{1,{MAX_PHRASE_CHARS}}}?)(?:\\\]|\$\$)"
_COLON = r"[ \t]*:?(?:\*\*)?[ \t]*"
_LINE = re.compile(  # case matters for "A:" ("a: ..." is a list item), not for "answer"
    r"^[ \t>*#-]*(?:\*\*)?(?:(?i:final[ \t]+answer|answer)|A)(?:\*\*)?[ \t]*:"
    + _COLON + f"(?:{_DISPLAY}|{_INLINE})",
    re.MULTILINE,
)
_PHRASE = re.compile(
    r"(?i:\b(?:the|my)[ \t]+final[ \t]+answer[ \t]+is)" + _COLON + f"(?:{_DISPLAY}|{_INLINE})"
    + r"|(?i:\b(?:the|my)[ \t]+answer[ \t]+is)" + _COLON + _INLINE.replace("inline", "inline2")
)
# A GSM8K value: a signed number with optional $, commas, decimals or a fraction, maybe a unit.
_GSM8K_VALUE = re.compile(r"^[-+−]?\$?\s*[\d.,/]*\d[\d.,/]*\s*[%a-zA-Z ]{0,20}$")


def _boxed_matches(text: str) -> list[AnswerMatch]:
    out: list[AnswerMatch] = []
    starts = list(_BOXED.finditer(text))
    if len(starts) > MAX_MARKERS:  # a flood: judge the first and the last few only
        half = MAX_MARKERS // 2
        starts = starts[:half] + starts[-half:]
    for m in starts:
        open_at = m.end()  # just after "{"
        depth, close_at = 1, -1
        for b in _BRACE.finditer(text, open_at, min(len(text), open_at + MAX_BOXED_CHARS)):
            depth += 1 if b.group() == "{" else -1
            if depth == 0:
                close_at = b.start()
                break
            if depth > MAX_BOXED_DEPTH:
                break
        if close_at < 0:
            out.append(AnswerMatch("boxed", "", m.start(), m.end(), complete=False))
        else:
            out.append(AnswerMatch("boxed", text[open_at:close_at], m.start(), close_at + 1))
    return _drop_nested_boxed(out)


def _drop_nested_boxed(found: list[AnswerMatch]) -> list[AnswerMatch]:
    # `\boxed{a = \boxed{b}}`: the outer box is the answer; an inner one is part of it.
    kept: list[AnswerMatch] = []
    for m in found:
        if kept and kept[-1].complete and m.start < kept[-1].end:
            continue
        kept.append(m)
    return kept


def _text_matches(text: str) -> list[AnswerMatch]:
    out: list[AnswerMatch] = []
    for m in _GSM8K.finditer(text) if "####" in text else ():
        if _GSM8K_VALUE.match(m.group(1)):
            out.append(AnswerMatch("gsm8k", m.group(1), m.start(), m.end()))
            if len(out) > MAX_MARKERS:
                break
    # Each scan only where the literal it needs is present: a colon for a line marker, the
    # word "answer" in any case for a phrase (ſ matches s under re.IGNORECASE; lower() keeps it).
    low = text.lower()
    for pattern, kind, needed in ((_LINE, "line", ":" in text),
                                  (_PHRASE, "phrase", "answer" in low or "anſwer" in low)):
        for m in pattern.finditer(text) if needed else ():
            value = next(v for k, v in m.groupdict().items() if v is not None)
            out.append(AnswerMatch(kind, value, m.start(), m.end()))
            if len(out) > 4 * MAX_MARKERS:
                break
    return out


def _resolve(boxed: list[AnswerMatch], textual: list[AnswerMatch]) -> list[AnswerMatch]:
    """Drop a textual marker whose answer text holds a more specific marker.

    "The answer is: \\boxed{7}" is one answer (the box); "Final Answer: The final answer is 7."
    is one answer (the phrase inside the line).
    """
    every = sorted(boxed + textual, key=lambda a: (a.start, -a.end))
    kept: list[AnswerMatch] = []
    for a in every:
        if a.kind != "boxed" and any(
            b is not a and a.start < b.start < a.end for b in every
        ):
            continue
        kept.append(a)
    return kept


@lru_cache(maxsize=64)
def find_answers(text: str) -> tuple[AnswerMatch, ...]:
    """Every final-answer marker in `text`, in order of position (bounded in count).

    Cached (a few steps): the answer validators look at the same step in the same checkpoint.
    """
    boxed = _boxed_matches(text) if "\\" in text else []
    textual = _text_matches(text) if (":" in text or "#" in text or "nswer" in text) else []
    found = _resolve(boxed, textual)
    if len(found) > MAX_MARKERS:
        half = MAX_MARKERS // 2
        found = found[:half] + found[-half:]
    return tuple(found)


def find_final_answer(text: str) -> AnswerMatch | None:
    """The final answer of `text`: the last marker, or None when there is none."""
    found = find_answers(text)
    return found[-1] if found else None


# --- normalising ------------------------------------------------------------------------------

# Numbers are ASCII digits only (re.ASCII): "٧٢" is not silently read as 72.
_NUMBER = re.compile(
    r"^(?P<sign>[-+]?)(?:(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d*))?|\.(?P<frac2>\d+))$",
    re.ASCII)
_SLASH_FRACTION = re.compile(r"^(?P<sign>[-+]?)(?P<num>\d+)\s*/\s*(?P<den>\d+)$", re.ASCII)
_LATEX_FRACTION = re.compile(
    r"^(?P<sign>[-+]?)\\[dt]?frac\s*\{\s*(?P<num>[-+]?\d+)\s*\}\s*\{\s*(?P<den>[-+]?\d+)\s*\}$",
    re.ASCII)
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")
_INNER_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_LATEX_SPACING = re.compile(r"\\[,;:! ()\[\]]|\\q?quad\b|\\(?:left|right)\b|~")
_VARIABLE_PREFIX = re.compile(r"^[a-zA-Z]\s*=\s*(?=[^=])")
_NUMBER_THEN_WORDS = re.compile(  # "12 tomatoes", "5 cm", "52 candles and flashlights"
    r"^(?P<num>[^a-zA-Z\\]*\d[^a-zA-Z\\]*?)\s*(?:[a-zA-Z]+\.?\s*){1,3}$")
_UNICODE_MINUS = str.maketrans({"−": "-", "–": "-", "\u00a0": " ", "\u2009": " "})
_INEQUALITY = re.compile(r"[<>!]=|\\(?:le|ge|ne|leq|geq|neq)\b")
_PARENTHESISED_WORD = re.compile(r"^\((\w+)\)$")
_PHANTOM = re.compile(r"\\phantom\s*\{[^{}]*\}")
_WS = re.compile(r"\s+")
_SPACE_AROUND_PUNCT = re.compile(r"\s*([,;=()\[\]{}+*/^-])\s*")


def _strip_wrappers(s: str) -> str:
    """Remove what surrounds an answer: math delimiters, bold, a trailing period, \\text{}."""
    for _ in range(4):  # wrappers nest a little ("$\\(...\\)$."); bounded
        before = s
        s = s.strip().rstrip(".").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("**", "**")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left):len(s) - len(right)]
        if s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s[1:-1]
        if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
            s = s[1:-1]
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
    """A canonical form of an answer for comparison, or None when there is nothing to compare.

    Numbers (with $, commas, %, a unit word or two, \\frac{a}{b}, a/b, decimals) become an exact
    rational string ("72", "3/2", "-1/4"); anything else a lowercase string with whitespace
    collapsed and LaTeX spacing removed.
    """
    if not s or len(s) > 4 * MAX_ANSWER_CHARS:
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
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None
    number = _canonical_number(s.replace(" ", "")) if len(s) <= MAX_NUMBER_CHARS else None
    if number is None and (m := _NUMBER_THEN_WORDS.match(s)):
        number = _canonical_number(m.group("num").replace(" ", ""))
    if number is not None:
        return number
    if not any(ch.isalnum() for ch in s):
        return None  # punctuation only: nothing was answered
    return _SPACE_AROUND_PUNCT.sub(r"\1", s.lower())


def answers_equal(a: str, b: str) -> bool:
    """Whether two answers are the same after normalisation (False if either is unparseable)."""
    na, nb = normalize_answer(a), normalize_answer(b)
    return na is not None and na == nb


# --- an answer stated without a marker --------------------------------------------------------

_CONCLUSION_WINDOW = 600  # only the end of the text is read
# Sentence ends; a line ending in ":" runs on into the display math that follows it.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=\\\])\s+|(?<!:)\n+")
_CUE = re.compile(
    r"^[\s*>#-]*(?:therefore|thus|hence|so|in conclusion|in summary|in total|finally|overall|"
    r"altogether|this means|as a result|the result is)\b",
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*([^*\n]{1,60})\*\*")
_TEX_SPAN = re.compile(r"\\\((.{1,120}?)\\\)|\\\[(.{1,120}?)\\\]", re.DOTALL)
_DOLLAR_SPAN = re.compile(r"\$([^$\n]{1,120})\$")
_LAST_NUMBER = re.compile(r"[-−]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("<<", ">>"))


def _balanced(s: str) -> bool:
    return all(s.count(a) == s.count(b) for a, b in _PAIRS)


def _concluded_value(sentence: str) -> str | None:
    """The answer a concluding sentence states: bold text, else the last math span or number."""
    if picks := [m.group(1) for m in _BOLD.finditer(sentence) if not m.group(1).endswith(":")]:
        return picks[-1]
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g))
             for m in _TEX_SPAN.finditer(sentence)]
    if sentence.count("$") % 2 == 0:  # an odd count means currency ("paid $37"), not math
        spans += [(m.start(), m.end(), m.group(1)) for m in _DOLLAR_SPAN.finditer(sentence)]
    candidates = [(a, v) for a, _, v in spans if any(ch.isdigit() for ch in v)]
    candidates += [(m.start(), m.group()) for m in _LAST_NUMBER.finditer(sentence)
                   if not any(a <= m.start() < b for a, b, _ in spans)]
    return max(candidates)[1] if candidates else None


def find_concluding_answer(text: str) -> AnswerMatch | None:
    """An answer stated without a marker at the very end ("Therefore, ... is 20.").

    A fallback for a finished solution only. One of the last two sentences must open with a
    conclusion cue (or put the answer in bold), be finished (a full stop, or closing display
    math) and have balanced brackets, so a stream cut off mid-sentence at the token limit does
    not pass for a conclusion. The answer must contain a digit unless it is in bold.
    """
    offset = max(0, len(text) - _CONCLUSION_WINDOW)
    window = text[offset:].rstrip()
    sentences = [s.strip() for s in _SENTENCE_END.split(window) if s.strip()]
    for s in reversed(sentences[-2:]):
        if not (_CUE.match(s) or _BOLD.search(s)):
            continue
        if not s.endswith((".", "!", "\\]", "$")) or not _balanced(s):
            continue
        value = _concluded_value(s)
        if value is not None and normalize_answer(value) is not None:
            start = offset + window.rfind(s)
            return AnswerMatch("conclusion", value, start, start + len(s))
    return None
