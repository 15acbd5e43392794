"""A rejection's evidence: the span quoted from the stage text, checked and capped."""

from __future__ import annotations

import pytest

from tasks.engine.evidence import MAX_SPAN_CHARS, step_span, with_evidence
from tasks.records.models import RejectionRecord
from validators.base import MAX_STEP_CHARS

RECORD = RejectionRecord(stage="solve", checkpoint=0, validator="v", reason_code="r")


def test_span_is_quoted_from_the_text() -> None:
    text = "Then 2 + 2 = 5\nso"
    r = with_evidence(RECORD, text, (5, 14))
    assert (r.span_start, r.span_end, r.span_text) == (5, 14, "2 + 2 = 5")


def test_a_hostile_20k_line_is_quoted_by_its_first_characters() -> None:
    """The end moves with the cap, so the quote is still exactly the text at the offsets."""
    line = "ab" * 10_000
    text = "ok\n" + line + "\n"
    r = with_evidence(RECORD, text, (3, 3 + len(line)))
    assert r.span_start == 3 and r.span_end == 3 + MAX_SPAN_CHARS
    assert r.span_text == text[r.span_start:r.span_end] == line[:MAX_SPAN_CHARS]


@pytest.mark.parametrize("span", [None, (3, 3), (5, 2), (-1, 2), (0, 999), (True, 2), (0.5, 2),
                                  [0, 2], (0, 1, 2)])
def test_a_span_outside_the_text_is_not_stored(span: object) -> None:
    r = with_evidence(RECORD, "short text", span)  # type: ignore[arg-type]
    assert (r.span_start, r.span_end, r.span_text) == (None, None, None)


def test_step_span_counts_steps_as_the_splitter_does() -> None:
    long = "y" * (MAX_STEP_CHARS + 10)
    text = "first\n\n  \nsecond\n" + long + "\nlast"
    spans = [step_span(text, "\n", i) for i in range(5)]
    quoted = [text[a:b] for a, b in spans if a is not None]  # type: ignore[misc]
    assert quoted == ["first", "second", long[:MAX_STEP_CHARS], long[MAX_STEP_CHARS:], "last"]
    assert step_span(text, "\n", 5) is None
