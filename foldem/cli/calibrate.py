"""`foldem bench calibrate`: fit a stage's validators to a false-rejection budget on a user's
labelled traces (tasks/bench/calibrate.py, docs/VALIDATORS.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from foldem.core.errors import ConfigError


def cmd_bench_calibrate(args: argparse.Namespace) -> int:
    from foldem.core.data import resolve_input_path
    from tasks.bench.calibrate import calibrate, stage_settings
    from tasks.bench.calibrate_report import format_calibration

    stage = None
    if args.stage_from:
        from foldem.spec.job import load_job

        job = load_job(args.stage_from)
        solve = [s for s in job.stages if s.kind == "solve"]
        named = [s for s in job.stages if s.name == args.stage] if args.stage else solve[:1]
        if not named:
            raise ConfigError(f"{args.stage_from} has no stage {args.stage!r}; stages: "
                              f"{', '.join(s.name for s in job.stages)}")
        stage = named[0]
    elif args.stage:
        raise ConfigError("--stage names a stage of --stage-from JOB.yaml")
    settings, expected = stage_settings(stage)
    report = calibrate(settings, resolve_input_path(args.traces), args.budget, expected)
    print(format_calibration(report))
    if args.json:
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
        print(f"\nfigures written to {out}")
    return 0


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("a budget is a share strictly between 0 and 1, e.g. "
                                         "0.01 for 1%")
    return value


def register_calibrate(group: argparse._SubParsersAction) -> None:
    """Add `bench calibrate` to the bench command."""
    cal = group.add_parser(
        "calibrate", help="fit validators to a false-rejection budget on labelled traces",
        description="Stream labelled traces (the shared trace format: final_answer_correct, "
        "first_error_step) through the checkpoints and a stage's validators; report per "
        "validator its false rejections (traces with no wrong step, traces with a correct "
        "answer), recall and precision, the value of its tunable param that fits the budget, "
        "and the stage threshold that fits it (docs/VALIDATORS.md).")
    cal.add_argument("--traces", required=True, metavar="LABELLED.jsonl",
                     help="labelled traces, a file or a data:// URI")
    cal.add_argument("--stage-from", metavar="JOB.yaml", help="calibrate this job's stage "
                     "(default: the default solve validators, validators/defaults.py)")
    cal.add_argument("--stage", metavar="NAME", help="the stage of --stage-from (default: its "
                     "first solve stage)")
    cal.add_argument("--budget", type=_budget, default=0.01, help="the largest share of good "
                     "traces the validators may reject (default 0.01)")
    cal.add_argument("--json", metavar="PATH", help="also write every figure as JSON here")
    cal.set_defaults(func=cmd_bench_calibrate)
