"""A validator fed as a stream would feed it: steps through the checkpoint splitter, one verdict
per checkpoint."""

from __future__ import annotations

from typing import Any

from validators.base import ProblemContext, Verdict
from validators.checkpoints import CheckpointSplitter
from validators.registry import build

CTX = ProblemContext(problem="How many apples are left?")


def stream(name: str, steps: list[str], separator: str = "\n",
           params: dict[str, Any] | None = None, ctx: ProblemContext = CTX) -> list[Verdict]:
    """Feed steps (joined by `separator`, each counted as its number of words in tokens) to the
    validator `name` built with `params`; one verdict per checkpoint, the last at close."""
    session = build(name, params).open(ctx)
    splitter = CheckpointSplitter(separator=separator)
    verdicts = []
    for i, step in enumerate(steps):
        chunk = step + (separator if i < len(steps) - 1 else "")
        verdicts += [session.feed(cp) for cp in splitter.push(chunk, len(chunk.split()) or 1)]
    verdicts.append(session.feed(splitter.close()))
    return verdicts


def first_fault(verdicts: list[Verdict]) -> Verdict | None:
    return next((v for v in verdicts if not v.ok), None)
