"""`foldem bench live`: the same GSM8K prompts in flight and generate-then-filter against the
local llama.cpp server, checked against the server's own counters (tasks/bench/live_bench.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from foldem.replay.cli import positive_arg


def cmd_bench_live(args: argparse.Namespace) -> int:
    from tasks.bench.live_bench import BenchLiveSettings, run_bench_live

    settings = BenchLiveSettings(
        out_dir=Path(args.out), prompts=args.prompts, samples=args.samples, mode=args.mode,
        slots=args.slots, threads=args.threads, max_tokens=args.max_tokens,
        job_path=Path(args.job) if args.job else None)
    s = run_bench_live(settings)
    a = s["tokens_after_abort"]
    print(f"{s['samples']} samples, {s['mode']} mode: tokens {s['tokens_full']:,} "
          f"generate-then-filter, {s['tokens_msifr']:,} in flight "
          f"({(s['token_reduction'] or 0):.1%} fewer); server {s['server_tokens_full']:,} / "
          f"{s['server_tokens_msifr']:,}; after the hang-up {a['total']} over "
          f"{a['aborted_calls']} aborted calls ("
          + (f"max {a['max']} per call" if a["max"] is not None else "in all") +
          f"); ledger + after-abort = server: "
          f"{s['ledger_equals_server']}; kept equal to post-hoc: {s['kept_equal_to_posthoc']}; "
          f"{s['elapsed_seconds']} s")
    print(f"summary, runs and report written to {args.out}")
    return 0 if s["kept_equal_to_posthoc"] and s["ledger_equals_server"] else 1


def register_live(group: argparse._SubParsersAction) -> None:
    from tasks.bench.live_bench import DEFAULT_MAX_TOKENS, DEFAULT_PROMPTS, DEFAULT_SLOTS

    live = group.add_parser(
        "live", help="in flight vs generate-then-filter against llama.cpp on this CPU",
        description="Run the same GSM8K test prompts against llama.cpp's server on the bundled "
        "SmolLM2-135M-Instruct twice, in flight and generated in full then filtered, through "
        "the real path (ledger in Postgres), and check the ledger against the server's own "
        "token counters. Writes summary.json, runs.json, report.md and charts to --out.")
    live.add_argument("--out", required=True, metavar="DIR", help="where the figures go")
    live.add_argument("--prompts", type=positive_arg, default=DEFAULT_PROMPTS, metavar="N",
                      help=f"GSM8K test prompts (default {DEFAULT_PROMPTS})")
    live.add_argument("--samples", type=positive_arg, default=1, metavar="K",
                      help="samples per prompt, seeded by their index (default 1)")
    live.add_argument("--mode", choices=("exact", "parallel"), default="exact",
                      help="exact: one slot, no prompt-cache reuse, reproducible texts, the "
                      "server's count per call; parallel: --slots slots, batched (default exact)")
    live.add_argument("--slots", type=positive_arg, default=DEFAULT_SLOTS, metavar="N",
                      help=f"server slots and client streams in parallel mode (default "
                      f"{DEFAULT_SLOTS})")
    live.add_argument("--threads", type=positive_arg, default=1, metavar="N",
                      help="server CPU threads (default 1: the client shares the cores)")
    live.add_argument("--max-tokens", type=positive_arg, default=DEFAULT_MAX_TOKENS, metavar="N",
                      help=f"completion cap per sample (default {DEFAULT_MAX_TOKENS})")
    live.add_argument("--job", metavar="JOB.yaml", help="measure this job's solve stage "
                      "(e.g. examples/live-gsm8k.yaml; early exit off) instead of the built-in "
                      "one (the default validator set)")
    live.set_defaults(func=cmd_bench_live)
