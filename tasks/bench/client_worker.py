"""One consumer process of `foldem bench client`: reads its share of the planned streams from the
source and prints one JSON line (wall seconds, process CPU seconds, chunks and requests seen).

Consumers:
  foldem          the real path: HTTP client, SSE parsing, checkpoints, the default validators,
                  the ledger and sample writes to Postgres (what a flow run's shard does)
  foldem-norules  the same job with no validators (splitting and writes still happen)
  minimal         an asyncio reader that sends the same requests and only counts the SSE events
                  it reads, one `readuntil` per event: the practical limit of Python per chunk

Run by tasks/bench/client_bench.py as `python -m tasks.bench.client_worker ...`; a process of
its own so that its CPU time (`resource.getrusage`) is its own, and so that N of them are N
worker processes as `flow_runs: N` makes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from foldem.core.data import resolve_input_path
from foldem.core.traces import load_traces
from foldem.spec.job import JobSpec
from tasks.bench.replay_bench import default_job
from tasks.bench.replay_runs import ModeSpec, PlannedItem, generate_items, plan_items

CONSUMERS = ("foldem", "foldem-norules", "minimal")
IN_FLIGHT = ModeSpec(name="client", in_flight=True, early_exit=False)


def bench_job(traces_job: JobSpec, *, rules: bool) -> JobSpec:
    """The default bench job, with its validators or with none (rules off)."""
    if rules:
        return traces_job
    stages = [st.model_copy(update={"validators": []}) for st in traces_job.stages]
    return traces_job.model_copy(update={"stages": stages})


def share(planned: list[PlannedItem], worker: int, workers: int) -> list[PlannedItem]:
    """This worker's items: every `workers`-th, from its index (a stable, even split)."""
    return planned[worker::workers]


async def _minimal(base_url: str, planned: list[PlannedItem], concurrency: int) -> dict[str, int]:
    """Send each item's request, read its SSE body event by event, count the events."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path.rstrip("/") + "/chat/completions"
    queue = list(reversed(planned))
    counts = {"events": 0, "requests": 0}

    async def lane() -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        try:
            while queue:
                p = queue.pop()
                body = json.dumps({"model": "*", "stream": True, "seed": p.item.sample_index,
                                   "messages": [{"role": "user",
                                                 "content": p.item.prompt.text}]}).encode()
                writer.write(b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json"
                             b"\r\ncontent-length: %d\r\n\r\n"
                             % (path.encode(), host.encode(), len(body)) + body)
                await reader.readuntil(b"\r\n\r\n")  # status line and headers
                events = 0
                while True:  # chunked framing around each event; [DONE] ends the stream
                    event = await reader.readuntil(b"\n\n")
                    events += 1
                    if b"[DONE]" in event:
                        await reader.readuntil(b"0\r\n\r\n")
                        break
                counts["events"] += events
                counts["requests"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(lane() for _ in range(min(concurrency, len(planned)))))
    return counts


def _run(loop_name: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.bench.client_worker")
    parser.add_argument("consumer", choices=CONSUMERS)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--traces", nargs="+", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--run-id")
    parser.add_argument("--db-url")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (epoch) to start at, common to all workers")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    traces = load_traces([resolve_input_path(t) for t in args.traces])
    planned = share(plan_items(traces), args.worker, args.workers)
    out: dict[str, Any] = {"consumer": args.consumer, "items": len(planned)}

    if args.consumer == "minimal":
        def work() -> Coroutine[Any, Any, Any]:
            return _minimal(args.base_url, planned, args.concurrency)
    else:
        job = bench_job(default_job(traces), rules=args.consumer == "foldem")

        def work() -> Coroutine[Any, Any, Any]:
            return generate_items(job, IN_FLIGHT, planned, args.run_id, args.db_url, args.base_url,
                                  args.concurrency)

    time.sleep(max(0.0, args.start_at - time.time()))
    out["started_late"] = max(0.0, time.time() - args.start_at) if args.start_at else 0.0
    out["started_at"] = time.time()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = _run(args.loop, work)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    out |= {"wall_seconds": wall, "ended_at": time.time(),
            "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "cpu_user_seconds": after.ru_utime - before.ru_utime}
    if isinstance(result, dict):
        out |= result
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

