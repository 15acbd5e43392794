"""Phrases that signal a refusal, chat meta-talk, or a solution blaming or inventing the problem.

A math solution has no reason to apologise, to say it is an AI, to invite follow-up questions,
to complain that information is missing, or to hand the work to "numerical methods". Matching is
case-insensitive on word boundaries, whitespace- and apostrophe-tolerant, over each complete step
once; the pattern is compiled once per configured validator. A fault's span is the phrase.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.lib.verdicts import ok_verdict

DEFAULT_PHRASES: tuple[str, ...] = (
    # refusal, AI self-reference
    "as an AI", "as a language model", "I'm an AI", "I am an AI", "I'm sorry, but",
    "I am sorry, but", "I apologize", "my apologies", "I'm unable to", "I am unable to",
    "I'm not able to", "I am not able to", "I cannot provide", "I cannot answer",
    "I can't answer", "I cannot help", "I can't help", "I cannot assist", "I can't assist",
    "knowledge cutoff", "as of my last update", "I don't have access to",
    "I do not have access to", "browse the internet", "real-time data",
    # chat meta-talk
    "let me know if", "feel free to ask", "is there anything else", "I hope this helps",
    "hope that helps", "happy to help",
    # the problem is blamed or declared unanswerable
    "not enough information", "insufficient information", "without additional information",
    "without more information", "without further information", "more information is needed",
    "additional information is needed", "information is not provided",
    "the problem does not provide", "the problem doesn't provide",
    "the question does not provide", "the question doesn't provide", "the problem is flawed",
    "the question is flawed", "the problem is ill-posed", "mistake in the problem",
    "error in the problem", "typo in the problem", "mistake in the question",
    "error in the question", "typo in the question", "cannot be determined",
    # hedges and hand-offs instead of an answer
    "I'm not sure", "I am not sure", "I don't know", "I do not know", "numerical methods",
    "computational tools", "computer algebra system",
)
MAX_PHRASES = 500
MAX_PHRASE_CHARS = 200


_Trie = dict[str, "_Trie"]


def _token_regex(token: str) -> str:
    """One character of a phrase: any run of whitespace for a space, either apostrophe."""
    if token == " ":
        return r"\s+"
    if token in "'’":
        return "['’]"
    return re.escape(token)


def _trie_regex(phrases: list[str]) -> str:
    """One regex for many literal phrases, factored by common prefix.

    A flat alternation makes the engine try every phrase at every position (70 phrases on 20k
    characters of single letters took ~60 ms); a prefix trie tries one branch per character.
    """
    trie: _Trie = {}
    for phrase in phrases:
        node = trie
        for ch in " ".join(phrase.lower().replace("’", "'").split()):
            node = node.setdefault(ch, {})
        node[""] = {}  # end of a phrase

    def emit(node: _Trie) -> str:
        ends = "" in node
        branches = [_token_regex(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return emit(trie)


def _bounded(phrase: str) -> bool:
    return phrase[:1].isalnum() and phrase[-1:].isalnum()


def _check_phrases(v: list[str]) -> list[str]:
    if len(v) > MAX_PHRASES:
        raise ValueError(f"at most {MAX_PHRASES} phrases")
    for p in v:
        if not p.strip():
            raise ValueError("a phrase must not be empty")
        if len(p) > MAX_PHRASE_CHARS:
            raise ValueError(f"phrase longer than {MAX_PHRASE_CHARS} characters: {p[:40]!r}...")
    return v


class HallucinationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_PHRASES),
                               description="Phrases to reject (replaces the default list).")
    extra_phrases: list[str] = Field(default_factory=list,
                                     description="Phrases added to `phrases`.")
    patterns: list[str] = Field(default_factory=list,
                                description="Extra Python regular expressions (case-insensitive).")

    _phrases_ok = field_validator("phrases", "extra_phrases")(_check_phrases)

    @field_validator("patterns")
    @classmethod
    def _compile_patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {p!r}: {exc}") from None
        return v


class Hallucination(Validator):
    name = "hallucination"
    reason_codes = frozenset({"hallucination_phrase"})
    description = ("Phrases signalling a refusal, chat meta-talk, or a problem declared "
                   "unanswerable (configurable list, case-insensitive, whole words).")
    Params = HallucinationParams

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        assert isinstance(self.params, HallucinationParams)
        p = self.params
        phrases = [x for x in [*p.phrases, *p.extra_phrases] if x.strip()]
        # Word boundaries around the whole trie: phrases that start or end in punctuation
        # ("I'm sorry, but") would not match with them, so those go in a second trie.
        parts = []
        bounded = [x for x in phrases if _bounded(x)]
        loose = [x for x in phrases if not _bounded(x)]
        if bounded:
            parts.append(rf"\b(?:{_trie_regex(bounded)})\b")
        if loose:
            parts.append(f"(?:{_trie_regex(loose)})")
        # The same phrases, case-sensitive, for text lowercased first: over twice as fast as
        # re.IGNORECASE, and the same matches when the phrases are ASCII, there are no raw
        # patterns and the text holds none of the characters re.IGNORECASE matches with an
        # ASCII letter that lower() does not turn into it (see _search).
        self.lowered: re.Pattern[str] | None = (
            re.compile("|".join(parts)) if parts and not p.patterns
            and all(x.isascii() for x in phrases) else None)
        parts += [f"(?:{x})" for x in p.patterns]
        self.regex: re.Pattern[str] | None = (
            re.compile("|".join(parts), re.IGNORECASE) if parts else None)

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _HallucinationSession(self)


class _HallucinationSession(ValidatorSession):
    def __init__(self, validator: Hallucination) -> None:
        self.v = validator
        self.done = False  # one fault per sample: a soft score is not compounded per phrase
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        regex = self.v.regex
        if regex is None or self.done:
            return self.ok
        for step in checkpoint.steps:
            span = _search(regex, self.v.lowered, step.text)
            if span is not None:
                self.done = True
                phrase = step.text[span[0]:span[1]]
                return self.v.fault("hallucination_phrase",
                                    f"phrase {phrase[:80]!r} in step {step.index}",
                                    step_index=step.index,
                                    span=(step.start + span[0], step.start + span[1]))
        return self.ok


# Characters re.IGNORECASE matches with an ASCII letter (i, s) where lower() gives another
# character, or (İ -> i + U+0307) a longer string that would shift positions.
_CASE_ODDITIES = ("İ", "ı", "ſ")


def _search(regex: re.Pattern[str], lowered: re.Pattern[str] | None,
            text: str) -> tuple[int, int] | None:
    """The span of the first phrase in `text`, as `regex` (case-insensitive) finds it."""
    if lowered is not None and (text.isascii() or not any(c in text for c in _CASE_ODDITIES)):
        m = lowered.search(text.lower())  # lower() keeps every position here
    else:
        m = regex.search(text)
    return m.span() if m is not None else None
