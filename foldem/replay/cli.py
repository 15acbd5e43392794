"""`foldem replay serve` (and `python -m foldem.replay serve`): run the replay endpoint."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from foldem.core.data import resolve_input_path


def _cmd_serve(args: argparse.Namespace) -> int:
    from foldem.replay.faults import FaultPlan
    from foldem.replay.judge import JudgeNoise
    from foldem.replay.listen import serve  # imported here: fastapi/uvicorn only when serving

    faults = FaultPlan.parse(args.faults, args.fault_seed) if args.faults else None
    traces = [resolve_input_path(arg) for arg in args.traces]
    noise = JudgeNoise(recall=args.judge_recall, false_alarm=args.judge_false_alarm,
                       seed=args.fault_seed)
    serve(traces, host=args.host, port=args.port, tokens_per_second=args.tokens_per_second,
          ignore_disconnect=args.ignore_disconnect, port_file=args.port_file, faults=faults,
          judge_noise=noise)
    return 0


def pace_arg(text: str) -> float:
    """A --tokens-per-second value: a number >= 0, 0 = unpaced."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError("must be >= 0 (0 = unpaced)")
    return value


def positive_arg(text: str) -> int:
    """A whole number of at least 1 (a command-line argument type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def share_arg(text: str) -> float:
    """A probability: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:  # also rejects NaN
        raise argparse.ArgumentTypeError("must lie in [0, 1]")
    return value


def add_judge_noise_args(parser: argparse.ArgumentParser) -> None:
    """--judge-recall and --judge-false-alarm of the replayed step judge (model judge-steps*)."""
    parser.add_argument("--judge-recall", type=share_arg, default=1.0, metavar="P",
                        help="replayed step judge: share of wrong traces whose first wrong "
                        "step it flags (default 1: as good as the human labels)")
    parser.add_argument("--judge-false-alarm", type=share_arg, default=0.0, metavar="P",
                        help="replayed step judge: chance per judgement of flagging a prefix "
                        "with no wrong step (default 0)")


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to a group of subcommands."""
    serve = subparsers.add_parser(
        "serve", help="serve recorded generations as an OpenAI-compatible streaming endpoint",
        description="Play back recorded traces token by token at /v1/chat/completions; "
        "GET /stats reports the tokens sent per request.")
    serve.add_argument("--traces", nargs="+", required=True, metavar="FILE",
                       help="trace JSONL files or data:// URIs, e.g. "
                       "data://traces/gsm8k_gpt3_dev.jsonl")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    serve.add_argument("--tokens-per-second", type=pace_arg, default=0.0, metavar="R",
                       help="pace per stream (0: unpaced)")
    serve.add_argument("--ignore-disconnect", action="store_true",
                       help="keep generating after a client disconnects (to test abort probes)")
    serve.add_argument("--port-file", type=Path, metavar="PATH",
                       help="write the port actually bound to this file once listening")
    serve.add_argument("--faults", metavar="SPEC",
                       help="inject faults: comma-separated kind:share[:seconds] with kinds "
                       "429, 500, drop, stall, malformed, slow, e.g. '429:0.1,drop:0.05,"
                       "stall:0.05:40' (see foldem/replay/faults.py)")
    serve.add_argument("--fault-seed", type=int, default=0, metavar="N",
                       help="seed of the fault plan and of the step judge's noise: the same "
                       "seed, the same faults (default 0)")
    add_judge_noise_args(serve)
    serve.set_defaults(func=_cmd_serve)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `replay serve` to the foldem command."""
    replay = subparsers.add_parser("replay", help="the replay endpoint (recorded generations)")
    add_serve_command(replay.add_subparsers(dest="replay_command", metavar="COMMAND",
                                            required=True))


def build_parser(prog: str = "python -m foldem.replay") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="foldem's replay endpoint")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_serve_command(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m foldem.replay`; user mistakes end with a message, no traceback."""
    import sys

    from foldem.core.errors import FoldemError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FoldemError as exc:
        if args.debug:
            raise
        print(f"foldem replay: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
