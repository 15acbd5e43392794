"""Leave-one-file-out figures for `foldem bench validators --leave-one-out`.

Rules tuned on some trace files may fit their wording; this measures the default set on each
file as if it had never been seen. For each file in turn: every tunable threshold in `TUNABLE`
is chosen on the *other* files (the value with the fewest false rejections there, process and
outcome; on a tie the configured value stays, as the other files give no reason to move it, else
the more sensitive value), then the set with those thresholds is measured on
the held-out file. A validator without a tunable threshold has nothing to fit beyond its rules,
so its held-out figures are its figures on that file.

Process false rejections: the set fired on a trace with no wrong step (`first_error_step == -1`);
outcome false rejections: it fired on a trace whose final answer is correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.bench.validator_figures import BenchSettings, ValidatorFigures
from validators.registry import build

#: validator -> (param, candidate values, the more sensitive first)
TUNABLE: dict[str, tuple[str, tuple[Any, ...]]] = {
    "repetition": ("max_ngram_repeats", (6, 8, 10)),
}


class HeldOutFigures(BaseModel):
    file: str
    traces: int
    tuned: dict[str, dict[str, Any]]  # validator -> {param: value chosen on the other files}
    clean: int
    process_false_rejections: int
    process_false_rejection_rate: float | None
    correct_answer: int
    outcome_false_rejections: int
    outcome_false_rejection_rate: float | None
    wrong_step: int
    recall_wrong_step: float | None
    wrong_answer: int
    recall_wrong_answer: float | None


def _rate(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _set_row(settings: BenchSettings, path: Path) -> ValidatorFigures:
    from tasks.bench.validator_bench import COMBINED, run_bench

    report = run_bench(settings, [path])
    return next(r for r in report.rows if r.validator == COMBINED and r.scope == path.name)


def _with(settings: BenchSettings, choice: dict[str, dict[str, Any]]) -> BenchSettings:
    out = settings.model_copy(deep=True)
    for v in out.validators:
        v.params = {**v.params, **choice.get(v.name, {})}
    return out


def _errors(rows: list[ValidatorFigures]) -> tuple[float, float]:
    clean = sum(r.clean for r in rows)
    correct = sum(r.correct_answer for r in rows)
    process = sum(r.fired_clean for r in rows) / clean if clean else 0.0
    outcome = sum(r.fired_correct_answer for r in rows) / correct if correct else 0.0
    return max(process, outcome), process + outcome


def leave_one_out(settings: BenchSettings, trace_files: Sequence[Path | str]
                  ) -> list[HeldOutFigures]:
    """Per file, the set's held-out figures with thresholds tuned on the other files."""
    paths = [Path(p) for p in trace_files]
    names = {v.name for v in settings.validators}
    grid = [(n, p, vals) for n, (p, vals) in TUNABLE.items() if n in names]
    params = {v.name: v.params for v in settings.validators}
    defaults = {n: getattr(build(n, params[n]).params, p) for n, p, _ in grid}
    # One candidate setting per value of each tunable (tuned one at a time, others at default).
    candidates: list[dict[str, dict[str, Any]]] = [{}]
    candidates += [{n: {p: val}} for n, p, vals in grid for val in vals]
    rows = {(i, j): _set_row(_with(settings, c), path)
            for i, c in enumerate(candidates) for j, path in enumerate(paths)}
    out = []
    for j, path in enumerate(paths):
        others = [k for k in range(len(paths)) if k != j]
        chosen: dict[str, dict[str, Any]] = {}
        for n, p, vals in grid:
            default = defaults[n]
            scored = [(_errors([rows[(i, k)] for k in others]), c[n][p] != default,
                       vals.index(c[n][p]), i)
                      for i, c in enumerate(candidates) if n in c]
            if scored and others:
                chosen[n] = candidates[min(scored)[3]][n]
        row = _set_row(_with(settings, chosen), path) if chosen else rows[(0, j)]
        out.append(HeldOutFigures(
            file=path.name, traces=row.traces, tuned=chosen, clean=row.clean,
            process_false_rejections=row.fired_clean,
            process_false_rejection_rate=_rate(row.fired_clean, row.clean),
            correct_answer=row.correct_answer,
            outcome_false_rejections=row.fired_correct_answer,
            outcome_false_rejection_rate=_rate(row.fired_correct_answer, row.correct_answer),
            wrong_step=row.wrong_step,
            recall_wrong_step=_rate(row.fired_wrong_step, row.wrong_step),
            wrong_answer=row.wrong_answer,
            recall_wrong_answer=_rate(row.fired_wrong_answer, row.wrong_answer)))
    return out


def format_held_out(rows: list[HeldOutFigures]) -> str:
    """The held-out figures as a plain-text table, one line per file."""
    def cell(n: int, d: int) -> str:
        return f"{n}/{d} {100 * n / d:5.2f}%" if d else "-"

    head = (f"{'held-out file':<28}{'tuned on the other files':<34}{'process FR':>17}"
            f"{'outcome FR':>18}{'recall step':>13}{'recall ans':>12}")
    lines = ["leave one file out (thresholds tuned on the other files, set measured on this one)",
             head, "-" * len(head)]
    for r in rows:
        tuned = ", ".join(f"{n}.{p}={v}" for n, ps in r.tuned.items() for p, v in ps.items())
        lines.append(
            f"{r.file:<28}{tuned or '-':<34}"
            f"{cell(r.process_false_rejections, r.clean):>17}"
            f"{cell(r.outcome_false_rejections, r.correct_answer):>18}"
            f"{(r.recall_wrong_step or 0):>13.1%}{(r.recall_wrong_answer or 0):>12.1%}")
    return "\n".join(lines)
