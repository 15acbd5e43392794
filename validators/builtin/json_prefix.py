"""Structured output: the streamed text must stay a prefix of valid JSON matching a schema.

The text is rebuilt from the checkpoints, because the runner cuts the stream at the stage's
separator and `Step.text` excludes it: each complete step is followed by the separator, except
the last step at the final checkpoint (the stream ended there) and a step of exactly
MAX_STEP_CHARS (the splitter cuts a step that never ends into pieces without a separator). The
`tail` of a fraction checkpoint is fed as it grows; the step it belongs to later arrives
complete and only its unseen remainder is fed (the splitter's tails only ever grow; were that
broken, the session would stop judging rather than guess). Work per checkpoint is
proportional to its new text (validators/lib/json_stream.py).

Limits of the rebuild: the splitter drops steps that are blank, and with them one separator.
With a whitespace separator (the default "\\n") that never changes the verdict, since JSON
ignores whitespace between tokens and a raw line break inside a string is a fault anyway. A
separator made of JSON's structural characters (`}`, `]`, `"` ...) could lose text (`}}` holds
a blank step), so such separators are refused.

Faults: `invalid_json` (the text can no longer be JSON), `schema_violation` (it can no longer
match the schema), `incomplete_json` (the stream ended before the document did). A fault is
reported once; later checkpoints pass (the runner has stopped the stream by then). A fault's
span is the character that made the text impossible; `incomplete_json` has none (the document
is missing its end).
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from validators.base import (
    MAX_STEP_CHARS,
    Checkpoint,
    ProblemContext,
    Validator,
    ValidatorSession,
    Verdict,
)
from validators.lib.json_schema import SchemaSpec
from validators.lib.json_stream import JsonFault, JsonPrefixParser

_STRUCTURAL = set('{}[]"\\')


class JsonPrefixParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: SchemaSpec | None = Field(
        None, alias="schema", description="JSON Schema subset the document must match")
    strip_code_fence: bool = Field(
        False, description="allow the document inside a ```json ... ``` fence")
    separator: str = Field(
        "\n", min_length=1, max_length=64,
        description="the stage's checkpoint separator (Step texts exclude it)")
    max_depth: int = Field(128, ge=1, le=10_000, description="deeper nesting is a fault")
    score_on_fault: float = Field(
        default=0.0, ge=0, lt=1,
        description="verdict score when it fires (below 1; matters in soft mode)")

    @field_validator("separator", mode="before")
    @classmethod
    def _separator(cls, v: Any) -> Any:
        if isinstance(v, str) and "\\" in v:  # `\n` written in YAML single quotes
            v = v.encode().decode("unicode_escape")
        if isinstance(v, str) and _STRUCTURAL & set(v):
            raise ValueError("a separator with JSON structural characters ({ } [ ] \" \\) "
                             "cannot be rebuilt exactly: the splitter drops blank steps")
        return v


class _JsonPrefixSession(ValidatorSession):
    def __init__(self, validator: JsonPrefixValidator, params: JsonPrefixParams) -> None:
        self.v, self.p = validator, params
        self.parser = JsonPrefixParser(validator.node, max_depth=params.max_depth,
                                       allow_code_fence=params.strip_code_fence)
        self.next_step = 0  # index of the first step not fed yet
        self.tail_fed = ""  # text fed ahead of its step (from fraction checkpoints)
        self.done = False  # a fault was reported, or the text can no longer be rebuilt

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.done:
            return self.v.ok()
        verdict = self._feed(checkpoint)
        self.done = self.done or verdict is not None
        return verdict or self.v.ok()

    def _feed(self, cp: Checkpoint) -> Verdict | None:
        last = cp.steps[-1].index if cp.steps else None
        for step in cp.steps:
            if step.index < self.next_step:
                continue  # already fed (a checkpoint handed twice)
            cut = len(step.text) >= MAX_STEP_CHARS  # a piece of a longer line: no separator
            text = self._unseen(step.text, cut)
            if text is None:
                return None
            at = step.start + len(step.text) - len(text)  # the separator follows in the text
            if not cut and not (cp.final and step.index == last):
                text += self.p.separator
            self.next_step = step.index + 1
            if (fault := self.parser.feed(text)) is not None:
                return self._verdict(fault, step.index, text, at)
        if cp.tail and not cp.final:
            text = self._unseen(cp.tail, False)
            if text is None:
                return None
            self.tail_fed = cp.tail
            if (fault := self.parser.feed(text)) is not None:
                return self._verdict(fault, self.next_step, text,
                                     cp.tail_start + len(cp.tail) - len(text))
        if cp.final and (fault := self.parser.finish()) is not None:
            return self._verdict(fault, max(self.next_step - 1, 0), "", 0)
        return None

    def _unseen(self, text: str, cut: bool) -> str | None:
        """The part of `text` (the current step, or the latest tail) not fed yet. A tail fed
        earlier is where the step starts; a step cut from a longer line may end inside it, and
        then the rest of the tail is where the next piece starts. The splitter guarantees one
        of these; if not, the text cannot be rebuilt and the session stops judging (None)."""
        fed = self.tail_fed
        if text.startswith(fed):
            self.tail_fed = ""
            return text[len(fed):]
        if cut and fed.startswith(text):
            self.tail_fed = fed[len(text):]
            return ""
        self.done = True
        return None

    def _verdict(self, fault: JsonFault, step_index: int, fed: str, fed_at: int) -> Verdict:
        """The fault, in the piece `fed` that starts at `fed_at` in the stage text."""
        at = fault.offset - self.parser.offset  # the parser stops at the piece that failed
        near = fed[max(at - 30, 0):at + 10]
        where = f" near {near!r}" if near else ""
        at = min(max(at, 0), len(fed) - 1)
        return self.v.fault(fault.reason, f"{fault.message} at character {fault.offset}{where}",
                            step_index=step_index, score=self.p.score_on_fault,
                            span=(fed_at + at, fed_at + at + 1) if fed else None)


class JsonPrefixValidator(Validator):
    name = "json_prefix"
    description = ("Structured output: the stream must stay a prefix of valid JSON matching "
                   "the job's schema; rejects at the first character that makes it impossible.")
    Params = JsonPrefixParams
    stage_kinds = frozenset({"solve", "problem"})
    reason_codes = frozenset({"invalid_json", "schema_violation", "incomplete_json"})

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        assert isinstance(self.params, JsonPrefixParams)
        schema = self.params.schema_
        self.node = schema.to_node() if schema is not None else None

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, JsonPrefixParams)
        return _JsonPrefixSession(self, self.params)
