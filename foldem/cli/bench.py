"""`foldem bench`: `validators` streams recorded traces through the checkpoints and the policy and
reports how often each validator fires, where, and how fast (tasks/bench/validator_bench.py);
`replay` runs the real path twice over recorded traces. `calibrate` (foldem/cli/calibrate.py),
`live` (foldem/cli/bench_live.py) and `client` (foldem/cli/bench_client.py) register their own
subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from foldem.cli.bench_client import register_client
from foldem.cli.bench_live import register_live
from foldem.core.errors import ConfigError
from foldem.replay.cli import add_judge_noise_args, pace_arg, positive_arg, share_arg

if TYPE_CHECKING:  # the measuring module is imported only when the command runs
    from foldem.spec.endpoints import Prices
    from tasks.bench.validator_figures import BenchReport

_FIRST_SCOPE = "all"


def _fractions(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError("fractions lie strictly between 0 and 1, e.g. 0.5")
    return sorted(set(values))


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one validator")
    return names


def prices_arg(text: str) -> Prices:
    """`input=0.15,output=0.6[,cached_input=0.075]`: USD per million tokens."""
    from pydantic import ValidationError

    from foldem.spec.endpoints import Prices

    fields: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{part!r} is not name=value (e.g. input=0.15)")
        fields[f"{key.strip()}_per_mtok"] = value.strip()
    try:
        return Prices.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).removesuffix('_per_mtok')}: "
                             f"{e['msg']}" for e in exc.errors())
        raise argparse.ArgumentTypeError(f"{problems} (give input=X,output=Y[,cached_input=Z] "
                                         "in USD per million tokens)") from None


def _cell(fired: int, total: int) -> str:
    return f"{fired}/{total} {100 * fired / total:5.1f}%" if total else "-"  # fired/traces


def format_table(report: BenchReport) -> str:
    """The report as plain text: a summary, then one line per validator and scope (the set's
    line is `any`), all files first."""
    s, m = report.settings, report.machine
    cps = "every step" if s.every_step else "no step boundaries"
    if s.fractions:
        cps += " + fractions " + ",".join(f"{f:g}" for f in s.fractions)
    lines = [
        f"traces: {report.traces} in {len(report.trace_files)} file(s); checkpoints: {cps}; "
        f"{s.tokens_per_push} token(s) per push; threshold {s.threshold:g}; early exit off",
        f"set: {report.tokens_per_second or 0:,.0f} o200k tokens/s on one core "
        f"({report.streams_per_core_at_100_tokens_per_second:,} streams at 100 tokens/s); "
        f"slowest checkpoint {report.slowest_checkpoint_ms:.2f} ms "
        f"({report.slowest_checkpoint.trace_id}); false rejections on clean traces: "
        + (f"{100 * report.false_rejection_rate:.2f}%" if report.false_rejection_rate is not None
           else "- (no clean traces)"),
        f"machine: {m.cores} cores, load average {m.load_average_before[0]:.2f} before / "
        f"{(m.load_average_after or [0.0])[0]:.2f} after (1 min); CPU time, one process",
        "",
    ]
    head = (f"{'validator':<22}{'mode':<5} {'scope':<25}{'clean FR':>15}{'correct ans':>17}"
            f"{'wrong step':>16}{'early':>7}{'wrong ans':>17}{'median@':>9}{'tokens/s':>12}"
            f"{'worst ms':>10}")
    lines += [head, "-" * len(head)]
    rows = sorted(report.rows, key=lambda r: r.scope != _FIRST_SCOPE)  # stable: "all" first
    for r in rows:
        speed = f"{r.tokens_per_second:,.0f}" if r.tokens_per_second else "-"
        median = f"{r.median_fraction_at_fire:.2f}" if r.median_fraction_at_fire else "-"
        lines.append(
            f"{r.validator:<22}{(r.mode or 'set'):<5} {r.scope:<25}"
            f"{_cell(r.fired_clean, r.clean):>15}"
            f"{_cell(r.fired_correct_answer, r.correct_answer):>17}"
            f"{_cell(r.fired_wrong_step, r.wrong_step):>16}{r.fired_before_error:>7}"
            f"{_cell(r.fired_wrong_answer, r.wrong_answer):>17}{median:>9}{speed:>12}"
            f"{r.slowest_checkpoint_ms:>10.2f}")
    return "\n".join(lines)


def cmd_bench_validators(args: argparse.Namespace) -> int:
    from foldem.core.data import resolve_input_path
    from tasks.bench.validator_bench import run_bench, settings_for
    from validators.defaults import DEFAULT_SOLVE_VALIDATORS

    if not args.every_step and not args.fractions:
        raise ConfigError("--no-every-step needs --fractions (e.g. --fractions 0.5, the paper's "
                          "single cut at half the expected length)")
    paths = [resolve_input_path(arg) for arg in args.traces]
    names = args.validators or [name for name, _, _ in DEFAULT_SOLVE_VALIDATORS]
    settings = settings_for(names, threshold=args.threshold, every_step=args.every_step,
                            fractions=args.fractions or [], tokens_per_push=args.tokens_per_push)
    unknown = set(args.soft or []) - set(names)
    if unknown:
        raise ConfigError(f"--soft names validators not measured: {', '.join(sorted(unknown))}")
    for setting in settings.validators:
        if setting.name in (args.soft or []):
            setting.mode = "soft"
    report = run_bench(settings, paths)
    print(format_table(report))
    document = report.model_dump(mode="json")
    if args.leave_one_out:
        from tasks.bench.validator_loo import format_held_out, leave_one_out

        held_out = leave_one_out(settings, paths)
        print("\n" + format_held_out(held_out))
        document["leave_one_out"] = [r.model_dump(mode="json") for r in held_out]
    if args.json:
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
        print(f"\nfigures written to {out}")
    return 0


def cmd_bench_replay(args: argparse.Namespace) -> int:
    from foldem.core.data import resolve_input_path
    from foldem.replay.judge import JudgeNoise
    from tasks.bench.replay_bench import BenchReplaySettings, run_bench_replay
    from tasks.bench.replay_cost import cost_line

    settings = BenchReplaySettings(
        traces=[resolve_input_path(arg) for arg in args.traces], out_dir=Path(args.out),
        job_path=Path(args.job) if args.job else None, concurrency=args.concurrency,
        tokens_per_second=args.tokens_per_second, faults=args.faults,
        agreement_k=args.agreement_k, early_exit=args.early_exit, step_judge=args.step_judge,
        judge_noise=JudgeNoise(recall=args.judge_recall, false_alarm=args.judge_false_alarm),
        prices=args.prices)
    s = run_bench_replay(settings)
    pct = "{:.1%}".format
    print(f"traces {s['traces']}: tokens {s['tokens_full']:,} generate-then-filter, "
          f"{s['tokens_msifr']:,} in flight ({pct(s['token_reduction'] or 0)} fewer; oracle "
          f"{pct(s['oracle_step_reduction'] or 0)}); rejected {s['rejected']}; kept equal to "
          f"post-hoc: {s['kept_equal_to_posthoc']}; ledger = replay count: "
          f"{s['server_tokens_match']}; wall {s['wall_seconds_full']} s / "
          f"{s['wall_seconds_msifr']} s")
    if "step_judge" in s:
        j = s["step_judge"]
        print(f"step judge: {j['calls_msifr']:,} calls in flight ({j['prompt_tokens_msifr']:,} "
              f"prompt + {j['completion_tokens_msifr']:,} completion tokens), "
              f"{j['calls_full']:,} after the fact; it decided {j['rejected_by_judge']} "
              f"rejections; oracle capture {s['oracle_capture']}")
    print(cost_line(s["cost"]))
    print(f"summary, runs and report written to {args.out}")
    return 0 if s["kept_equal_to_posthoc"] and s["server_tokens_match"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench validators`, `bench replay` and `bench live` to the foldem command."""
    bench = subparsers.add_parser("bench", help="measure parts of foldem on recorded traces")
    group = bench.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    val = group.add_parser(
        "validators", help="how often and how fast validators fire on recorded traces",
        description="Stream each trace token by token (o200k_base) through the checkpoints and "
        "the stage policy, as a live generation would be, on one core; report per validator "
        "and for the set: firings on clean, correct-answer, wrong-step and wrong-answer traces, "
        "how early, and tokens per second.")
    val.add_argument("--traces", nargs="+", required=True, metavar="FILE",
                     help="trace JSONL files or data:// URIs, e.g. "
                     "data://traces/processbench_gsm8k.jsonl")
    val.add_argument("--json", metavar="PATH", help="also write every figure as JSON here")
    val.add_argument("--validators", type=_names, metavar="A,B,C",
                     help="validators to measure (names, entry points or dotted paths); "
                     "default: the default solve set (validators/defaults.py)")
    val.add_argument("--soft", type=_names, metavar="A,B",
                     help="of those, judge these in soft mode (their scores multiply into the "
                     "utility; default: the mode the default set gives, else hard)")
    val.add_argument("--threshold", type=share_arg, default=0.5,
                     help="stage threshold for soft validators (default 0.5)")
    val.add_argument("--fractions", type=_fractions, metavar="F,G",
                     help="also cut at these fractions of the expected length (paper: 0.5)")
    val.add_argument("--no-every-step", dest="every_step", action="store_false",
                     help="no checkpoint at step boundaries (with --fractions)")
    val.add_argument("--tokens-per-push", type=positive_arg, default=1, metavar="N",
                     help="tokens per chunk pushed to the splitter (default 1, as streamed)")
    val.add_argument("--leave-one-out", action="store_true",
                     help="also measure each file held out: tunable thresholds chosen on the "
                     "other files, process and outcome false rejections on this one (a table, "
                     "and 'leave_one_out' in --json)")
    val.set_defaults(func=cmd_bench_validators)
    from foldem.cli.calibrate import register_calibrate

    register_calibrate(group)
    _register_replay(group)


def _register_replay(group: argparse._SubParsersAction) -> None:
    from tasks.bench.replay_bench import (
        DEFAULT_AGREEMENT_K,
        DEFAULT_CONCURRENCY,
        DEFAULT_TOKENS_PER_SECOND,
    )

    rep = group.add_parser(
        "replay", help="token savings and false rejections, in flight vs generate-then-filter",
        description="Replay recorded traces over HTTP through the real path (streaming client, "
        "checkpoints, validators, ledger in Postgres) twice: with in-flight rejection and as the "
        "baseline that generates in full, then filters with the same validators; plus the "
        "early-exit variants. Writes summary.json, runs.json, report.md and charts to --out.")
    rep.add_argument("--traces", nargs="+", required=True, metavar="FILE",
                     help="trace JSONL files (shared format) or data:// URIs")
    rep.add_argument("--job", metavar="JOB.yaml", help="job spec whose solve stage is measured "
                     "(default: the default validator set, built in code)")
    rep.add_argument("--out", required=True, metavar="DIR", help="where the figures go")
    rep.add_argument("--concurrency", type=positive_arg, default=DEFAULT_CONCURRENCY,
                     help=f"concurrent streams (default {DEFAULT_CONCURRENCY})")
    rep.add_argument("--tokens-per-second", type=pace_arg, default=DEFAULT_TOKENS_PER_SECOND,
                     metavar="R", help="replay pace per stream, 0 = unpaced (default "
                     f"{DEFAULT_TOKENS_PER_SECOND:g}; unpaced, the whole recording is sent before "
                     "its first step is judged: that measures speed, not savings)")
    rep.add_argument("--faults", metavar="SPEC", help="inject endpoint faults (replay --faults)")
    rep.add_argument("--agreement-k", type=positive_arg, default=DEFAULT_AGREEMENT_K, metavar="K",
                     help="agreement early exit: stop a prompt's samples once K agree "
                     f"(default {DEFAULT_AGREEMENT_K})")
    rep.add_argument("--no-early-exit", dest="early_exit", action="store_false",
                     help="skip the three early-exit runs (only full and in flight)")
    rep.add_argument("--step-judge", action="store_true",
                     help="give the default job a step judge: the replay answers it from the "
                     "traces' human step labels (an oracle judge; degrade it with the two "
                     "options below). Measures what in-flight judging can capture, not a model")
    rep.add_argument("--prices", type=prices_arg, metavar="input=X,output=Y[,cached_input=Z]",
                     help="USD per million tokens for the endpoints the job gives no `prices:` "
                     "(the default job: all): the summary adds each mode's cost per accepted "
                     "sample")
    add_judge_noise_args(rep)
    rep.set_defaults(func=cmd_bench_replay)
    register_live(group)
    register_client(group)
