"""Deterministic judge answers, so the judge stages can be tested, demonstrated and measured.

A request whose `model` starts with `judge` is answered as an LLM judge would: the replay finds
the recorded solution quoted in the prompt and scores it from its correctness label (5 when the
recorded final answer is correct, 2 when not, 3 when it cannot tell which recording is quoted).
This makes the replayed judge a good one on purpose: it tests the plumbing, not a model.

A model starting with `judge-steps` is a *step* judge (a solve stage's `step_judge`): the
prompt quotes a partial solution, the replay counts how many leading steps of a recording it
quotes and scores from the human step label `first_error_step`: 2 once the quote reaches the
first wrong step, 5 before it, 3 (cannot tell) for a recording without step labels. A
`JudgeNoise` makes it a worse judge on purpose, to measure what a real judge of a given quality
would save: it misses a trace's error with probability 1 - recall (drawn once per trace: a
judge that misses an error keeps missing it) and scores a correct prefix 2 with probability
false_alarm (drawn per judgement). Draws hash (seed, trace id, step count): the same request
gets the same answer, so in-flight and after-the-fact runs see the same judge.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from foldem.core.traces import Trace
from foldem.replay.traces import TraceLibrary

JUDGE_MODEL_PREFIX = "judge"
STEP_JUDGE_MODEL_PREFIX = "judge-steps"
SCORE_CORRECT, SCORE_WRONG, SCORE_UNKNOWN = 5, 2, 3


class JudgeNoise(BaseModel):
    """How much worse than the labels the replayed step judge is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recall: float = Field(1.0, ge=0, le=1, description="Share of wrong traces whose error "
                          "the judge sees (from the first wrong step on).")
    false_alarm: float = Field(0.0, ge=0, le=1, description="Chance that one judgement of a "
                               "prefix with no wrong step scores it wrong.")
    seed: int = 0


def is_judge_request(model: str) -> bool:
    return model.lower().startswith(JUDGE_MODEL_PREFIX)


def is_step_judge_request(model: str) -> bool:
    return model.lower().startswith(STEP_JUDGE_MODEL_PREFIX)


def _draw(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by `parts`."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def quoted_steps(library: TraceLibrary, problem: str, message: str) -> tuple[Trace, int] | None:
    """The recording of `problem` whose leading steps the message quotes, and how many it
    quotes (in order, each whole); the longest quote wins."""
    best: tuple[Trace, int] | None = None
    for trace in library.by_problem.get(problem, []):
        count, pos = 0, 0
        for step in trace.steps:
            at = message.find(step, pos) if step.strip() else pos
            if at < 0:
                break
            count, pos = count + 1, at + len(step)
        if count and (best is None or count > best[1]):
            best = (trace, count)
    return best


def step_judgement(quote: tuple[Trace, int] | None, noise: JudgeNoise) -> tuple[str, int]:
    """The step judge's reply text and its score for a quoted prefix."""
    if quote is None:
        return f"Score: {SCORE_UNKNOWN}\nReason: the quote matches no recording.", SCORE_UNKNOWN
    trace, steps = quote
    label = trace.first_error_step
    if label is None:
        score, why = SCORE_UNKNOWN, "the recording has no step labels"
    elif 0 <= label < steps and _draw(noise.seed, trace.id, "miss") < noise.recall:
        score, why = SCORE_WRONG, f"step {label + 1} is wrong"
    elif (label < 0 or steps <= label) and _draw(noise.seed, trace.id, steps) < noise.false_alarm:
        score, why = SCORE_WRONG, "a step looks wrong (a false alarm)"
    else:
        score, why = SCORE_CORRECT, f"the first {steps} steps are right"
    return f"Score: {score}\nReason: {why} (replayed step judgement).", score


def quoted_trace(library: TraceLibrary, problem: str, message: str) -> Trace | None:
    """The recording of `problem` whose solution the message quotes (all of it, or at least
    its first step: an early exit may have cut the end); the most complete match wins."""
    best: tuple[int, Trace] | None = None
    for trace in library.by_problem.get(problem, []):
        if trace.text in message:
            quoted = len(trace.text)
        elif trace.steps and trace.steps[0] in message:
            quoted = sum(len(s) for s in trace.steps if s in message)
        else:
            continue
        if best is None or quoted > best[0]:
            best = (quoted, trace)
    return None if best is None else best[1]


def judgement(trace: Trace | None) -> tuple[str, int]:
    """The judge's reply text and its score."""
    if trace is None:
        score, why = SCORE_UNKNOWN, "the quoted solution matches no recording"
    elif trace.final_answer_correct:
        score, why = SCORE_CORRECT, "the final answer is correct"
    else:
        score, why = SCORE_WRONG, "the final answer is wrong"
    return f"Score: {score}\nReason: {why} (replayed judgement).", score
