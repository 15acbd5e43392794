"""The S4 judge's reply → a 1-5 score. Model text is untrusted: regexes only, bounded input."""

from __future__ import annotations

import re

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
