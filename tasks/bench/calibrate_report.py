"""The calibration report (tasks/bench/calibrate.py): its models, the table `foldem bench
calibrate` prints, and the message `foldem run` refuses a job with when a stage is over its
false-rejection budget."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Rates(BaseModel):
    """How one validator (or the stage) did on the sample."""

    traces: int
    fired: int
    clean: int  # no wrong step
    fired_clean: int
    correct_answer: int
    fired_correct_answer: int
    wrong_step: int
    fired_wrong_step: int
    wrong: int  # a wrong step or a wrong final answer
    fired_wrong: int
    false_rejection_rate: float | None  # max(process, outcome), None: no correct label
    recall_wrong_step: float | None
    recall_wrong: float | None
    precision: float | None  # firings on wrong traces / all firings


class TunableFit(BaseModel):
    param: str
    configured: Any
    candidates: list[tuple[Any, Rates]]  # the most sensitive value first
    fitted: Any = None  # None: no value is within the budget


class ValidatorFit(BaseModel):
    validator: str
    mode: str
    rates: Rates
    within_budget: bool
    tunable: TunableFit | None = None


class ThresholdFit(BaseModel):
    configured: float
    fitted: float | None  # None: no threshold fits (hard firings alone exceed the budget)
    note: str = ""


class CalibrationReport(BaseModel):
    traces_file: str
    budget: float
    validators: list[ValidatorFit]
    stage: ValidatorFit
    threshold: ThresholdFit
    over_budget: list[str] = Field(default_factory=list)  # validator names, "stage" for the set
    seconds: float = 0.0



def _cell(fired: int, total: int) -> str:
    return f"{fired}/{total} {100 * fired / total:5.1f}%" if total else "-"


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "-"


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _fr(r: Rates) -> str:
    return _pct(r.false_rejection_rate)


def _line(f: ValidatorFit) -> str:
    r = f.rates
    fit = ""
    if f.tunable is not None:
        t = f.tunable
        fitted = _value(t.fitted) if t.fitted is not None else "none fits"
        fit = f"{t.param}={fitted} (now {_value(t.configured)})"
    return (f"{f.validator:<22}{f.mode:<5}{_cell(r.fired_clean, r.clean):>16}"
            f"{_cell(r.fired_correct_answer, r.correct_answer):>17}{_fr(r):>7}"
            f"{'  ok' if f.within_budget else ' OVER':>6}"
            f"{_cell(r.fired_wrong_step, r.wrong_step):>17}"
            f"{_pct(r.precision):>10}  {fit}")


def format_calibration(report: CalibrationReport) -> str:
    """The report as plain text: one line per validator, the stage, the fitted threshold and
    every candidate value of the tunable params."""
    s = report.stage.rates
    lines = [
        f"calibration on {report.traces_file}: {s.traces} traces ({s.clean} with no wrong step, "
        f"{s.correct_answer} with a correct answer, {s.wrong_step} with a wrong step); budget "
        f"{_pct(report.budget)} false rejections; {report.seconds:.1f} s",
        "FR = false-rejection rate, the larger of 'no wrong step' and 'correct answer'; "
        "recall on traces with a wrong step; precision = firings on wrong traces / firings",
        "",
    ]
    head = (f"{'validator':<22}{'mode':<5}{'no wrong step':>16}{'correct answer':>17}"
            f"{'FR':>7}{'':>6}{'wrong step':>17}{'precision':>10}  fits the budget")
    lines += [head, "-" * len(head)]
    lines += [_line(f) for f in report.validators]
    lines += [_line(report.stage), ""]
    th = report.threshold
    fitted = _value(th.fitted) if th.fitted is not None else "none"
    lines.append(f"stage threshold (soft mode): now {th.configured:g}, fits the budget: "
                 f"{fitted}" + (f" ({th.note})" if th.note else ""))
    for f in report.validators:
        if f.tunable is None:
            continue
        ladder = ", ".join(f"{_value(v)}: FR {_fr(r)} recall {_pct(r.recall_wrong_step)}"
                           for v, r in f.tunable.candidates)
        lines.append(f"{f.validator}.{f.tunable.param} (most sensitive first): {ladder}")
    lines.append("")
    lines.append("over budget: " + (", ".join(report.over_budget) or "none"))
    return "\n".join(lines)


def over_budget_message(report: CalibrationReport, stage: str, spec_file: str,
                        calibration: str) -> str:
    """Why `foldem run` refuses the stage, and the command that calibrates it."""
    by_name = {f.validator: f for f in [*report.validators, report.stage]}
    parts = []
    for name in report.over_budget:
        r = by_name[name].rates
        label = "the stage as a whole" if name == "stage" else repr(name)
        parts.append(f"{label} {_fr(r)} (no wrong step {r.fired_clean}/{r.clean}, "
                     f"correct answer {r.fired_correct_answer}/{r.correct_answer})")
    return (f"stage {stage!r} rejects more good samples than its budget of "
            f"{_pct(report.budget)} on {calibration} ({report.stage.rates.traces} labelled "
            f"traces): {'; '.join(parts)}. Calibrate them: foldem bench calibrate --traces "
            f"{calibration} --stage-from {spec_file} --stage {stage} --budget {report.budget:g}")
