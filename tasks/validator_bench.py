"""Measure validators over recorded traces: how often each fires, on which traces, how early,
and how fast — the figures behind choosing a validator's default mode (hard, soft or off).

Each trace is streamed as a generation would be: its steps (with the trace's separator) are
pushed through a `CheckpointSplitter`, and every validator's session is fed each checkpoint
until it fires (a rejection stops that validator, as the runner would). A validator fires when
a verdict scores below 1. Traces are grouped by their labels:

- clean: `first_error_step == -1` (no step is wrong): every firing is a false rejection;
- wrong_step: `first_error_step >= 0`; `fired_before_error` counts firings at an earlier step;
- correct_answer / wrong_answer: `final_answer_correct` (the only label of unlabelled files).

`measure()` returns a plain dict (the `BenchReport` model dumped) for CLIs and notebooks.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from foldem.replay.traces import Trace, load_traces
from tasks.checkpoints import CheckpointSplitter
from validators.base import ProblemContext, Validator, ValidatorSession, Verdict
from validators.registry import build

COMBINED = "any"  # the row for "some validator of the set fired"


def _token_counter() -> tuple[Callable[[str], int], Literal["o200k_tokens", "chars"]]:
    try:
        from foldem.tokens import count_tokens
    except ImportError:  # the tokenizer module is optional for this measurement
        return len, "chars"
    return count_tokens, "o200k_tokens"


class ValidatorFigures(BaseModel):
    """How one validator (or the combined set) behaved over one scope of traces."""

    model_config = ConfigDict(extra="forbid")

    validator: str
    scope: str  # a trace file's name, or "all"
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
    errors: int = 0  # feed() raised (a validator bug; counted as not fired)
    median_fraction_at_fire: float | None = None
    fractions_at_fire: list[float] = Field(default_factory=list, exclude=True)
    reasons: dict[str, int] = Field(default_factory=dict)
    units_fed: int = 0  # tokens (or chars) of the checkpoints fed to the validator
    seconds: float = 0.0
    units_per_second: float | None = None


class BenchReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_files: list[str]
    unit: Literal["o200k_tokens", "chars"]
    rows: list[ValidatorFigures]


class _TraceOutcome(BaseModel):
    fired_at_step: int | None = None
    fraction: float | None = None
    reason: str | None = None
    error: bool = False


def _feed_trace(trace: Trace, validators: Mapping[str, Validator],
                count: Callable[[str], int], figures: Mapping[str, ValidatorFigures]
                ) -> dict[str, _TraceOutcome]:
    ctx = ProblemContext(problem=trace.problem, reference_answer=trace.reference_answer)
    sessions: dict[str, ValidatorSession] = {n: v.open(ctx) for n, v in validators.items()}
    outcomes = {name: _TraceOutcome() for name in validators}
    splitter = CheckpointSplitter(separator=trace.separator)
    chunks = [s + trace.separator for s in trace.steps[:-1]] + trace.steps[-1:]
    counts = [count(c) for c in chunks]
    total = max(sum(counts), 1)
    checkpoints = [cp for chunk, n in zip(chunks, counts, strict=True)
                   for cp in splitter.push(chunk, n)]
    checkpoints.append(splitter.close())
    fed_until = 0
    for cp in checkpoints:
        new_units = cp.tokens_so_far - fed_until
        fed_until = cp.tokens_so_far
        for name, session in sessions.items():
            outcome = outcomes[name]
            if outcome.fired_at_step is not None or outcome.error:
                continue
            started = time.perf_counter()
            try:
                verdict: Verdict | None = session.feed(cp)
            except Exception:  # noqa: BLE001 - a raising validator is measured, not fatal
                verdict = None
            figures[name].seconds += time.perf_counter() - started
            figures[name].units_fed += new_units
            if verdict is None:
                outcome.error = True
            elif verdict.score < 1.0:
                step = verdict.step_index
                if step is None:
                    step = cp.steps[-1].index if cp.steps else len(trace.steps) - 1
                outcome.fired_at_step = step
                outcome.fraction = min(cp.tokens_so_far / total, 1.0)
                outcome.reason = verdict.reason or "unspecified"
    return outcomes


def _combine(outcomes: Mapping[str, _TraceOutcome]) -> _TraceOutcome:
    fired = [o for o in outcomes.values() if o.fraction is not None]
    if not fired:
        return _TraceOutcome()
    first = min(fired, key=lambda o: o.fraction or 0.0)
    return first.model_copy()


def _count(fig: ValidatorFigures, trace: Trace, outcome: _TraceOutcome) -> None:
    fired = outcome.fired_at_step is not None
    fig.traces += 1
    fig.fired += fired
    fig.errors += outcome.error
    if trace.first_error_step == -1:
        fig.clean += 1
        fig.fired_clean += fired
    elif trace.first_error_step is not None:
        fig.wrong_step += 1
        fig.fired_wrong_step += fired
        if fired and (outcome.fired_at_step or 0) < trace.first_error_step:
            fig.fired_before_error += 1
    if trace.final_answer_correct:
        fig.correct_answer += 1
        fig.fired_correct_answer += fired
    else:
        fig.wrong_answer += 1
        fig.fired_wrong_answer += fired
    if fired and outcome.fraction is not None:
        fig.fractions_at_fire.append(outcome.fraction)
        fig.reasons[outcome.reason or "unspecified"] = fig.reasons.get(
            outcome.reason or "unspecified", 0) + 1


def _finish(fig: ValidatorFigures) -> ValidatorFigures:
    if fig.fractions_at_fire:
        fig.median_fraction_at_fire = round(statistics.median(fig.fractions_at_fire), 4)
    if fig.seconds > 0:
        fig.units_per_second = round(fig.units_fed / fig.seconds, 1)
    fig.reasons = dict(Counter(fig.reasons).most_common())
    return fig


def measure_report(validator_names: Sequence[str], trace_files: Sequence[Path | str],
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> BenchReport:
    """Figures per validator (and for the set combined), per trace file and over all files.

    Raises ValidatorLoadError for an unknown validator or bad params, DataNotFoundError /
    InputFormatError for a missing or malformed trace file.
    """
    validators = {n: build(n, dict((params or {}).get(n, {}))) for n in validator_names}
    count, unit = _token_counter()
    paths = [Path(p) for p in trace_files]
    names = [*validators, COMBINED]
    rows: dict[tuple[str, str], ValidatorFigures] = {}
    overall = {n: ValidatorFigures(validator=n, scope="all") for n in names}
    for path in paths:
        per_file = {n: ValidatorFigures(validator=n, scope=path.name) for n in names}
        timing = {n: ValidatorFigures(validator=n, scope="timing") for n in validators}
        for trace in load_traces([path]):
            outcomes = _feed_trace(trace, validators, count, timing)
            outcomes[COMBINED] = _combine(outcomes)
            for name in names:
                _count(per_file[name], trace, outcomes[name])
                _count(overall[name], trace, outcomes[name])
        for name in validators:
            for fig in (per_file[name], overall[name]):
                fig.seconds += timing[name].seconds
                fig.units_fed += timing[name].units_fed
        rows.update({(n, path.name): per_file[n] for n in names})
    rows.update({(n, "all"): overall[n] for n in names})
    return BenchReport(trace_files=[str(p) for p in paths], unit=unit,
                       rows=[_finish(fig) for fig in rows.values()])


def measure(validator_names: Sequence[str], trace_files: Sequence[Path | str],
            params: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """`measure_report` as a plain dict (JSON-ready)."""
    return measure_report(validator_names, trace_files, params).model_dump()


def format_table(report: BenchReport) -> str:
    """A plain-text table of the report, one line per validator and scope."""
    head = (f"{'validator':<16} {'scope':<28} {'clean FR':>13} {'correct ans':>13} "
            f"{'wrong step':>13} {'early':>5} {'wrong ans':>13} {'median@':>7} "
            f"{report.unit + '/s':>16}")
    lines = [head, "-" * len(head)]

    def cell(fired: int, total: int) -> str:
        return f"{fired}/{total} {100 * fired / total:4.1f}%" if total else "-"

    for r in report.rows:
        speed = f"{r.units_per_second:,.0f}" if r.units_per_second else "-"
        median = f"{r.median_fraction_at_fire:.2f}" if r.median_fraction_at_fire else "-"
        lines.append(
            f"{r.validator:<16} {r.scope:<28} {cell(r.fired_clean, r.clean):>13} "
            f"{cell(r.fired_correct_answer, r.correct_answer):>13} "
            f"{cell(r.fired_wrong_step, r.wrong_step):>13} {r.fired_before_error:>5} "
            f"{cell(r.fired_wrong_answer, r.wrong_answer):>13} {median:>7} {speed:>16}")
    return "\n".join(lines)
