"""A judge's reply → a 1-5 score → the sample's rejection, if any: one rule for the judge stage
and the step judge. Model text is untrusted: regexes only, bounded input."""

from __future__ import annotations

import re

from tasks.records.models import RejectionRecord

_MAX_CHARS = 4000  # a score comes first in any sane rubric; never scan a runaway reply
_PATTERNS = (
    re.compile(r"\b(?:score|rating|grade)\s*(?:is|of|=|:)?\s*\**\s*([1-5])(?:\s*/\s*5)?\b",
               re.IGNORECASE),
    re.compile(r"\b([1-5])\s*/\s*5\b"),
    re.compile(r"^\s*\**([1-5])\**\s*(?:$|[.\n])"),
)


def parse_judge_score(text: str) -> int | None:
    """The first score the reply states ('Score: 4', 'Rating: 2/5', '4/5', a lone '3')."""
    head = text[:_MAX_CHARS]
    for pattern in _PATTERNS:
        match = pattern.search(head)
        if match:
            return int(match.group(1))
    return None


def passes(score: int | None, accept_at: int) -> bool:
    """A judge's verdict keeps the sample: a score was found and reaches `accept_at`."""
    return score is not None and score >= accept_at


def judge_rejection(stage: str, score: int | None, reply: str, accept_at: int, *,
                    through_step: int | None = None, checkpoint: int = 0,
                    tokens_at_fire: int = 0, fraction_at_fire: float | None = None
                    ) -> RejectionRecord | None:
    """The rejection of a judge's verdict, or None when it passes. `through_step` None: a judge
    stage's verdict on the whole reply of the stage before (validator 'judge'); else the step
    judge's verdict on the solution through that many steps (validator 'step_judge')."""
    if passes(score, accept_at):
        return None
    step = through_step is not None
    who = "step judge" if step else "judge"
    if score is None:
        after = f" after step {through_step}" if step else ""
        reason, detail = "judge_unparseable", (
            f"no 1-5 score in the {who}'s reply{after}: {reply[:200]!r}")
    else:
        what = f"the solution through step {through_step} at " if step else ""
        reason, detail = "low_judge_score", (
            f"{who} scored {what}{score} (accepts at {accept_at})")
    return RejectionRecord(
        stage=stage, checkpoint=checkpoint, validator="step_judge" if step else "judge",
        reason_code=reason, detail=detail,
        step_index=through_step - 1 if through_step is not None else None,
        tokens_at_fire=tokens_at_fire, fraction_at_fire=fraction_at_fire)
