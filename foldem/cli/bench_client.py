"""`foldem bench client`: tokens per second (and CPU seconds per million tokens) one foldem
process sustains through its whole path, beside the minimal reader and peers on the same streams
(tasks/bench/client_bench.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TRACES = ["data://traces/processbench_math.jsonl"]


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give whole numbers of at least 1, e.g. 64,256")
    return values


def cmd_bench_client(args: argparse.Namespace) -> int:
    import importlib.util

    from foldem.core.data import resolve_input_path
    from foldem.core.errors import ConfigError
    from tasks.bench.client_bench import BenchClientSettings, run_bench_client

    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("--loop uvloop needs uvloop, which foldem does not install "
                          "(it measured no gain): pip install uvloop")
    settings = BenchClientSettings(
        traces=[resolve_input_path(arg) for arg in args.traces], out_dir=Path(args.out),
        concurrency=args.concurrency, workers=args.workers,
        scale_concurrency=args.scale_concurrency, paced_streams=args.paced_streams,
        paced_tokens_per_second=args.paced_tokens_per_second,
        paced_workers=args.paced_workers, peers=args.peers,
        peer_concurrency=args.peer_concurrency,
        peers_venvs=Path(args.peers_venvs) if args.peers_venvs else None, loop=args.loop)
    s = run_bench_client(settings)
    for c, by in s["throughput"].items():
        print(f"{c:>5} streams: " + "; ".join(
            f"{name} {f['tokens_per_second']:,} tok/s, {f['cpu_seconds_per_mtok']} CPU s/Mtok"
            for name, f in by.items()))
    for n, f in s["scale"].items():
        print(f"{n} worker process(es): {f['tokens_per_second']:,} tok/s, "
              f"{f['cpu_seconds_per_mtok']} CPU s/Mtok")
    for peer, f in s["peers"].items():
        print(f"{peer}: " + (f"skipped ({f['skipped']})" if "skipped" in f else
                             f"{f['tokens_per_second']:,} tok/s, "
                             f"{f['cpu_seconds_per_mtok']} CPU s/Mtok"))
    a = s["abort"]
    lat = a["abort_latency"]
    print(f"abort latency at {a['streams']} × {a['tokens_per_second_per_stream']:g} tokens/s, "
          f"{a['workers']} worker process(es): "
          f"{lat.get('aborted', 0)} aborted, p50 {lat.get('p50')}, p99 {lat.get('p99')} tokens; "
          f"ledger = source in every run: {s['ledger_equals_server']}")
    print(f"summary and report written to {args.out}")
    return 0 if s["ledger_equals_server"] else 1


def register_client(group: argparse._SubParsersAction) -> None:
    cl = group.add_parser(
        "client", help="tokens per second one foldem process sustains, beside the limit",
        description="Stream recorded traces from a pre-rendered SSE source (its own process, "
        "fast enough not to be the limit) through foldem's whole path (HTTP, SSE parsing, "
        "checkpoints, the default validators, ledger and samples in Postgres), with rules on "
        "and off, beside a minimal asyncio reader and the peers, at several concurrencies; "
        "then in N worker processes; then paced, for the abort latency. The ledger is checked "
        "against the source's count in every run. Writes summary.json and report.md to --out.")
    cl.add_argument("--traces", nargs="+", default=DEFAULT_TRACES, metavar="FILE",
                    help="trace JSONL files or data:// URIs (default: "
                    f"{' '.join(DEFAULT_TRACES)})")
    cl.add_argument("--out", required=True, metavar="DIR", help="where the figures go")
    cl.add_argument("--concurrency", type=_ints, default=[64, 256, 1024], metavar="N,M",
                    help="concurrent streams, unpaced source (default 64,256,1024)")
    cl.add_argument("--workers", type=_ints, default=[1, 2], metavar="N,M",
                    help="worker process counts for the scaling run (default 1,2)")
    cl.add_argument("--scale-concurrency", type=int, default=256, metavar="N",
                    help="streams in all, split between the workers (default 256)")
    cl.add_argument("--paced-streams", type=int, default=256, metavar="N",
                    help="streams in the paced run (default 256)")
    cl.add_argument("--paced-tokens-per-second", type=float, default=100.0, metavar="R",
                    help="tokens per second per stream in the paced run (default 100)")
    cl.add_argument("--paced-workers", type=int, default=1, metavar="N",
                    help="worker processes in the paced run, the streams split between them "
                    "(default 1)")
    cl.add_argument("--no-peers", dest="peers", action="store_false",
                    help="skip curator and distilabel")
    cl.add_argument("--peer-concurrency", type=int, default=256, metavar="N",
                    help="the peers' concurrent requests (default 256)")
    cl.add_argument("--peers-venvs", metavar="DIR",
                    help="where scripts/peers/run_peers.sh made the peers' venvs (default "
                    "$FOLDEM_PEERS_VENVS, else ~/.cache/foldem-peers)")
    cl.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="the consumers' event loop (default asyncio)")
    cl.set_defaults(func=cmd_bench_client)
