"""A stage text cut into the pieces the audit page shows: plain text, the span a validator
named (highlighted) and, for a text over the page's limit, notes standing for what was left out.

A long text keeps its head, the neighbourhood of the span and its end (where the stream was
cut), so the page stays bounded whatever the model wrote, and what the rejection is about is
never among what was left out.
"""

from __future__ import annotations

from tasks.reports.audit_rows import TextPiece

HEAD_SHARE = 0.2  # of the limit: the beginning of a long text
SPAN_CONTEXT_SHARE = 0.15  # of the limit: on each side of the span


def valid_span(text: str, start: int | None, end: int | None) -> tuple[int, int] | None:
    """(start, end) when both offsets are set and name a non-empty run of `text`."""
    if start is None or end is None or not 0 <= start < end <= len(text):
        return None
    return start, end


def _kept_ranges(length: int, span: tuple[int, int] | None, limit: int) -> list[tuple[int, int]]:
    if length <= limit:
        return [(0, length)]
    head = int(limit * HEAD_SHARE)
    ranges = [(0, head)]
    budget = limit - head
    if span is not None:
        context = int(limit * SPAN_CONTEXT_SHARE)
        around = (max(0, span[0] - context), min(length, span[1] + context))
        ranges.append(around)
        budget = max(0, budget - (around[1] - around[0]))
    ranges.append((max(0, length - max(budget, limit // 10)), length))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def text_pieces(text: str, span: tuple[int, int] | None, limit: int) -> list[TextPiece]:
    """`text` as pieces: the span (when given) as its own piece, and for a text over `limit`
    characters an "omitted" piece for each gap left out."""
    pieces: list[TextPiece] = []
    previous_end = 0
    for start, end in _kept_ranges(len(text), span, limit):
        if start > previous_end:
            pieces.append(TextPiece(kind="omitted",
                                    text=f"… {start - previous_end:,} characters not shown …"))
        cuts = sorted({start, end, *(min(max(o, start), end) for o in (span or ()))})
        for a, b in zip(cuts, cuts[1:], strict=False):
            if a < b:
                inside = span is not None and span[0] <= a and b <= span[1]
                pieces.append(TextPiece(kind="span" if inside else "text", text=text[a:b]))
        previous_end = end
    return pieces
