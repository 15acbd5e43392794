"""The default validator set for a `solve` stage (what `foldem bench validators` measures and
what examples/gsm8k.yaml lists). Each entry earned its place by its figures on the shared
traces (docs/VALIDATORS.md): no false rejections on traces without a wrong step."""

from __future__ import annotations

from typing import Any

#: (name, params, mode)
DEFAULT_SOLVE_VALIDATORS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("arithmetic", {}, "hard"),
    ("negative_values", {}, "hard"),
    ("hallucination", {}, "hard"),
    ("repetition", {}, "hard"),
    ("reference_answer", {}, "hard"),
    ("final_answer", {}, "hard"),
)
