"""Final-answer markers in model text, found from a table of the phrasings models write.

Shared by the answer validators (final_answer, answer_marker, reference_answer); not a validator.
`MARKERS` is the table: each row a kind (what `final_answer`'s `kinds` parameter selects), a
pattern whose `ans` group (or `display`, a display block on the next line) is the answer, and
the literals the text must hold for the pattern to be tried at all (a cheap prefilter). The
phrasings are those of prompting conventions and chat models in general, not of one data set:

- gsm8k    ``#### 72`` at a line start (``#### Part 1`` is a heading: the rest must be a number);
- boxed    ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces (bounded depth and length);
- line     ``A: 26``, ``Answer: 26``, ``**Final Answer:** 26``, ``Answer (in dollars): 26``,
           ``Final Answer - 26``, at a line start or after a finished sentence;
- heading  a line that is only ``Final Answer`` / ``### Answer`` / ``**Answer:**``: the answer is
           the next non-empty line, possibly in the next step (see `AnswerReader`);
- phrase   the "answer is" family: "the answer is X", "So the final answer is: X", "The correct
           answer is (C).", "the answer (arabic numerals) is 42", "the answer to the question
           would be X", "X is the answer", "the correct option is B".

What follows the lead-in is cut at the end of its sentence and at a clause that explains it
(", which ...", " because ..."); a lead-in followed by words that do not state an answer ("the
answer is not ...", "the answer is correct") is no marker. Scans are linear with capped
lookahead, so hostile text costs little.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from validators.lib.answer_text import normalize_answer

MAX_BOXED_CHARS = 1000  # a boxed answer longer than this is not an answer
MAX_BOXED_DEPTH = 16
MAX_PHRASE_CHARS = 400  # "the answer is X": X is at most this long (a sorted word list fits)
MAX_MARKERS = 32  # per text: the first and last ones are kept, the middle of a flood is not


@dataclass(frozen=True, slots=True)
class AnswerMatch:
    """One final-answer marker in a text: its kind, the answer text, where it is.

    `complete` is False for a ``\\boxed{`` whose brace never closes (within the limits); its
    `raw` is then empty. `start`/`end` span the marker and its answer in the text.
    """

    kind: str
    raw: str
    start: int
    end: int
    complete: bool = True
    value_start: int = -1  # where the answer text starts (textual markers)

    @property
    def normalized(self) -> str | None:
        return normalize_answer(self.raw) if self.complete else None


# --- the table --------------------------------------------------------------------------------

# The answer: the rest of the sentence, unless another lead-in starts there (then that one is
# the marker: "Final Answer: The final answer is 7").
_INLINE = (r"(?!(?i:(?:the|my|our)[ \t]+(?:final[ \t]+)?answer\b))"
           rf"(?P<ans>[^\s:][^\n]{{0,{MAX_PHRASE_CHARS}}}?)(?=\.(?:\s|$)|\n|$)")
_DISPLAY = rf"\n?[ \t]*(?:\\\[|\$\$)(?P<display>[^$]{{1,{MAX_PHRASE_CHARS}}}?)(?:\\\]|\$\$)"
_COLON = r"[ \t]*:?(?:\*\*|__)?[ \t]*"
_ADVERB = r"(?:(?:therefore|thus|then|simply|just|indeed|clearly|also|now|hence|finally),?[ \t]+)?"
_QUALIFIER = (r"(?:(?:final|correct|required|desired|right|resulting|overall|numerical|numeric|"
              r"exact|complete|only|true|total)[ \t]+)*")
_TOPIC = (r"(?:[ \t]+(?:to|for|of)[ \t]+(?:the|this|our|your)[ \t]+"
          r"(?:question|problem|task|puzzle))?")
_PAREN = r"(?:[ \t]*\([^()\n]{1,40}\))?"
_VERB = (r"(?:is|would[ \t]+be|will[ \t]+be|should[ \t]+be|must[ \t]+be|becomes|equals|"
         r"comes[ \t]+out[ \t]+to(?:[ \t]+be)?|turns[ \t]+out[ \t]+to[ \t]+be)")
_LEAD = rf"\b(?:the|my|our|your|an?)[ \t]+{_QUALIFIER}answer{_PAREN}{_TOPIC}{_PAREN}[ \t]+{_VERB}"
_BARE_LEAD = (r"(?:^|(?<=[.!?,;][ \t])|\b(?:so|thus|hence|therefore),?[ \t]+)"
              rf"{_QUALIFIER}answer[ \t]+is")
_ANSWER_WORD = r"(?:final[ \t]+answer|answer)"
_SEP = r"[ \t]*(?:\([^()\n]{1,40}\)[ \t]*)?(?:\*\*|__)?[ \t]*(?::|：|[-–—](?=[ \t]))"


@dataclass(frozen=True, slots=True)
class Marker:
    kind: str
    name: str
    pattern: re.Pattern[str]
    needs: tuple[str, ...]  # lower-case literals, any of which the text must contain


def _row(kind: str, name: str, pattern: str, *needs: str, flags: int = 0) -> Marker:
    return Marker(kind, name, re.compile(pattern, flags), needs)


MARKERS: tuple[Marker, ...] = (
    _row("gsm8k", "hashes", r"^[ \t>*]*####[ \t]*(?P<ans>[^\n]{1,40}?)[ \t]*$", "####",
         flags=re.MULTILINE),
    # "A:" only at a line start and in capitals ("a: ..." is a list item); "Answer:" also after
    # a finished sentence on the same line.
    _row("line", "answer_line",
         r"(?:^[ \t>*#-]*|(?<=[.!?][ \t]))(?:\*\*|__)?(?:(?i:" + _ANSWER_WORD + r")(?:\*\*|__)?"
         + _SEP + r"|A(?:\*\*)?[ \t]*:)" + _COLON + f"(?:{_DISPLAY}|{_INLINE})",
         ":", "answer", "-", flags=re.MULTILINE),
    _row("phrase", "final_answer_is",
         r"(?i:\b(?:the|my|our)[ \t]+final[ \t]+answer" + _PAREN + r"[ \t]+(?:is|would[ \t]+be|"
         r"will[ \t]+be)|\bfinal[ \t]+answer[ \t]*(?:\*\*)?[ \t]*[:：])" + _COLON + _ADVERB
         + f"(?:{_DISPLAY}|{_INLINE})", "final"),
    _row("phrase", "answer_is", f"(?i:{_LEAD}|{_BARE_LEAD})" + _COLON + _ADVERB + _INLINE,
         "answer", flags=re.MULTILINE),
    _row("phrase", "is_the_answer",
         r"(?P<ans>\\\([^\n]{1,200}?\\\)|\$[^$\n]{1,200}\$|\*\*[^*\n]{1,100}\*\*|"
         r"(?<![\d,.])-?\$?\d[\d,]{0,30}(?:\.\d{1,30})?(?:[ \t]*/[ \t]*\d{1,30})?)"
         r"[ \t]+(?i:is[ \t]+(?:the|our|my)[ \t]+"
         + _QUALIFIER + r"answer)\b", "answer"),
    _row("phrase", "correct_option",
         r"(?i:\b(?:the[ \t]+)?(?:correct|right|best)[ \t]+(?:option|choice)[ \t]+is[ \t]*:?"
         r"[ \t]*)(?P<ans>\(?[A-Ja-j]\)?)(?=[\s.,;]|$)", "option", "choice"),
)

# A heading that announces the answer on the next line: "Final Answer", "### Answer:", "**Answer**".
_HEADING = re.compile(r"^[ \t>#*_-]*(?i:(?:the[ \t]+)?(?:final[ \t]+answer|answer))[ \t*_]*[:：]?"
                      r"[ \t*_]*$", re.MULTILINE)
# Words after "the answer is" that do not state an answer.
_NOT_AN_ANSWER = re.compile(
    r"^(?:not|no[ \t]+longer|correct|incorrect|wrong|right|in|to|given|obtained|found|as|being|"
    r"likely|probably|unclear|that[ \t]+(?:the|we|it)|the[ \t]+(?:same|number|sum|product|value|"
    r"result|total|one|answer)\b(?![^\n]*\d)|a[ \t]+(?:number|value|multiple)\b(?![^\n]*\d))\b",
    re.IGNORECASE)
_EXPLAINING_CLAUSE = re.compile(
    r",[ \t]+(?:which|because|since|as|so|but|and[ \t]+(?:this|that|it)|i\.e\.|e\.g\.)\b|"
    r"[ \t]+(?:because|since)\b|;", re.IGNORECASE)
_GSM8K_VALUE = re.compile(r"^[-+−]?\$?\s*[\d.,/]*\d[\d.,/]*\s*[%a-zA-Z ]{0,20}$")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")


def _clean(kind: str, name: str, raw: str) -> str | None:
    """The answer a textual marker states, or None when what follows it states none."""
    if name == "hashes":
        return raw if _GSM8K_VALUE.match(raw) else None
    if name in ("answer_is", "final_answer_is", "answer_line") and _NOT_AN_ANSWER.match(raw):
        return None
    if kind != "gsm8k" and (m := _EXPLAINING_CLAUSE.search(raw)) and m.start() > 0:
        raw = raw[:m.start()]
    return raw


def _heading_answer(line: str) -> bool:
    """Whether the line after an answer heading is the answer (not an introduction to it:
    "The area of the circle is given by:")."""
    return (bool(line) and len(line) <= MAX_PHRASE_CHARS and not line.rstrip("*").endswith(":")
            and _HEADING.fullmatch(line) is None)


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
    kept: list[AnswerMatch] = []  # `\boxed{a = \boxed{b}}`: the outer box is the answer
    for found in out:
        if not (kept and kept[-1].complete and found.start < kept[-1].end):
            kept.append(found)
    return kept


def _text_matches(text: str) -> list[AnswerMatch]:
    out: list[AnswerMatch] = []
    low = text.lower().replace("ſ", "s")  # ſ matches s under re.IGNORECASE
    for row in MARKERS:
        if not any(n in low for n in row.needs):
            continue
        for m in row.pattern.finditer(text):
            group = "display" if "display" in m.re.groupindex and m.group("display") else "ans"
            raw = m.group(group)
            cleaned = _clean(row.kind, row.name, raw) if raw is not None else None
            if cleaned is not None:
                out.append(AnswerMatch(row.kind, cleaned, m.start(), m.end(),
                                       value_start=m.start(group)))
            if len(out) > 4 * MAX_MARKERS:
                return out
    if "answer" in low:
        for h in _HEADING.finditer(text):
            rest = text[h.end():h.end() + MAX_PHRASE_CHARS + 2].lstrip("\n \t")
            line = rest.split("\n", 1)[0].strip()
            if _heading_answer(line):
                start = text.index(line, h.end())
                out.append(AnswerMatch("line", line, h.start(), start + len(line),
                                       value_start=start))
    return out


def _resolve(found: list[AnswerMatch]) -> list[AnswerMatch]:
    """One answer per place: a marker inside another's span, or overlapping an earlier one.

    "The answer is: \\boxed{7}" is one answer (the box); "Final Answer: The final answer is 7."
    is one answer (the phrase inside the line). Of two textual markers over the same words
    ("the final answer is 7" is also "answer is 7"), the first one found is kept.
    """
    every = sorted(found, key=lambda a: (a.start, -a.end))
    kept: list[AnswerMatch] = []
    for a in every:
        inner = max(a.value_start, a.start + 1)
        if a.kind != "boxed" and any(b is not a and inner <= b.start < a.end for b in every):
            continue
        if kept and a.kind != "boxed" and kept[-1].kind != "boxed" and a.start < kept[-1].end:
            continue
        kept.append(a)
    return kept


@lru_cache(maxsize=64)
def find_answers(text: str) -> tuple[AnswerMatch, ...]:
    """Every final-answer marker in `text`, in order of position (bounded in count).

    Cached (a few steps): the answer validators look at the same step in the same checkpoint.
    """
    boxed = _boxed_matches(text) if "\\" in text else []
    textual = _text_matches(text) if (":" in text or "#" in text or "nswer" in text.lower()
                                      or "ption" in text or "hoice" in text) else []
    found = _resolve(boxed + textual)
    if len(found) > MAX_MARKERS:
        half = MAX_MARKERS // 2
        found = found[:half] + found[-half:]
    return tuple(found)


def find_final_answer(text: str) -> AnswerMatch | None:
    """The final answer of `text`: the last marker, or None when there is none."""
    found = find_answers(text)
    return found[-1] if found else None


def ends_with_heading(text: str) -> bool:
    """Whether `text` ends with an answer heading ("**Final Answer**") and nothing after it."""
    tail = text[-80:].rstrip()
    last = tail.rsplit("\n", 1)[-1]
    return bool(last) and "nswer" in last and _HEADING.fullmatch(last) is not None


class AnswerReader:
    """The markers of a stream, step by step: `find_answers` per step, plus an answer heading at
    the end of one step whose answer opens the next ("**Final Answer**" then "42")."""

    __slots__ = ("pending_heading",)

    def __init__(self) -> None:
        self.pending_heading = False

    def read(self, text: str) -> tuple[AnswerMatch, ...]:
        found = find_answers(text)
        if self.pending_heading and not found:
            line = text.strip().split("\n", 1)[0].strip()
            if _heading_answer(line):
                start = text.index(line)
                found = (AnswerMatch("line", line, start, start + len(line)),)
        self.pending_heading = ends_with_heading(text)
        return found
