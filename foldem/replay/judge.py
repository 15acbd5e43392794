"""Deterministic judge answers, so the S4 judge stage can be tested and demonstrated.

A request whose `model` starts with `judge` is answered as an LLM judge would: the replay finds
the recorded solution quoted in the prompt and scores it from its correctness label (5 when the
recorded final answer is correct, 2 when not, 3 when it cannot tell which recording is quoted).
This makes the replayed judge a good one on purpose: it tests the plumbing, not a model.
"""

from __future__ import annotations

from foldem.replay.traces import Trace, TraceLibrary

JUDGE_MODEL_PREFIX = "judge"
SCORE_CORRECT, SCORE_WRONG, SCORE_UNKNOWN = 5, 2, 3


def is_judge_request(model: str) -> bool:
    return model.lower().startswith(JUDGE_MODEL_PREFIX)


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
