"""Calibrate a stage's validators to a false-rejection budget on a labelled sample of traces
(`foldem bench calibrate`; the stage fields `max_false_rejection` and `calibration`, checked by
`foldem run`; docs/VALIDATORS.md, "False-rejection budget and calibration on your own data").

The traces are streamed by the validator bench (tasks/bench/validator_bench.py): the real
checkpoint splitter, the runner's policy, early exit off, so every figure bounds from above what
a stage with early exit rejects. A *false rejection* is a firing on a trace with no wrong step
(`first_error_step == -1`: process) or on a trace whose final answer is correct (outcome); a
validator's false-rejection rate is the larger of the two, each over the traces that carry that
label, so the budget bounds both. A hard validator fires when it rejects alone; a soft one when
its own utility falls below the stage's threshold.

Thresholds: a validator that declares a `Tunable` param is streamed once per candidate value;
the fitted value is the most sensitive one whose false-rejection rate is within the budget. The
stage's `threshold` (soft mode) is fitted from each trace's utility at the end of the stream:
the highest threshold whose false-rejection rate, hard firings included, is within the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foldem.core.errors import ConfigError, DataNotFoundError, InputFormatError, SpecError
from foldem.core.jsonl import load_jsonl
from foldem.core.traces import Trace
from foldem.spec.job import JobSpec
from foldem.spec.stages import Stage
from tasks.bench.calibrate_report import (
    CalibrationReport,
    Rates,
    ThresholdFit,
    TunableFit,
    ValidatorFit,
    over_budget_message,
)
from tasks.bench.validator_bench import COMBINED, forget_prepared, run_bench, settings_for
from tasks.bench.validator_figures import BenchSettings, ValidatorSetting, _Outcome
from validators.defaults import DEFAULT_SOLVE_VALIDATORS
from validators.registry import build

#: Tokens per push. Step checkpoints fall at separators however the text is chunked (in flight
#: equals post hoc, tests/tasks/engine/test_inflight_equals_posthoc.py); fewer pushes keep the
#: calibration of 1,000 traces within seconds.
PUSH = 16
LABELS = ("final_answer_correct", "first_error_step")

_Row = tuple[Trace, bool]  # a trace and whether it was rejected


def _rate(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _wrong_step(t: Trace) -> bool:
    return t.first_error_step is not None and t.first_error_step >= 0


def rates(rows: Sequence[_Row]) -> Rates:
    """The figures of one validator from (trace, rejected) pairs."""
    def count(pred: Any) -> tuple[int, int]:
        hit = [fired for t, fired in rows if pred(t)]
        return len(hit), sum(hit)

    clean, f_clean = count(lambda t: t.first_error_step == -1)
    correct, f_correct = count(lambda t: t.final_answer_correct)
    step, f_step = count(_wrong_step)
    wrong, f_wrong = count(lambda t: _wrong_step(t) or not t.final_answer_correct)
    fired = sum(f for _, f in rows)
    shares = [r for r in (_rate(f_clean, clean), _rate(f_correct, correct)) if r is not None]
    return Rates(traces=len(rows), fired=fired, clean=clean, fired_clean=f_clean,
                 correct_answer=correct, fired_correct_answer=f_correct, wrong_step=step,
                 fired_wrong_step=f_step, wrong=wrong, fired_wrong=f_wrong,
                 false_rejection_rate=max(shares) if shares else None,
                 recall_wrong_step=_rate(f_step, step), recall_wrong=_rate(f_wrong, wrong),
                 precision=_rate(f_wrong, fired))


def _within(r: Rates, budget: float) -> bool:
    return r.false_rejection_rate is None or r.false_rejection_rate <= budget


def check_labels(path: Path) -> None:
    """InputFormatError naming the first line without the labels calibration needs."""
    seen = 0
    for line, obj in load_jsonl(path):
        seen += 1
        missing = [f for f in LABELS if f not in obj]
        if missing:
            raise InputFormatError(str(path), line, (
                f"unlabelled trace: no {' and no '.join(missing)}. Label every trace with "
                "final_answer_correct (true/false) and first_error_step (-1: no step is wrong, "
                "N: the 0-based index of the first wrong step, null: steps not labelled)"))
    if not seen:
        raise InputFormatError(str(path), 1, "no traces (an empty file)")


def stage_settings(stage: Stage | None) -> tuple[BenchSettings, int | None]:
    """A stage's validators, modes, threshold and checkpoints as bench settings, with its
    expected length; None: the default solve set (validators/defaults.py)."""
    if stage is None:
        return settings_for([n for n, _, _ in DEFAULT_SOLVE_VALIDATORS],
                            tokens_per_push=PUSH), None
    chosen = [ValidatorSetting(name=r.name, mode=r.mode, params=dict(r.params))
              for r in stage.validators]
    cps = stage.checkpoints
    return BenchSettings(validators=chosen, threshold=stage.threshold, every_step=cps.every_step,
                         fractions=list(cps.fractions), tokens_per_push=PUSH), stage.expected_tokens


def _stream(settings: BenchSettings, path: Path, expected: int | None
            ) -> tuple[list[tuple[Trace, dict[str, _Outcome]]], dict[str, str]]:
    """Per trace the outcome of the set and of each validator alone, with threshold 0 so that
    soft validators run to the end and their whole utility is known; and each key's mode."""
    streamed = settings.model_copy(update={"threshold": 0.0, "tokens_per_push": PUSH})
    records: list[tuple[Trace, dict[str, _Outcome]]] = []
    report = run_bench(streamed, [path], expected_tokens=expected,
                       on_trace=lambda t, o: records.append((t, dict(o))))
    return records, {k: f.mode or "hard" for k, f in report.per_validator.items()}


def _fired(outcome: _Outcome, mode: str, threshold: float) -> bool:
    if mode == "hard":
        return outcome.fired_at_step is not None
    return outcome.utility < threshold


def _fit_threshold(records: Sequence[tuple[Trace, Mapping[str, _Outcome]]], configured: float,
                   budget: float, any_soft: bool) -> ThresholdFit:
    if not any_soft:
        return ThresholdFit(configured=configured, fitted=None,
                            note="no soft validators: the threshold rejects nothing")
    sets = [(t, o[COMBINED]) for t, o in records]
    # The utility only falls, so a trace is rejected at threshold u iff a hard validator fired
    # or its final utility is below u; try every utility seen, the most sensitive first.
    for u in sorted({o.utility for _, o in sets} | {1.0}, reverse=True):
        t = math.floor(u * 10_000) / 10_000  # shown as written in a spec; never above u
        rows = [(tr, o.fired_at_step is not None or o.utility < t) for tr, o in sets]
        if _within(rates(rows), budget):
            return ThresholdFit(configured=configured, fitted=t)
    return ThresholdFit(configured=configured, fitted=None,
                        note="hard validators alone exceed the budget")


def _fit_tunable(setting: ValidatorSetting, param: str, values: Sequence[Any], configured: Any,
                 base: Rates, path: Path, expected: int | None, threshold: float,
                 budget: float) -> TunableFit:
    others = [v for v in values if v != configured]
    # Every other value in one stream, each as a validator of its own (alone figures per key).
    variants = [setting.model_copy(update={"params": {**setting.params, param: v}})
                for v in others]
    found: dict[Any, Rates] = {configured: base}
    if variants:
        records, modes = _stream(BenchSettings(validators=variants), path, expected)
        for value, (key, mode) in zip(others, modes.items(), strict=True):
            found[value] = rates([(t, _fired(o[key], mode, threshold)) for t, o in records])
    candidates = [(v, found[v]) for v in values if v in found]
    fitted = next((v for v, r in candidates if _within(r, budget)), None)
    return TunableFit(param=param, configured=configured, candidates=candidates, fitted=fitted)


def calibrate(settings: BenchSettings, path: Path, budget: float,
              expected_tokens: int | None = None, *, tune: bool = True) -> CalibrationReport:
    """Each validator's and the stage's false rejections, recall and precision on the labelled
    traces of `path`, and (with `tune`) the tunable values and threshold that fit `budget`.

    Raises InputFormatError for an unlabelled or malformed line, ConfigError for a sample with
    no trace labelled correct (nothing to measure false rejections on).
    """
    started = time.perf_counter()
    check_labels(path)
    records, modes = _stream(settings, path, expected_tokens)
    if not any(t.first_error_step == -1 or t.final_answer_correct for t, _ in records):
        raise ConfigError(f"{path}: no trace has a correct label (first_error_step -1 or "
                          "final_answer_correct true): false rejections cannot be measured")
    threshold = settings.threshold
    fits: list[ValidatorFit] = []
    for setting, key in zip(settings.validators, modes, strict=False):
        base = rates([(t, _fired(o[key], modes[key], threshold)) for t, o in records])
        fit = ValidatorFit(validator=key, mode=modes[key], rates=base,
                           within_budget=_within(base, budget))
        validator = build(setting.name, setting.params)
        if tune and validator.tunable is not None:
            p = validator.tunable
            if p.param not in type(validator.params).model_fields:
                raise ConfigError(f"validator {key!r} declares tunable {p.param!r}, which is "
                                  "not one of its params")
            fit.tunable = _fit_tunable(setting, p.param, p.values,
                                       getattr(validator.params, p.param), base, path,
                                       expected_tokens, threshold, budget)
        fits.append(fit)
    stage_rows = [(t, o[COMBINED].fired_at_step is not None or o[COMBINED].utility < threshold)
                  for t, o in records]
    stage = rates(stage_rows)
    stage_fit = ValidatorFit(validator="stage", mode="set", rates=stage,
                             within_budget=_within(stage, budget))
    soft = any(m == "soft" for m in modes.values())
    fitted = (_fit_threshold(records, threshold, budget, soft) if tune
              else ThresholdFit(configured=threshold, fitted=None, note="not fitted"))
    over = [f.validator for f in fits if not f.within_budget]
    over += [] if stage_fit.within_budget else ["stage"]
    return CalibrationReport(traces_file=str(path), budget=budget, validators=fits,
                             stage=stage_fit, threshold=fitted, over_budget=over,
                             seconds=round(time.perf_counter() - started, 2))


def check_budgets(job: JobSpec, file: str) -> None:
    """SpecError when a stage with `max_false_rejection` and `calibration` has validators (or,
    as a whole, the stage) over that budget on its calibration file: at `foldem run`, before
    any call, since a stage that rejects too many good samples wastes the whole run."""
    problems: list[tuple[str, str]] = []
    for i, st in enumerate(job.stages):
        if st.calibration is None or st.max_false_rejection is None:
            continue
        path = job.resolve_path(st.calibration)
        settings, expected = stage_settings(st)
        try:
            if not path.is_file():
                raise ConfigError(f"no such file: {path}")
            report = calibrate(settings, path, st.max_false_rejection, expected, tune=False)
        except (ConfigError, DataNotFoundError, InputFormatError) as exc:
            problems.append((f"stages[{i}].calibration", str(exc)))
            continue
        if report.over_budget:
            problems.append((f"stages[{i}].max_false_rejection", over_budget_message(
                report, st.name, file, st.calibration)))
    forget_prepared()
    if problems:
        raise SpecError(file, problems)
