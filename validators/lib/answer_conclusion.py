"""An answer stated without a marker, at the very end of a finished solution.

Two readings, both for a finished stream only (the text must end a sentence, so a stream cut off
mid-sentence at the token limit does not pass for a conclusion):

- `find_concluding_answer`: one of the last two sentences opens with a conclusion cue
  ("Therefore, ...", "In total, ...") or puts the answer in bold;
- `find_stated_answer`: one of the last two sentences states a value (a number or math),
  as chat models close a word problem ("Elvis is 54 miles east of his house."). Weaker: only
  `final_answer` uses it, to tell a finished solution from a cut-off one, never to compare.
"""

from __future__ import annotations

import re

from validators.lib.answer_markers import AnswerMatch
from validators.lib.answer_text import normalize_answer

_CONCLUSION_WINDOW = 600  # only the end of the text is read
# Sentence ends; a line ending in ":" runs on into the display math that follows it.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=\\\])\s+|(?<!:)\n+")
_CUE = re.compile(
    r"^[\s*>#-]*(?:therefore|thus|hence|so|in conclusion|in summary|in total|finally|overall|"
    r"altogether|this means|as a result|the result is|consequently|in the end|ultimately|"
    r"to summarize|to sum up|accordingly|that means|which means|we conclude)\b",
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*([^*\n]{1,60})\*\*")
_TEX_SPAN = re.compile(r"\\\((.{1,120}?)\\\)|\\\[(.{1,120}?)\\\]", re.DOTALL)
_DOLLAR_SPAN = re.compile(r"\$([^$\n]{1,120})\$")
_LAST_NUMBER = re.compile(r"[-−]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("<<", ">>"))
_FINISHED = (".", "!", "\\]", "$", "\\)", "**")


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


def _last_sentences(text: str) -> tuple[int, str, list[str]]:
    offset = max(0, len(text) - _CONCLUSION_WINDOW)
    window = text[offset:].rstrip()
    return offset, window, [s.strip() for s in _SENTENCE_END.split(window) if s.strip()]


def _read(text: str, need_cue: bool) -> AnswerMatch | None:
    offset, window, sentences = _last_sentences(text)
    if not need_cue and not window.endswith(_FINISHED):
        return None  # the text itself must end a sentence
    for s in reversed(sentences[-2:]):
        if need_cue and not (_CUE.match(s) or _BOLD.search(s)):
            continue
        if not s.endswith(_FINISHED) or not _balanced(s):
            continue
        value = _concluded_value(s)
        if value is not None and normalize_answer(value) is not None:
            start = offset + window.rfind(s)
            return AnswerMatch("conclusion", value, start, start + len(s))
    return None


def find_concluding_answer(text: str) -> AnswerMatch | None:
    """An answer stated without a marker at the very end ("Therefore, ... is 20.").

    One of the last two sentences must open with a conclusion cue (or put the answer in bold),
    be finished (a full stop, or closing display math) and have balanced brackets. The answer
    must contain a digit unless it is in bold.
    """
    return _read(text, need_cue=True)


def find_stated_answer(text: str) -> AnswerMatch | None:
    """A value stated in one of the last two sentences of a text that ends a sentence."""
    return _read(text, need_cue=False)
