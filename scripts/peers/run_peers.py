"""Peers side by side: bespokelabs-curator and distilabel generate the benchmark's prompts in
full against the same replay endpoint (same traces, same pace); foldem's validators then filter
their outputs post hoc. Writes DIR/peers.json beside foldem's DIR/summary.json.

Runs in foldem's venv; each peer runs in its own venv (scripts/peers/run_peers.sh makes them).
Not part of CI.

    python scripts/peers/run_peers.py --traces FILE... --out DIR --venvs VENV_DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from foldem.core.data import resolve_input_path
from foldem.core.traces import Trace, load_traces
from foldem.replay.launcher import start_replay_server
from tasks.bench.replay_bench import DEFAULT_CONCURRENCY, DEFAULT_TOKENS_PER_SECOND, default_job
from tasks.engine.policy import Action, ConfiguredValidator, StagePolicy
from tasks.engine.runner import build_stage_validators
from validators.base import ProblemContext
from validators.checkpoints import CheckpointSplitter

HERE = Path(__file__).resolve().parent
PEERS = ("curator", "distilabel")


def posthoc_accepts(job_validators: list[ConfiguredValidator], trace: Trace, text: str) -> bool:
    """Judge a whole generated text as the generate-then-filter baseline does."""
    ctx = ProblemContext(problem=trace.problem, stage="solve",
                         reference_answer=trace.reference_answer, expected_tokens=None)
    policy = StagePolicy(job_validators, ctx, early_exit=False)
    splitter = CheckpointSplitter(separator=trace.separator, every_step=True, fractions=[],
                                  expected_tokens=None)
    for cp in [*splitter.push(text, 0), splitter.close()]:
        if policy.judge(cp).action is Action.REJECT:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", nargs="+", required=True)
    parser.add_argument("--out", required=True, help="the bench replay DIR (summary.json)")
    parser.add_argument("--venvs", required=True, help="directory holding <peer>/bin/python")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--tokens-per-second", type=float, default=DEFAULT_TOKENS_PER_SECOND)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    args = parser.parse_args()
    paths = [resolve_input_path(t) for t in args.traces]
    traces = load_traces(paths)
    job = default_job(traces)
    validators = build_stage_validators(job)[job.stages[0].name]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="foldem-peers-"))
    prompts = work / "prompts.jsonl"
    # One prompt per trace: unseeded, the replay rotates through a problem's recordings, so n
    # prompts of a problem with n recordings replay each once, as foldem's runs do.
    prompts.write_text("".join(json.dumps({"prompt": t.problem}) + "\n" for t in traces))
    report: dict[str, object] = {}
    summary_file = out / "summary.json"
    if summary_file.is_file():
        s = json.loads(summary_file.read_text())
        report["foldem"] = {"tokens_full": s["tokens_full"], "tokens_msifr": s["tokens_msifr"],
                            "wall_seconds_full": s["wall_seconds_full"],
                            "wall_seconds_msifr": s["wall_seconds_msifr"]}
    for peer in args.peers:
        python = Path(args.venvs) / peer / "bin" / "python"
        with start_replay_server(paths, tokens_per_second=args.tokens_per_second) as server:
            generated = work / f"{peer}.jsonl"
            started = time.perf_counter()
            proc = subprocess.run([str(python), str(HERE / "peer_generate.py"), peer,
                                   "--base-url", server.base_url, "--prompts", str(prompts),
                                   "--out", str(generated), "--concurrency",
                                   str(args.concurrency)], capture_output=True, text=True)
            wall = time.perf_counter() - started
            server_tokens = server.stats().total_completion_tokens
        if proc.returncode != 0:
            report[peer] = {"error": proc.stderr[-2000:]}
            continue
        rows = [json.loads(line) for line in generated.read_text().splitlines() if line]
        kept = sum(posthoc_accepts(validators, t, r["text"]) for t, r in zip(traces, rows,
                                                                              strict=False))
        own = [r["completion_tokens"] for r in rows if r["completion_tokens"] is not None]
        report[peer] = {"generated": len(rows), "kept_after_foldem_validators": kept,
                        "server_tokens": server_tokens, "own_token_count": sum(own) if own
                        else None, "wall_seconds": round(wall, 2)}
        print(peer, report[peer], flush=True)
    (out / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out / 'peers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
