"""Final answers in model text: find them, normalise them, compare them.

One import point for the answer validators (final_answer, answer_marker, reference_answer) and
the rest of foldem; the work is split along its seams:

- validators.lib.answer_markers     the table of answer phrasings, and finding markers;
- validators.lib.answer_conclusion  an answer stated without a marker at the end;
- validators.lib.answer_text        normalising an answer (foldem's exact fast path);
- validators.lib.answer_equivalence math-verify behind the fast path, bounded.

`answers_match` is the comparison the validators use: equal normal forms are the same answer;
unequal plain forms (numbers, words) are different answers; anything else is decided by
math-verify, and an answer it cannot judge in bounds is "unknown" (None), never a mismatch.
"""

from __future__ import annotations

import re

from validators.lib.answer_conclusion import find_concluding_answer, find_stated_answer
from validators.lib.answer_equivalence import equivalent
from validators.lib.answer_markers import (
    MARKERS,
    AnswerMatch,
    AnswerReader,
    find_answers,
    find_final_answer,
)
from validators.lib.answer_text import answers_equal, is_plain, normalize_answer

__all__ = ["MARKERS", "AnswerMatch", "AnswerReader", "answers_equal", "answers_match",
           "find_answers", "find_concluding_answer", "find_final_answer", "find_stated_answer",
           "normalize_answer"]

_NUMBER_TOKEN = re.compile(r"-?\d+(?:/\d+)?")
_PROSE = re.compile(r"[a-z0-9 ,.'-]+")  # a sentence without math
_MAX_SENTENCE_WORDS = 12


def _single_number(normalized: str) -> str | None:
    """The one number a short textual answer states ("janet makes 18 dollars"), else None."""
    if len(normalized.split()) > _MAX_SENTENCE_WORDS or not _PROSE.fullmatch(normalized):
        return None
    numbers = _NUMBER_TOKEN.findall(normalized.replace(",", ""))
    return numbers[0] if len(numbers) == 1 else None


def answers_match(answer: str, reference: str) -> bool | None:
    """Whether `answer` is the `reference` answer: True, False, or None when it cannot be told
    (either side unparseable, or too complex to compare within bounds)."""
    na, nr = normalize_answer(answer), normalize_answer(reference)
    if na is None or nr is None:
        return None
    if na == nr:
        return True
    if is_plain(na) and is_plain(nr):
        return False  # two plain numbers or words: the fast path is exact
    if is_plain(nr) and _NUMBER_TOKEN.fullmatch(nr) and (n := _single_number(na)) is not None:
        return n == nr  # an answer written as a short sentence around one number
    return equivalent(answer, reference)
