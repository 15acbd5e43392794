"""Low model confidence, from the logprobs the endpoint streams: the model hesitating token
after token is a sign its reasoning has lost the thread.

Each token's confidence C is minus the mean of its top-k logprobs (high: the model was sure of
its pick; low: the top tokens were close). The group confidence is the mean of C over the last
`window` tokens; the sample is faulted at the first token (from `min_tokens` on) where it falls
below `min_group_confidence`. Tokens are read one at a time through a ring buffer with a
running sum, so the verdict depends only on the sequence of confidences, never on how the
stream was cut into checkpoints: judged in flight or after the fact, the same token fires.

Opt-in (not a default): the request then asks for `top_k` logprobs per token, and the preflight
refuses an endpoint that sends none. Without confidences (an endpoint that sent none after
all) it never fires. How sure a small model is says little about whether it is right, and the
scale of confidence depends on the model and on top_k: set the threshold from the model's own
streams (scripts/confidence_live.py prints their lowest window means), see docs/VALIDATORS.md.
"""

from __future__ import annotations

from collections import deque

from pydantic import BaseModel, ConfigDict, Field, model_validator

from validators.base import (
    Checkpoint,
    ProblemContext,
    Tunable,
    Validator,
    ValidatorSession,
    Verdict,
)
from validators.lib.verdicts import ok_verdict


class ConfidenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(64, ge=1, le=4096, description="Tokens in the sliding window whose "
                                                       "mean confidence is the group's.")
    top_k: int = Field(5, ge=1, le=20, description="Top logprobs asked per token (OpenAI "
                                                    "allows up to 20).")
    min_group_confidence: float = Field(
        1.5, description="Fault when the window's mean confidence falls below this. Depends on "
                         "the model and on top_k: set it from the model's own streams (the "
                         "default is low: it never fired on SmolLM2-135M's GSM8K traces).")
    min_tokens: int = Field(64, ge=1, description="Tokens streamed before it may fire (the "
                                                  "first tokens of an answer are often unsure).")

    @model_validator(mode="after")
    def _positive_threshold(self) -> ConfidenceParams:
        if self.min_group_confidence <= 0:
            raise ValueError("min_group_confidence must be > 0 (confidence is >= 0)")
        return self


class Confidence(Validator):
    name = "confidence"
    reason_codes = frozenset({"low_confidence"})
    description = ("Low model confidence: the mean over a sliding window of tokens of minus the "
                   "mean top-k logprob falls below a threshold (needs logprobs).")
    Params = ConfidenceParams
    stage_kinds = frozenset({"problem", "solve"})
    # Higher thresholds fire more. The scale depends on the model and top_k: SmolLM2-135M's
    # lowest window means (top 5) ran 2.6 to 4.2 on GSM8K, so the ladder spans that and below.
    tunable = Tunable("min_group_confidence", (3.5, 3.25, 3.0, 2.75, 2.5, 2.0, 1.5))

    def top_logprobs(self) -> int | None:
        assert isinstance(self.params, ConfidenceParams)
        return self.params.top_k

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        assert isinstance(self.params, ConfidenceParams)
        return _ConfidenceSession(self, self.params)


class _ConfidenceSession(ValidatorSession):
    def __init__(self, validator: Confidence, p: ConfidenceParams) -> None:
        self.v = validator
        self.p = p
        self.ring: deque[float] = deque(maxlen=p.window)
        self.total = 0.0  # sum of the ring
        self.seen = 0  # tokens with a confidence so far
        self.done = False
        self.ok = ok_verdict(validator)

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        if self.done or not checkpoint.confidences:
            return self.ok
        p, ring = self.p, self.ring
        for c in checkpoint.confidences:
            if len(ring) == p.window:
                self.total -= ring[0]
            ring.append(c)
            self.total += c
            self.seen += 1
            if self.seen < p.min_tokens:
                continue
            group = self.total / len(ring)
            if group < p.min_group_confidence:
                self.done = True
                return self._fault(group, checkpoint)
        return self.ok

    def _fault(self, group: float, cp: Checkpoint) -> Verdict:
        # Soft mode: the further below the threshold, the lower the score (always < 1 here).
        score = max(0.0, min(group / self.p.min_group_confidence, 0.999))
        last = cp.steps[-1].index if cp.steps else None
        return self.v.fault("low_confidence",
                            f"mean confidence {group:.3f} over the last {len(self.ring)} tokens "
                            f"(token {self.seen}) is below {self.p.min_group_confidence:g}",
                            step_index=last, score=score)
