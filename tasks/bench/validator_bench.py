"""Measure validators on recorded traces streamed as a live generation would be: how often each
fires, on which traces, how early, and how fast (`foldem bench validators`, docs/VALIDATORS.md).

Each trace's text is cut into o200k_base tokens beforehand (untimed) and pushed `tokens_per_push`
tokens at a time through a `CheckpointSplitter` with the trace's separator; every checkpoint is
judged by a `StagePolicy`, the runner's own policy, with the trace's problem, reference answer and
`expected_tokens` = the median token count of the trace's file (a stage-level expected length, as
a job spec sets it). One process, one thread; times are CPU time of the process, so waiting for
a core on a busy machine is not counted (the load average is recorded with the figures).

Two passes over every trace. The set: all validators in one policy, stopped at the first REJECT
as the runner closes the stream there; its time from opening the sessions to the decision,
splitter included, gives `tokens_per_second` (tokens streamed / time) and the slowest checkpoint.
Each validator alone, in its own policy over the same checkpoints: whether it would reject by
itself, where, and its own feed time. Early exit is off, so every validator reads the whole trace
and its firings bound from above what a stage with early exit would reject.

Labels: clean (`first_error_step == -1`: every firing is a false rejection); wrong_step
(`first_error_step >= 0`; `fired_before_error` counts firings at an earlier step, which did not
see the labelled error); correct_answer / wrong_answer (`final_answer_correct`).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foldem.core.traces import Trace, load_traces, tokenize_chunks
from tasks.bench.validator_figures import (
    BenchReport,
    BenchSettings,
    FileFigures,
    Machine,
    Mode,
    SlowestCheckpoint,
    ValidatorFigures,
    ValidatorSetting,
    _add_timing,
    _count,
    _finish,
    _Outcome,
)
from tasks.engine.policy import Action, ConfiguredValidator, StagePolicy
from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict
from validators.checkpoints import CheckpointSplitter
from validators.defaults import DEFAULT_SOLVE_VALIDATORS
from validators.registry import build

COMBINED = "any"  # the row of the whole set, as its policy judges it
_clock = time.process_time


class _TimedSession(ValidatorSession):
    def __init__(self, inner: ValidatorSession, fig: ValidatorFigures) -> None:
        self.inner, self.fig, self.seen_tokens = inner, fig, 0

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        fig = self.fig
        fig.tokens_fed += checkpoint.tokens_so_far - self.seen_tokens
        self.seen_tokens = checkpoint.tokens_so_far
        started = _clock()
        try:
            return self.inner.feed(checkpoint)
        except Exception:
            fig.errors += 1
            raise  # the policy contains it, as it does live
        finally:
            elapsed_ms = (_clock() - started) * 1000
            fig.seconds += elapsed_ms / 1000
            fig.slowest_checkpoint_ms = max(fig.slowest_checkpoint_ms, elapsed_ms)


class _Timed(Validator):
    """A configured validator with its feed time and errors recorded; same verdicts."""

    name = "timed"
    description = "benchmark wrapper"

    def __init__(self, inner: Validator, fig: ValidatorFigures) -> None:
        super().__init__(inner.params)
        self.inner, self.fig = inner, fig
        self.name = inner.name  # type: ignore[misc]  # the policy names errors after it

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _TimedSession(self.inner.open(ctx), self.fig)


@dataclass(frozen=True, slots=True)
class _Prepared:
    trace: Trace
    chunks: tuple[tuple[str, int], ...]  # (text, tokens) per push
    total: int


_PREPARED: dict[tuple[str, int, int, int], list[_Prepared]] = {}


def _prepare(path: Path, tokens_per_push: int) -> list[_Prepared]:
    # Calibration streams one file once per candidate value: tokenize it once (keyed by the
    # file's identity, so a rewritten file is read again).
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, tokens_per_push)
    if key not in _PREPARED:
        _PREPARED.clear()  # one file at a time: bounded memory
        _PREPARED[key] = _prepare_uncached(path, tokens_per_push)
    return _PREPARED[key]


def forget_prepared() -> None:
    """Drop the tokenized traces kept for repeated streams (a long run keeps no copy)."""
    _PREPARED.clear()


def _prepare_uncached(path: Path, tokens_per_push: int) -> list[_Prepared]:
    out = []
    for trace in load_traces([path]):
        texts, counts = tokenize_chunks(trace.text)
        k = tokens_per_push
        chunks = tuple(("".join(texts[i:i + k]), sum(counts[i:i + k]))
                       for i in range(0, len(texts), k))
        out.append(_Prepared(trace, chunks, sum(counts)))
    return out


def _checkpoints(splitter: CheckpointSplitter, p: _Prepared) -> Iterable[Checkpoint]:
    for text, n in p.chunks:
        yield from splitter.push(text, n)
    yield splitter.close()


@dataclass(frozen=True, slots=True)
class _Streamer:
    """How the traces of one file are streamed and judged."""

    settings: BenchSettings
    expected: int | None

    def splitter(self, trace: Trace) -> CheckpointSplitter:
        s = self.settings
        return CheckpointSplitter(separator=trace.separator, every_step=s.every_step,
                                  fractions=s.fractions, expected_tokens=self.expected)

    def judge(self, p: _Prepared, validators: list[ConfiguredValidator],
              checkpoints: Iterable[Checkpoint], slowest: SlowestCheckpoint | None = None
              ) -> _Outcome:
        ctx = ProblemContext(problem=p.trace.problem, reference_answer=p.trace.reference_answer,
                             expected_tokens=self.expected)
        policy = StagePolicy(validators, ctx, threshold=self.settings.threshold, early_exit=False)
        for cp in checkpoints:
            started = _clock()
            decision = policy.judge(cp)
            elapsed_ms = (_clock() - started) * 1000
            if slowest is not None and elapsed_ms > slowest.ms:
                chars = sum(len(st.text) for st in cp.steps) + len(cp.tail)
                slowest.ms, slowest.trace_id, slowest.checkpoint, slowest.chars = (
                    elapsed_ms, p.trace.id, cp.index, chars)
            if decision.action is Action.REJECT:
                v = decision.verdict
                step = v.step_index if v is not None else None
                if step is None:
                    step = cp.steps[-1].index if cp.steps else len(p.trace.steps) - 1
                return _Outcome(step, min(cp.tokens_so_far / max(p.total, 1), 1.0),
                                (v.reason if v is not None else None) or "low_utility",
                                decision.utility)
        return _Outcome(utility=policy.utility)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_bench(settings: BenchSettings, trace_files: Sequence[Path | str], *,
              expected_tokens: int | None = None,
              on_trace: Callable[[Trace, Mapping[str, _Outcome]], None] | None = None
              ) -> BenchReport:
    """Stream every trace of `trace_files` through checkpoints and policy (see the module doc).

    `expected_tokens` replaces the file's median (a stage's own setting); `on_trace` receives
    each trace with the outcome of the set (`COMBINED`) and of each validator alone.

    Raises ValidatorLoadError for an unknown validator or bad params, DataNotFoundError /
    InputFormatError for a missing or malformed trace file.
    """
    gc.freeze()  # as a run does (tasks/run/context.py): imports out of the collector's sight
    built: dict[str, tuple[Validator, Mode]] = {}
    for setting in settings.validators:  # keyed by the name its verdicts carry
        validator = build(setting.name, setting.params)
        key = validator.name
        if key in built:  # the same validator twice (calibration: one per candidate value)
            key = setting.name if setting.name not in built else f"{setting.name}#{len(built)}"
        built[key] = (validator, setting.mode)
    host = Machine(cores=os.cpu_count(), load_average_before=_load())
    names = [*built, COMBINED]
    modes: dict[str, str | None] = {n: m for n, (_, m) in built.items()}
    overall = {n: ValidatorFigures(validator=n, scope="all", mode=modes.get(n)) for n in names}
    rows: list[ValidatorFigures] = []
    files: list[FileFigures] = []
    slowest = SlowestCheckpoint()
    for path in map(Path, trace_files):
        prepared = _prepare(path, settings.tokens_per_push)
        expected = expected_tokens or (
            int(statistics.median(p.total for p in prepared)) if prepared else None)
        streamer = _Streamer(settings, expected)
        per_file = {n: ValidatorFigures(validator=n, scope=path.name, mode=modes.get(n))
                    for n in names}
        timing = {n: ValidatorFigures(validator=n, scope="timing") for n in names}
        the_set = [ConfiguredValidator(v, m) for v, m in built.values()]  # unwrapped, as live
        alone = {n: [ConfiguredValidator(_Timed(v, timing[n]), m)] for n, (v, m) in built.items()}
        file_slowest = SlowestCheckpoint()
        for p in prepared:
            splitter = streamer.splitter(p.trace)
            started = _clock()
            outcomes = {COMBINED: streamer.judge(p, the_set, _checkpoints(splitter, p),
                                                 file_slowest)}
            timing[COMBINED].seconds += _clock() - started
            timing[COMBINED].tokens_fed += splitter.tokens
            checkpoints = list(_checkpoints(streamer.splitter(p.trace), p))
            for name, configured in alone.items():
                outcomes[name] = streamer.judge(p, configured, checkpoints)
            if on_trace is not None:
                on_trace(p.trace, outcomes)
            for name in names:
                _count(per_file[name], p.trace, outcomes[name])
                _count(overall[name], p.trace, outcomes[name])
        timing[COMBINED].slowest_checkpoint_ms = file_slowest.ms
        timing[COMBINED].errors = sum(timing[n].errors for n in built)
        for name in names:
            _add_timing(per_file[name], timing[name])
            _add_timing(overall[name], timing[name])
            rows.append(_finish(per_file[name]))
        set_row = per_file[COMBINED]
        files.append(FileFigures(
            file=path.name, traces=len(prepared), tokens=sum(p.total for p in prepared),
            expected_tokens=expected, tokens_streamed=set_row.tokens_fed,
            seconds=set_row.seconds, tokens_per_second=set_row.tokens_per_second,
            slowest_checkpoint_ms=set_row.slowest_checkpoint_ms,
            false_rejection_rate=set_row.false_rejection_rate))
        slowest = max(slowest, file_slowest, key=lambda s: s.ms)
    rows += [_finish(overall[n]) for n in names]
    host.load_average_after = _load()
    combined = overall[COMBINED]
    slowest.ms = round(slowest.ms, 3)
    return BenchReport(
        trace_files=[str(p) for p in trace_files], settings=settings, machine=host,
        traces=combined.traces, tokens_streamed=combined.tokens_fed, seconds=combined.seconds,
        tokens_per_second=combined.tokens_per_second,
        streams_per_core_at_100_tokens_per_second=int((combined.tokens_per_second or 0) / 100),
        slowest_checkpoint_ms=slowest.ms, slowest_checkpoint=slowest,
        false_rejection_rate=combined.false_rejection_rate, combined=combined,
        per_validator={n: overall[n] for n in built}, per_file=files, rows=rows)


def settings_for(names: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None = None,
                 **options: Any) -> BenchSettings:
    """Each named validator in the mode and with the params the default set gives it (else hard,
    with its own defaults); `params` replaces a validator's params; `options` are BenchSettings
    fields (threshold, every_step, fractions, tokens_per_push)."""
    defaults = {name: (p, mode) for name, p, mode in DEFAULT_SOLVE_VALIDATORS}
    chosen = []
    for name in dict.fromkeys(names):
        p, mode = defaults.get(name, ({}, "hard"))
        chosen.append(ValidatorSetting.model_validate(
            {"name": name, "mode": mode, "params": dict((params or {}).get(name, p))}))
    return BenchSettings(validators=chosen, **options)


def measure_report(validator_names: Sequence[str], trace_files: Sequence[Path | str],
                   params: Mapping[str, Mapping[str, Any]] | None = None,
                   **options: Any) -> BenchReport:
    """`run_bench` for validators named as on the command line (see `settings_for`)."""
    return run_bench(settings_for(validator_names, params, **options), trace_files)


def measure(validator_names: Sequence[str], trace_files: Sequence[Path | str],
            params: Mapping[str, Mapping[str, Any]] | None = None,
            **options: Any) -> dict[str, Any]:
    """`measure_report` as a plain dict (JSON-ready)."""
    return measure_report(validator_names, trace_files, params, **options).model_dump()
