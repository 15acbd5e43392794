"""The text a rejection points at: offsets into the stage text and the text quoted there.

A validator's verdict carries a span (validators.base.Verdict.span); the step judge's rejection
points at the step it judged last. The span is checked against the stage text (a custom
validator may compute it wrong: a span outside the text is dropped, never stored) and capped at
`MAX_SPAN_CHARS` by moving its end, so that what is stored always holds
`span_text == stage_text[span_start:span_end]` — a repeated 20,000-character line is quoted by
its first 500 characters, which is enough to recognise it.
"""

from __future__ import annotations

from tasks.records.models import RejectionRecord
from validators.checkpoints import CheckpointSplitter

MAX_SPAN_CHARS = 500

Span = tuple[int, int]


def with_evidence(record: RejectionRecord, text: str, span: Span | None) -> RejectionRecord:
    """`record` pointing at `text[start:end]` (capped), or unchanged when `span` does not lie
    in `text`."""
    if not (isinstance(span, tuple) and len(span) == 2):
        return record
    start, end = span
    if not (type(start) is int and type(end) is int and 0 <= start < end <= len(text)):
        return record
    end = min(end, start + MAX_SPAN_CHARS)
    return record.model_copy(update={"span_start": start, "span_end": end,
                                     "span_text": text[start:end]})


def step_span(text: str, separator: str, index: int) -> Span | None:
    """Where step `index` of `text` is, the steps counted as the stage's splitter counts them
    (blank steps skipped, a step longer than the splitter's bound in pieces). Used for the step
    judge's rejections, once per rejection: the cost of re-reading the text does not matter."""
    splitter = CheckpointSplitter(separator=separator, every_step=False)
    for checkpoint in (*splitter.push(text, 0), splitter.close()):
        for step in checkpoint.steps:
            if step.index == index:
                return step.start, step.start + len(step.text)
    return None
