"""Real recorded generations for tests, read from ../shared/data at test time (never copied).

Tests name traces by id; `fragment(trace_id, step)` returns one real step of text.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from foldem import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
TRACE_FILES = {
    "gpt3": SHARED_DATA / "traces" / "gsm8k_gpt3_dev.jsonl",
    "pb_gsm8k": SHARED_DATA / "traces" / "processbench_gsm8k.jsonl",
    "pb_math": SHARED_DATA / "traces" / "processbench_math.jsonl",
}


def require_shared() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@cache
def traces(name: str) -> tuple[dict[str, Any], ...]:
    """All traces of one file ('gpt3', 'pb_gsm8k', 'pb_math')."""
    require_shared()
    with TRACE_FILES[name].open(encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh if line.strip())


@cache
def _by_id() -> dict[str, dict[str, Any]]:
    return {t["id"]: t for name in TRACE_FILES for t in traces(name)}


def trace(trace_id: str) -> dict[str, Any]:
    return _by_id()[trace_id]


def fragment(trace_id: str, step: int) -> str:
    """One real step of a recorded generation."""
    return str(trace(trace_id)["steps"][step])


def full_text(trace_id: str) -> str:
    t = trace(trace_id)
    return str(t["separator"].join(t["steps"]))
