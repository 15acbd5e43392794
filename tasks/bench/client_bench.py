"""`foldem bench client`: how many tokens a second one foldem process reads through its whole
path, side by side with the limit of Python and with peers, on the same streams.

The source is the pre-rendered SSE endpoint of tasks/bench/client_source.py, in a process of its
own (fast enough not to be the limit). Each consumer is a process of its own
(tasks/bench/client_worker.py), started after the source and timed from a common start signal:

  throughput  unpaced source; at each concurrency: the minimal reader, foldem with no rules,
              foldem with the default validators — wall tokens/s, and CPU seconds per million
              tokens (the consumer's own process time: robust to a shared machine)
  peers       curator and distilabel (in venvs of their own, scripts/peers/) on the same
              source and prompts; skipped, with the reason, where their venvs are missing
  scale       foldem in N worker processes (the streams split between them, one run id, as
              `flow_runs: N` runs them), N = 1, 2, ...
  abort       the source paced like a busy GPU server (S streams × R tokens/s): tokens the
              server wrote after the checkpoint that fired, per aborted stream, p50/p99

Every foldem run is checked against the source's own count, request by request (`ledger =
server`, as `foldem bench replay` checks it). Figures go to DIR/summary.json and DIR/report.md
(tasks/bench/client_report.py). It stays one module: the four parts share the source process,
the measuring of one run and the ledger check, and read in order as the command runs them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import BaseModel, Field

from foldem.core.errors import ConfigError, FoldemError
from foldem.core.processes import stop_process
from foldem.core.tokens import seed_cache
from foldem.core.traces import load_traces
from foldem.replay.protocol import ReplayStats
from tasks.bench.client_worker import IN_FLIGHT, bench_job
from tasks.bench.replay_bench import default_job
from tasks.bench.replay_runs import check_server, mode_job, plan_items, read_rows
from tasks.run import lifecycle

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = ROOT / "scripts" / "peers"
PEERS = ("curator", "distilabel")


class BenchClientSettings(BaseModel):
    traces: list[Path]
    out_dir: Path
    concurrency: list[int] = Field(default_factory=lambda: [64, 256, 1024])
    workers: list[int] = Field(default_factory=lambda: [1, 2])
    scale_concurrency: int = Field(256, ge=1)
    paced_streams: int = Field(256, ge=1)
    paced_tokens_per_second: float = Field(100.0, gt=0)
    paced_workers: int = Field(1, ge=1)
    peers: bool = True
    peer_concurrency: int = Field(256, ge=1)
    peers_venvs: Path | None = None
    loop: str = "asyncio"
    database_url: str | None = None


class SourceProcess:
    """The pre-rendered source in a subprocess: its URL, its counts, its CPU time."""

    def __init__(self, traces: Sequence[Path], tokens_per_second: float) -> None:
        cmd = [sys.executable, "-m", "tasks.bench.client_source", "--tokens-per-second",
               str(tokens_per_second), "--traces", *map(str, traces)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=_child_env())
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.isdigit():
            err = self.process.stderr.read().decode()[-2000:] if self.process.stderr else ""
            stop_process(self.process)
            raise FoldemError(f"the bench source did not start: {err or line}")
        self.base_url = f"http://127.0.0.1:{line}/v1"
        self._root = f"http://127.0.0.1:{line}"
        self._ps = psutil.Process(self.process.pid)

    def cpu_seconds(self) -> float:
        t = self._ps.cpu_times()
        return float(t.user + t.system)

    def stats(self) -> ReplayStats:
        return ReplayStats.model_validate_json(httpx.get(f"{self._root}/stats", timeout=60).text)

    def reset(self) -> None:
        httpx.post(f"{self._root}/stats/reset", timeout=60)

    def stop(self) -> None:
        stop_process(self.process)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def _run_workers(consumer: str, source: SourceProcess, traces: Sequence[Path], *,
                 concurrency: int, workers: int = 1, run_id: str | None = None,
                 db_url: str | None = None, loop: str = "asyncio") -> dict[str, Any]:
    """N worker processes over one split of the streams; their figures added up."""
    base = [sys.executable, "-m", "tasks.bench.client_worker", consumer,
            "--base-url", source.base_url, "--concurrency", str(max(1, concurrency // workers)),
            "--workers", str(workers), "--loop", loop, "--traces", *map(str, traces)]
    if run_id is not None and db_url is not None:
        base += ["--run-id", run_id, "--db-url", db_url]
    start_at = time.time() + 4.0 + 2.0 * workers  # after every worker has loaded
    procs = [subprocess.Popen([*base, "--worker", str(i), "--start-at", str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env())
             for i in range(workers)]
    source_cpu = None
    outs = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise FoldemError(f"bench worker {consumer} failed: {stderr.decode()[-3000:]}")
        outs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    source_cpu = source.cpu_seconds()
    late = [o["started_late"] for o in outs]
    return {"consumer": consumer, "workers": workers, "concurrency": concurrency,
            # From the first worker's start to the last one's end (a worker still loading at
            # the start signal starts late; the wall does not count its wait).
            "wall_seconds": (max(o["ended_at"] for o in outs)
                             - min(o["started_at"] for o in outs)),
            "cpu_seconds": sum(o["cpu_seconds"] for o in outs),
            "source_cpu_end": source_cpu, "items": sum(o["items"] for o in outs),
            "started_late_seconds": max(late),
            "events": sum(o.get("events", 0) for o in outs)}


def measure(consumer: str, source: SourceProcess, settings: BenchClientSettings,
            planned_job: Any, *, concurrency: int, workers: int = 1,
            db_url: str) -> dict[str, Any]:
    """One consumer over every trace: figures, and for foldem the ledger against the source."""
    traces = settings.traces
    source.reset()
    cpu_before = source.cpu_seconds()
    run_id = None
    if consumer.startswith("foldem"):
        run_id = f"bench-client-{consumer}-{concurrency}x{workers}-{uuid.uuid4().hex[:8]}"
        lifecycle.begin_run(db_url, planned_job, run_id=run_id,
                            samples_expected=len(planned_job_items(traces)), flow_run_id=None)
    fig = _run_workers(consumer, source, traces, concurrency=concurrency, workers=workers,
                       run_id=run_id, db_url=db_url, loop=settings.loop)
    stats = source.stats()
    tokens = stats.total_completion_tokens
    fig["source_cpu_seconds"] = round(fig.pop("source_cpu_end") - cpu_before, 3)
    fig |= _rates(tokens, fig["wall_seconds"], fig["cpu_seconds"])
    fig["requests"] = len(stats.requests)
    if run_id is not None:
        lifecycle.complete_run(db_url, run_id=run_id, status="completed")
        rows = read_rows(db_url, run_id, planned_job_items(traces))
        check = check_server(rows, stats)
        fig["run_id"] = run_id
        fig["ledger_tokens"] = check.ledger_total
        fig["ledger_equals_server"] = check.ok
        fig["server_check"] = check.model_dump()
        fig["rejected"] = sum(r.status == "rejected" for r in rows.values())
        fig["abort_latency"] = abort_latency(rows.values())
    return fig


def _rates(tokens: int, wall: float, cpu: float) -> dict[str, Any]:
    return {"tokens": tokens, "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "tokens_per_second": round(tokens / wall) if wall > 0 else None,
            "tokens_per_cpu_second": round(tokens / cpu) if cpu > 0 else None,
            "cpu_seconds_per_mtok": round(cpu / tokens * 1e6, 2) if tokens else None}


_planned_cache: dict[tuple[str, ...], Any] = {}


def planned_job_items(traces: Sequence[Path]) -> Any:
    key = tuple(map(str, traces))
    if key not in _planned_cache:
        _planned_cache[key] = plan_items(load_traces(list(traces)))
    return _planned_cache[key]


def abort_latency(rows: Any) -> dict[str, Any]:
    """Per aborted stream: tokens the server wrote after the checkpoint that fired (the ledger,
    equal to the server's count, minus the tokens read when the verdict fired)."""
    gaps = sorted(r.completion_tokens - r.tokens_at_fire for r in rows
                  if r.aborted and r.tokens_at_fire is not None)
    if not gaps:
        return {"aborted": 0}
    return {"aborted": len(gaps), "p50": _pct(gaps, 0.50), "p99": _pct(gaps, 0.99),
            "max": gaps[-1], "mean": round(sum(gaps) / len(gaps), 2)}


def _pct(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(sorted_values) * q // 1))
    return sorted_values[int(rank) - 1]


def run_peers(settings: BenchClientSettings, source: SourceProcess) -> dict[str, Any]:
    """Each peer generates every prompt against the same source, from its own venv."""
    venvs = settings.peers_venvs or Path(os.environ.get(
        "FOLDEM_PEERS_VENVS", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "foldem-peers"))
    out: dict[str, Any] = {}
    traces = load_traces(list(settings.traces))
    prompts = settings.out_dir / "peer_prompts.jsonl"
    # One prompt per trace; unseeded, the source rotates through a problem's recordings.
    prompts.write_text("".join(json.dumps({"prompt": t.problem}) + "\n" for t in traces))
    # Offline settings the peers need; curator counts with tiktoken, whose files cannot be
    # downloaded here: the same seeded cache as foldem's (as scripts/peers/run_peers.sh does).
    seed_cache()
    seed_cache("cl100k_base")
    env = _child_env() | {"TELEMETRY_ENABLED": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                          "HF_HUB_OFFLINE": "1",
                          "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR",
                                                               str(seed_cache().parent))}
    for peer in PEERS:
        python = venvs / peer / "bin" / "python"
        if not (venvs / peer / ".installed").is_file() or not python.is_file():
            out[peer] = {"skipped": f"no venv at {venvs / peer} (make it with "
                         "scripts/peers/run_peers.sh, or pass --peers-venvs)"}
            continue
        source.reset()
        cpu_before = source.cpu_seconds()
        generated = settings.out_dir / f"peer_{peer}.jsonl"
        proc = subprocess.run([str(python), str(PEERS_DIR / "peer_generate.py"), peer,
                               "--base-url", source.base_url, "--prompts", str(prompts),
                               "--out", str(generated),
                               "--concurrency", str(settings.peer_concurrency)],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            out[peer] = {"skipped": f"{peer} failed: {proc.stderr.strip()[-500:]}"}
            continue
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        tokens = source.stats().total_completion_tokens
        out[peer] = _rates(tokens, report["wall_seconds"], report["cpu_seconds"]) | {
            "generated": report["generated"], "concurrency": settings.peer_concurrency,
            "source_cpu_seconds": round(source.cpu_seconds() - cpu_before, 3),
            "streams": False}
    return out


def run_bench_client(settings: BenchClientSettings) -> dict[str, Any]:
    """Every part in turn; write summary.json and report.md; return the summary."""
    from tasks.bench.client_report import ratios, write_report

    traces = load_traces(list(settings.traces))
    if not traces:
        raise ConfigError("the trace files hold no traces")
    job = default_job(traces)
    planned_job = mode_job(bench_job(job, rules=True), IN_FLIGHT, traces[0].separator,
                           max(settings.concurrency))
    db_url = settings.database_url or lifecycle.prepare_database(job)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    machine_before = _machine()
    summary: dict[str, Any] = {"traces": [str(t) for t in settings.traces],
                               "streams_planned": len(traces),
                               "loop": settings.loop, "throughput": {}, "scale": {}}
    source = SourceProcess(settings.traces, 0.0)
    try:
        for c in settings.concurrency:
            summary["throughput"][str(c)] = {
                consumer: measure(consumer, source, settings, planned_job, concurrency=c,
                                  db_url=db_url)
                for consumer in ("minimal", "foldem-norules", "foldem")}
        for n in settings.workers:
            summary["scale"][str(n)] = measure("foldem", source, settings, planned_job,
                                               concurrency=settings.scale_concurrency,
                                               workers=n, db_url=db_url)
        summary["peers"] = (run_peers(settings, source) if settings.peers
                            else {p: {"skipped": "--no-peers"} for p in PEERS})
    finally:
        source.stop()
    paced = SourceProcess(settings.traces, settings.paced_tokens_per_second)
    try:
        abort = measure("foldem", paced, settings, planned_job,
                        concurrency=settings.paced_streams, workers=settings.paced_workers,
                        db_url=db_url)
    finally:
        paced.stop()
    summary["abort"] = abort | {"streams": settings.paced_streams,
                                "tokens_per_second_per_stream": settings.paced_tokens_per_second}
    summary["ratios"] = ratios(summary)
    foldem_runs = [f for by in summary["throughput"].values() for k, f in by.items()
                   if k.startswith("foldem")] + list(summary["scale"].values()) + [abort]
    summary["ledger_equals_server"] = all(f["ledger_equals_server"] for f in foldem_runs)
    summary["machine"] = {"before": machine_before, "after": _machine()}
    (settings.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(summary, settings.out_dir / "report.md")
    return summary
