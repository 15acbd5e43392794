"""S1 gate: a generated problem is a question, of sensible length, in English.

- a question: it contains '?', or an instruction or question word ("..., calculate her total
  income.", "Find $x$.", "at what time ...");
- 8-100 words (configurable); rejected mid-stream as soon as the maximum is passed;
- English, cheaply: nearly all letters are ASCII, and the prose outside math ($...$, \\(...\\))
  has a share of common English function words (only judged when there are enough prose words).

Judged on the whole problem at the `final` checkpoint; the state is a few counters.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict

STOPWORDS = frozenset(
    "the a an of to in and is are was were be been for on at by with from that this these those "
    "it its as or if then than what how many much which who whom whose when where why does do did "
    "has have had will would can could should each per every all any some more less most least "
    "total her his their our your my she he they we you i me him them us there here not no".split())
# An instruction or question word anywhere ("..., then calculate the total", "\\]Find $x$",
# "at what time will it be filled."): a cheap test that the text asks for something.
_CUE = re.compile(
    r"\b(?:find|compute|calculate|determine|evaluate|simplify|solve|express|show|prove|give|list|"
    r"write|estimate|convert|factor|expand|rationalize|round|enter|how|what|which|who|whom|whose|"
    r"when|where|why)\b",
    re.IGNORECASE)
# Inline math and LaTeX commands are not prose. Linear: an attempt from one "$" stops at the next.
_MATH = re.compile(r"\$[^$]*\$|\\[A-Za-z]+")
_PROSE_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


class WellPosedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_words: int = Field(8, ge=1, description="Fewest words a problem may have.")
    max_words: int = Field(100, ge=1, description="Most words a problem may have.")
    require_question: bool = Field(True, description="The problem must ask something.")
    min_ascii_letters: float = Field(0.9, ge=0, le=1,
                                     description="Least share of ASCII among the letters.")
    min_stopword_share: float = Field(
        0.1, ge=0, le=1, description="Least share of common English words among prose words.")
    min_prose_words: int = Field(
        6, ge=1, description="Judge the stopword share only with at least this many prose words.")

    @model_validator(mode="after")
    def _range(self) -> WellPosedParams:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) exceeds max_words ({self.max_words})")
        return self


class WellPosed(Validator):
    name = "well_posed"
    reason_codes = frozenset({"not_a_question", "not_english", "too_long", "too_short"})
    description = "S1 gate: the problem is a question of min-max words in English."
    Params = WellPosedParams
    stage_kinds = frozenset({"problem"})

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, WellPosedParams)
        return _WellPosedSession(self, self.params)


class _WellPosedSession(ValidatorSession):
    def __init__(self, validator: WellPosed, params: WellPosedParams) -> None:
        self.v = validator
        self.p = params
        self.words = 0
        self.letters = 0
        self.ascii_letters = 0
        self.prose_words = 0
        self.stopwords = 0
        self.asks = False
        self.too_long = False

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.too_long:
            return self.v.ok()  # already reported
        for step in checkpoint.steps:
            self._count(step.text)
        in_tail = len(checkpoint.tail.split()) if checkpoint.tail else 0
        if self.words + in_tail > self.p.max_words:
            self.too_long = True
            return self.v.fault("too_long", f"over {self.p.max_words} words "
                                            f"({self.words + in_tail} so far)")
        return self._judge() if checkpoint.final else self.v.ok()

    def _count(self, text: str) -> None:
        self.words += len(text.split())
        letters = sum(1 for ch in text if ch.isalpha())
        self.letters += letters
        self.ascii_letters += sum(1 for ch in text if ch.isascii() and ch.isalpha())
        prose = _PROSE_WORD.findall(_MATH.sub(" ", text).lower())
        self.prose_words += len(prose)
        self.stopwords += sum(1 for w in prose if w in STOPWORDS)
        self.asks = self.asks or "?" in text or _CUE.search(text) is not None

    def _judge(self) -> Verdict:
        p = self.p
        # Script first: a problem in another script is "not English" whatever its length.
        if self.letters and self.ascii_letters / self.letters < p.min_ascii_letters:
            share = self.ascii_letters / self.letters
            return self.v.fault("not_english", f"only {share:.0%} of the letters are ASCII")
        if self.words < p.min_words:
            return self.v.fault("too_short", f"{self.words} words, fewer than {p.min_words}")
        if self.prose_words >= p.min_prose_words:
            share = self.stopwords / self.prose_words
            if share < p.min_stopword_share:
                return self.v.fault("not_english",
                                    f"only {share:.0%} common English words in the prose")
        if p.require_question and not self.asks:
            return self.v.fault("not_a_question", "the problem does not ask anything")
        return self.v.ok()
