"""Repetition loops: a model repeating itself until it hits the token limit.

Three signals, each over new text only, with bounded memory:

- a step repeated: the same step (case and spacing ignored) `max_step_repeats` times, or the same
  step with a word or two changed but the very same numbers ("For the first glass ... 2.5", "For
  the second glass ... 2.5") `max_near_repeats` times, with the words in the same order. Steps
  whose numbers change (an enumeration: day 1, day 2, ...) or whose words move around (a state
  written out at each step: "first is the raven, then second is the quail") make progress and
  are left to length_budget;
- a phrase looping inside the text: one `ngram`-word sequence `max_ngram_repeats` times within
  the last `window_words` words (rolling hashes; also catches loops inside one long paragraph);
- a degenerate character run: a unit of up to 10 characters repeated over `min_run_chars`
  characters ("181818...", "1.27272727...").

Text inside the current unfinished step (a checkpoint's `tail`) is scanned once as it arrives,
so a loop inside one enormous line is caught before the line ends.

A fault's span is the repeated occurrence: the step written once too often, the start of the
character run (its first `min_run_chars` characters), or the last occurrence of the looping
phrase in the text just scanned.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter, deque

from pydantic import BaseModel, ConfigDict, Field

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.lib.verdicts import ok_verdict
from validators.tuning import Tunable

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPLIT_WORD = re.compile(r"\S+")  # the words of str.split(): \s is str.isspace
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_PERIODIC = re.compile(r"(.{1,10}?)\1{4,}", re.DOTALL)
_RUN_OVERLAP = 64  # characters kept from scanned text so a run across a chunk border is seen
_MAX_SEQUENCE_WORDS = 120  # words of a step compared in order (bounds the sequence match)
MAX_DISTINCT_STEPS = 4096  # exact-repeat memory; a stream with more distinct steps is no loop


class RepetitionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_step_repeats: int = Field(3, ge=2, description="A step seen this many times is a loop.")
    max_near_repeats: int = Field(
        5, ge=2, description="This many near-identical steps with the same numbers are a loop "
                             "(higher than max_step_repeats: parallel cases such as 'team A ... "
                             "team B ...' legitimately repeat a sentence a few times).")
    min_step_words: int = Field(5, ge=1, description="Shorter steps are not compared.")
    similarity: float = Field(0.7, gt=0, le=1,
                              description="Word-set Jaccard similarity above which two steps with "
                                          "the same numbers count as the same step.")
    order_similarity: float = Field(
        0.85, gt=0, le=1, description="Near-identical steps must also keep their words in order "
                                      "(difflib ratio of the word sequences); steps that move "
                                      "words around carry a changing state, not a loop.")
    recent_steps: int = Field(8, ge=1, description="How many recent steps near-repeats are "
                                                   "compared with.")
    ngram: int = Field(10, ge=2, description="Words in a repeated phrase.")
    max_ngram_repeats: int = Field(8, ge=2, description="A phrase seen this many times in the "
                                                        "window is a loop.")
    window_words: int = Field(500, ge=10, description="Words in the sliding window.")
    min_run_chars: int = Field(48, ge=8, description="Length of a degenerate character run.")


class Repetition(Validator):
    name = "repetition"
    reason_codes = frozenset({"degenerate_run", "repeated_phrase", "repeated_step"})
    description = ("Repetition loops: a step repeated, a phrase looping in the recent window, or "
                   "a degenerate character run.")
    Params = RepetitionParams
    # Fewer repeats of a 10-word phrase catch loops sooner; structured solutions restate a
    # phrase a few times legitimately, so the ladder starts at 4.
    tunable = Tunable("max_ngram_repeats", (4, 6, 8, 10, 12, 16))

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, RepetitionParams)
        return _RepetitionSession(self, self.params)


class _RecentStep:
    __slots__ = ("numbers", "words", "sequence", "count")

    def __init__(self, numbers: tuple[str, ...], words: frozenset[str],
                 sequence: tuple[str, ...]) -> None:
        self.numbers, self.words, self.sequence, self.count = numbers, words, sequence, 1


def _same_order(a: tuple[str, ...], b: tuple[str, ...], limit: float) -> bool:
    """Whether two word sequences are the same text with a few words swapped in place.

    A loop rewrites a step with a word or two substituted ("For the tenth glass" / "For the
    eleventh glass"); a step that carries a changing state in words ("first is the raven, then
    second is the quail" / "first is the quail, then second is the raven") moves words around.
    """
    if not a or not b:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= limit


class _RepetitionSession(ValidatorSession):
    def __init__(self, validator: Repetition, p: RepetitionParams) -> None:
        self.v = validator
        self.p = p
        self.exact: Counter[int] = Counter()
        self.recent: deque[_RecentStep] = deque(maxlen=p.recent_steps)
        self.carry_words: list[int] = []  # hashes of the last n-1 words scanned
        # The texts those words were read from, (text, where it starts, its word count): kept
        # by reference, read only to show where a looping phrase is.
        self.word_texts: deque[tuple[str, int, int]] = deque()
        self.words_held = 0  # the words of those texts
        self.gram_window: deque[int] = deque(maxlen=p.window_words)  # n-gram hashes
        self.run_carry = ""
        self.run_carry_end = 0  # where the text the carry ends with ends in the stage text
        self.next_step = 0  # index of the step the tail belongs to
        self.tail_text = ""  # the unfinished step as last seen (its characters are scanned)
        self.tail_words = 0  # how much of it the word scan has seen (up to a whitespace)
        self.done = False
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.done:
            return self.ok
        verdict = self._feed(checkpoint)
        self.done = verdict is not None
        return verdict or self.ok

    def _feed(self, cp: Checkpoint) -> Verdict | None:
        for step in cp.steps:
            runs_from = words_from = 0
            if step.index == self.next_step and step.text.startswith(self.tail_text):
                runs_from, words_from = len(self.tail_text), self.tail_words
            self.next_step, self.tail_text, self.tail_words = step.index + 1, "", 0
            found = (self._scan_runs(step.text[runs_from:], step.index, step.start + runs_from)
                     or self._scan_ngrams(step.text[words_from:], step.index,
                                          step.start + words_from)
                     or self._judge_step(step.text, step.index, step.start))
            if found:
                return found
        return self._scan_tail(cp.tail, cp.tail_start) if cp.tail else None

    def _scan_tail(self, tail: str, start: int) -> Verdict | None:
        """Scan the new part of the unfinished step once: characters up to its end, words up to
        its last whitespace (a word cut in two is finished by the next chunk)."""
        if not tail.startswith(self.tail_text):  # not the step seen before: start afresh
            self.tail_text, self.tail_words = "", 0
        found = self._scan_runs(tail[len(self.tail_text):], self.next_step,
                                start + len(self.tail_text))
        self.tail_text = tail
        if found:
            return found
        cut = max(tail.rfind(" "), tail.rfind("\n"), self.tail_words)
        words_from, self.tail_words = self.tail_words, cut
        return self._scan_ngrams(tail[words_from:cut], self.next_step, start + words_from)

    # -- whole steps ---------------------------------------------------------------------------

    def _judge_step(self, text: str, index: int, start: int) -> Verdict | None:
        normalized = " ".join(text.split()).lower()  # str.split: the whitespace of \s
        words = _WORD.findall(normalized)
        if len(words) < self.p.min_step_words:
            return None
        key = hash(normalized)
        if key in self.exact or len(self.exact) < MAX_DISTINCT_STEPS:
            self.exact[key] += 1
            if self.exact[key] >= self.p.max_step_repeats:
                return self.v.fault("repeated_step", f"step written {self.exact[key]} times: "
                                                     f"{text[:120]!r}", step_index=index,
                                    span=(start, start + len(text)))
        numbers = tuple(_NUMBER.findall(normalized))
        word_set = frozenset(words)
        sequence = tuple(words[:_MAX_SEQUENCE_WORDS])
        for seen in self.recent:
            if (seen.numbers == numbers and _jaccard(seen.words, word_set) >= self.p.similarity
                    and _same_order(seen.sequence, sequence, self.p.order_similarity)):
                seen.count += 1
                if seen.count >= self.p.max_near_repeats:
                    return self.v.fault("repeated_step",
                                        f"{seen.count} near-identical steps with the same "
                                        f"numbers, e.g. {text[:120]!r}", step_index=index,
                                        span=(start, start + len(text)))
                return None
        self.recent.append(_RecentStep(numbers, word_set, sequence))
        return None

    # -- the running text ----------------------------------------------------------------------

    def _scan_runs(self, text: str, index: int, start: int) -> Verdict | None:
        """Scan `text`, which starts at `start` in the stage text, with the carry before it."""
        if not text:
            return None
        carry = self.run_carry
        scanned = carry + text
        # The carry sits right before `text` in the stage text unless a separator or a blank
        # step came between: then a run starting in it is shown from where `text` starts.
        contiguous = self.run_carry_end == start
        self.run_carry, self.run_carry_end = scanned[-_RUN_OVERLAP:], start + len(text)
        if self.p.min_run_chars >= 30 and not _may_be_periodic(scanned, self.p.min_run_chars):
            return None
        for m in _PERIODIC.finditer(scanned):
            if len(m.group()) >= self.p.min_run_chars and any(c.isalnum() for c in m.group(1)):
                # The span is the run's first min_run_chars characters: enough to show it, and
                # the same whether the run was seen whole or while it was still being written.
                first = start + (m.start() - len(carry) if contiguous
                                 else max(m.start() - len(carry), 0))
                end = min(start + m.end() - len(carry), first + self.p.min_run_chars)
                return self.v.fault("degenerate_run",
                                    f"{m.group(1)!r} repeated over {len(m.group())} characters",
                                    step_index=index, span=(first, max(end, first + 1)))
        return None

    def _scan_ngrams(self, text: str, index: int, offset: int) -> Verdict | None:
        """Hash the n-grams of the new words (C-level map/zip, no per-word Python work) into the
        window, a slice at a time, and look for a phrase at the limit after each slice."""
        n, limit = self.p.ngram, self.p.max_ngram_repeats
        words = list(map(hash, text.lower().split()))
        if not words:
            return None
        carried = len(self.carry_words)
        joined = self.carry_words + words
        self.carry_words = joined[-(n - 1):] if n > 1 else []
        grams = list(map(hash, zip(*(joined[i:] for i in range(n)), strict=False)))
        step = max(1, self.p.window_words // 2)
        window = self.gram_window
        for start in range(0, len(grams), step):
            window.extend(grams[start:start + step])
            # No phrase can occur `limit` times among w n-grams with more than w - limit + 1
            # distinct ones: a set (C-level) settles the common case without counting.
            if len(set(window)) > len(window) - limit + 1:
                continue
            gram, count = Counter(window).most_common(1)[0]
            if count >= limit:
                last = max((i for i in range(start, min(start + step, len(grams)))
                            if grams[i] == gram), default=None)
                return self.v.fault("repeated_phrase",
                                    f"the same {n}-word phrase {count} times in the last "
                                    f"{self.p.window_words} words", step_index=index,
                                    span=self._phrase_span(text, offset, last, carried))
        sources = self.word_texts
        sources.append((text, offset, len(words)))
        self.words_held += len(words)
        while self.words_held - sources[0][2] >= n - 1 and len(sources) > 1:
            self.words_held -= sources.popleft()[2]
        return None

    def _phrase_span(self, text: str, offset: int, gram: int | None,
                     carried: int) -> tuple[int, int] | None:
        """Where the n-gram `gram` lies (an index into the n-grams of the `carried` words
        before `text` followed by the words of `text`, which starts at `offset` in the stage
        text). Only on a fault: the word positions are found here."""
        if gram is None:
            return None
        earlier = [(at + m.start(), at + m.end()) for source, at, _ in self.word_texts
                   for m in _SPLIT_WORD.finditer(source)]
        spans = (earlier[-carried:] if carried else []) + [
            (offset + m.start(), offset + m.end()) for m in _SPLIT_WORD.finditer(text)]
        last = min(gram + self.p.ngram - 1, len(spans) - 1)
        return (spans[gram][0], spans[last][1]) if 0 <= gram <= last else None


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


def _may_be_periodic(text: str, min_run: int) -> bool:
    """A necessary condition for a run of `min_run` (at least 30) characters with a period p of
    at most 10: some 10-character slice starting at a multiple of `stride` = min_run - 19 recurs
    within its next 10 positions. (In such a run from s, the first multiple of the stride at or
    after s, j <= s + stride - 1, has j + p + 10 <= s + min_run, so text[j:j+10] ==
    text[j+p:j+p+10].) One slice and one bounded C-level find per `stride` characters, where
    the regex tries 10 unit lengths at every position."""
    find = text.find
    return any(find(text[j:j + 10], j + 1, j + 20) >= 0
               for j in range(0, len(text) - 10, min_run - 19))
