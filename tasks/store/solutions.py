"""The solution text of a stored sample: which of its stage texts is the solution.

Read from the rows as stored (`runs.spec`, `samples.stage_texts` JSON), by the exporter and by
near-duplicate removal alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def solve_stage_names(spec: Any) -> frozenset[str]:
    """Names of the spec's solve stages (a stage without a kind is a solve stage); empty when
    the spec lists no stages."""
    stages = spec.get("stages") if isinstance(spec, Mapping) else None
    if not isinstance(stages, list):
        return frozenset()
    return frozenset(str(s.get("name")) for s in stages
                     if isinstance(s, Mapping) and s.get("kind", "solve") == "solve")


def solution_text(stage_texts: Any, solve_stages: frozenset[str]) -> str:
    """The text of the last solve stage. Later stages (an S4 judge) wrote about the solution,
    not the solution, so they are skipped; without known stage kinds, the last stage's text."""
    if not isinstance(stage_texts, list):
        return ""
    for entry in reversed(stage_texts):
        if isinstance(entry, Mapping) and (not solve_stages or entry.get("stage") in solve_stages):
            return str(entry.get("text") or "")
    return ""
