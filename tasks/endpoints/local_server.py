"""The child process of the local model endpoint: llama.cpp's HTTP server, in-process.

    python -m tasks.endpoints.local_server --model M.gguf --port 0 --ready-file F [...]

xllamacpp runs llama.cpp's own server inside the Python process and has no command line of its
own; this is that command line. It picks a free port when given 0, starts the server, writes
"PID PORT" to --ready-file once it serves, and waits for SIGTERM or SIGINT (or for its parent,
given by --parent-pid, to go away). The parent
(tasks/endpoints/local_model.py) waits for /health and stops it. Imports nothing of foldem, so
the child starts fast and a missing xllamacpp is reported by the parent, not here.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_port(host: str) -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def build_params(args: argparse.Namespace) -> Any:
    """llama.cpp's CommonParams for one model: slots share n_ctx; metrics and slots pages on."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = str(args.model)
    p.n_ctx = args.ctx
    p.n_parallel = args.parallel
    p.cont_batching = True
    # The client (foldem's flow) shares the cores: more threads than cores collapses decode
    # speed several-fold, so the default is one.
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.endpoint_metrics = True  # /metrics: tokens_predicted_total, n_decode_total (the probe)
    p.endpoint_slots = True  # /slots: which slots are busy
    p.port = args.port
    p.hostnames = [args.host]
    p.model_alias = {args.alias}
    if args.quiet:
        p.verbosity = 0  # startup banner and per-request timings go nowhere useful
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.endpoints.local_server")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--alias", default="smollm2")
    parser.add_argument("--ready-file", type=Path, help="write 'PID PORT' here when serving")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.port == 0:
        args.port = free_port(args.host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    import xllamacpp as xlc

    server = xlc.Server(build_params(args))  # serving from here on
    if args.ready_file is not None:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()} {args.port}\n")
        tmp.replace(args.ready_file)  # atomic: the parent never reads half a line
    print(f"llama.cpp server on http://{args.host}:{args.port}/v1 (model {args.alias})",
          file=sys.stderr, flush=True)
    # A parent killed without a chance to stop us (SIGKILL, OOM) must not leave a server
    # holding cores: when the parent is gone we are re-parented, and stop.
    while not stop.wait(0.5):
        if args.parent_pid is not None and os.getppid() != args.parent_pid:
            break
    del server  # the server's destructor stops its threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
