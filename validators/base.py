"""The one small interface every validator implements.

A validator is configured once per stage (`Validator(params)`), then opens a *session* per
sample (`open(ctx)`). The runner feeds the session one `Checkpoint` at a time, holding only the
text that is new since the last checkpoint; the session keeps whatever state it needs (numbers
derived so far, answers seen) so its work is proportional to the new text. Sessions are pure:
no I/O, no network, no database, no Prefect, no clocks. Model text is untrusted: never eval it.

Every verdict that faults a sample can point at the text that explains it: `Verdict.span`, the
absolute character offsets (start inclusive, end exclusive) into the stage text, found from
`Step.start` and `Checkpoint.tail_start`. None when no span of text explains the fault (a
length budget, an answer that is missing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from validators.tuning import Tunable

# Hard limits every validator can rely on (the runner never sends more than this in one step).
MAX_STEP_CHARS = 20_000


class NoParams(BaseModel):
    """Parameters of a validator that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class ProblemContext:
    """What a validator may know about the sample besides the streamed text."""

    problem: str
    stage: str = "solve"
    reference_answer: str | None = None
    expected_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One reasoning step: the text between two step separators (separator excluded).

    `start` is where it begins in the stage text: `stage_text[start:start + len(text)] == text`.
    """

    index: int
    text: str
    start: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The new text a validator judges at one checkpoint.

    `steps` are complete steps not seen at an earlier checkpoint. `tail` is the text after the
    last separator when the checkpoint fell inside a step (a fraction-of-length checkpoint); it
    may be cut anywhere, so most validators ignore it; it begins at `tail_start` in the stage
    text. At the `final` checkpoint the stream has ended: the last step is complete and included
    in `steps`, and `tail` is empty.
    """

    index: int
    steps: tuple[Step, ...]
    tail: str = ""
    tokens_so_far: int = 0
    final: bool = False
    fraction: float | None = None  # tokens_so_far / expected_tokens, when expected is known
    #: The confidence of each token streamed since the previous checkpoint (minus the mean of
    #: its top-k logprobs: higher is surer), when the endpoint sent logprobs; empty otherwise.
    #: Text-only validators ignore it.
    confidences: tuple[float, ...] = ()
    tail_start: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """A validator's judgement at one checkpoint.

    `score` 1.0 means no concern, 0.0 a certain fault. `reason` is a short stable reason code
    (snake_case) whenever score < 1. `final_answer` is set once a complete final answer has been
    written, which lets the policy stop early. `span` is the smallest text that explains a
    fault: (start, end) character offsets into the stage text, end exclusive; None when no span
    of text explains it.
    """

    validator: str
    score: float = 1.0
    reason: str | None = None
    detail: str = ""
    step_index: int | None = None
    final_answer: str | None = None
    span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.score >= 1.0


class ValidatorSession(ABC):
    """Per-sample state of one validator."""

    @abstractmethod
    def feed(self, checkpoint: Checkpoint) -> Verdict:
        """Judge the new text of one checkpoint. Must not raise on any text."""


class Validator(ABC):
    """A named, configured check. Subclasses set `name`, `description` and `Params`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Stage kinds the validator makes sense for ("problem", "solve").
    stage_kinds: ClassVar[frozenset[str]] = frozenset({"solve"})
    #: Every reason code its faults can carry (the quality gate checks stored codes against
    #: the union of these).
    reason_codes: ClassVar[frozenset[str]] = frozenset()
    #: Its threshold-like param, if it has one (see `Tunable`).
    tunable: ClassVar[Tunable | None] = None

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def top_logprobs(self) -> int | None:
        """How many top logprobs per token it reads from `Checkpoint.confidences` (the request
        then asks for them); None: it judges the text only."""
        return None

    @abstractmethod
    def open(self, ctx: ProblemContext) -> ValidatorSession:
        """Start judging one sample."""

    def ok(self, **kw: object) -> Verdict:
        return Verdict(validator=self.name, **kw)  # type: ignore[arg-type]

    def fault(self, reason: str, detail: str, *, step_index: int | None = None,
              score: float = 0.0, span: tuple[int, int] | None = None) -> Verdict:
        return Verdict(validator=self.name, score=score, reason=reason, detail=detail[:500],
                       step_index=step_index, span=span)
