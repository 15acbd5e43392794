"""The figures of `foldem bench validators` (tasks/bench/validator_bench.py): its settings, the
report models, and how one trace's outcome is tallied into a validator's figures and the rates
derived from them. The row labels (clean, wrong_step, correct_answer / wrong_answer) are
explained in tasks/bench/validator_bench.py."""

from __future__ import annotations

import platform
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from foldem.core.traces import Trace

Mode = Literal["hard", "soft"]


class ValidatorSetting(BaseModel):
    name: str
    mode: Mode = "hard"
    params: dict[str, Any] = Field(default_factory=dict)


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validators: list[ValidatorSetting]
    threshold: float = Field(0.5, ge=0, le=1)
    every_step: bool = True
    fractions: list[float] = Field(default_factory=list)
    tokens_per_push: int = Field(1, ge=1)
    early_exit: Literal[False] = False
    expected_tokens: str = "median o200k token count of the trace's file"
    clock: str = "process CPU time (time.process_time), one process, one thread"


class Machine(BaseModel):
    cores: int | None
    load_average_before: list[float]
    load_average_after: list[float] = Field(default_factory=list)
    python: str = platform.python_version()
    platform: str = platform.platform()


class ValidatorFigures(BaseModel):
    """How one validator (or the set, `COMBINED`) behaved over one scope of traces."""

    model_config = ConfigDict(extra="forbid")

    validator: str
    scope: str  # a trace file's name, or "all"
    mode: str | None = None
    traces: int = 0
    fired: int = 0
    clean: int = 0
    fired_clean: int = 0
    wrong_step: int = 0
    fired_wrong_step: int = 0
    fired_before_error: int = 0
    correct_answer: int = 0
    fired_correct_answer: int = 0
    wrong_answer: int = 0
    fired_wrong_answer: int = 0
    false_rejection_rate: float | None = None  # fired_clean / clean
    fire_rate_correct_answer: float | None = None
    fire_rate_wrong_step: float | None = None
    fire_rate_wrong_answer: float | None = None
    errors: int = 0  # feed() raised: a validator bug, skipped by the policy
    median_fraction_at_fire: float | None = None  # of the trace's tokens streamed when it fired
    fractions_at_fire: list[float] = Field(default_factory=list, exclude=True)
    reasons: dict[str, int] = Field(default_factory=dict)
    tokens_fed: int = 0
    seconds: float = 0.0
    tokens_per_second: float | None = None
    slowest_checkpoint_ms: float = 0.0


class FileFigures(BaseModel):
    file: str
    traces: int
    tokens: int  # o200k tokens of the traces' text
    expected_tokens: int | None
    tokens_streamed: int  # by the set, up to each rejection
    seconds: float
    tokens_per_second: float | None
    slowest_checkpoint_ms: float
    false_rejection_rate: float | None


class SlowestCheckpoint(BaseModel):
    ms: float = 0.0
    trace_id: str = ""
    checkpoint: int = 0
    chars: int = 0  # of new text in the checkpoint


class BenchReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_files: list[str]
    unit: Literal["o200k_tokens"] = "o200k_tokens"
    settings: BenchSettings
    machine: Machine
    traces: int
    tokens_streamed: int
    seconds: float
    tokens_per_second: float | None
    streams_per_core_at_100_tokens_per_second: int
    slowest_checkpoint_ms: float
    slowest_checkpoint: SlowestCheckpoint
    false_rejection_rate: float | None  # of the set, on clean traces
    combined: ValidatorFigures
    per_validator: dict[str, ValidatorFigures]
    per_file: list[FileFigures]
    rows: list[ValidatorFigures]  # every validator and the set, per file and over all files


@dataclass(frozen=True, slots=True)
class _Outcome:
    fired_at_step: int | None = None
    fraction: float | None = None
    reason: str | None = None
    utility: float = 1.0  # the policy's utility (product of soft scores) when judging ended


def _count(fig: ValidatorFigures, trace: Trace, outcome: _Outcome) -> None:
    fired = outcome.fired_at_step is not None
    fig.traces += 1
    fig.fired += fired
    if trace.first_error_step == -1:
        fig.clean += 1
        fig.fired_clean += fired
    elif trace.first_error_step is not None:
        fig.wrong_step += 1
        fig.fired_wrong_step += fired
        fig.fired_before_error += fired and (outcome.fired_at_step or 0) < trace.first_error_step
    if trace.final_answer_correct:
        fig.correct_answer += 1
        fig.fired_correct_answer += fired
    else:
        fig.wrong_answer += 1
        fig.fired_wrong_answer += fired
    if fired and outcome.fraction is not None:
        fig.fractions_at_fire.append(outcome.fraction)
        reason = outcome.reason or "unspecified"
        fig.reasons[reason] = fig.reasons.get(reason, 0) + 1


def _rate(fired: int, total: int) -> float | None:
    return round(fired / total, 4) if total else None


def _finish(fig: ValidatorFigures) -> ValidatorFigures:
    fig.false_rejection_rate = _rate(fig.fired_clean, fig.clean)
    fig.fire_rate_correct_answer = _rate(fig.fired_correct_answer, fig.correct_answer)
    fig.fire_rate_wrong_step = _rate(fig.fired_wrong_step, fig.wrong_step)
    fig.fire_rate_wrong_answer = _rate(fig.fired_wrong_answer, fig.wrong_answer)
    if fig.fractions_at_fire:
        fig.median_fraction_at_fire = round(statistics.median(fig.fractions_at_fire), 4)
    if fig.seconds > 0:
        fig.tokens_per_second = round(fig.tokens_fed / fig.seconds, 1)
    fig.seconds = round(fig.seconds, 4)
    fig.slowest_checkpoint_ms = round(fig.slowest_checkpoint_ms, 3)
    fig.reasons = dict(Counter(fig.reasons).most_common())
    return fig


def _add_timing(fig: ValidatorFigures, src: ValidatorFigures) -> None:
    fig.tokens_fed += src.tokens_fed
    fig.seconds += src.seconds
    fig.errors += src.errors
    fig.slowest_checkpoint_ms = max(fig.slowest_checkpoint_ms, src.slowest_checkpoint_ms)
