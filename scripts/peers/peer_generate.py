"""Generate every prompt in full with a peer framework against an OpenAI-compatible endpoint.

Runs inside the peer's own virtual environment (never foldem's): it imports only the peer and
the standard library. Reads prompts (JSONL, field `prompt`), writes one JSON line per prompt
with the generated `text` and the framework's own `completion_tokens` (null if it reports none).

    python peer_generate.py curator|distilabel --base-url URL --prompts IN --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

MODEL = "replay-peer"  # not a recorded generator: the replay plays any recording of the problem


def run_curator(base_url: str, prompts: list[str], concurrency: int) -> list[dict]:
    os.environ.setdefault("TELEMETRY_ENABLED", "false")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("CURATOR_CACHE_DIR", tempfile.mkdtemp(prefix="curator-cache-"))
    from bespokelabs import curator

    llm = curator.LLM(model_name=MODEL, backend="openai",
                      generation_params={"max_tokens": 4096},
                      backend_params={"base_url": base_url, "api_key": "unused",
                                      "max_requests_per_minute": 100_000,
                                      "max_tokens_per_minute": 100_000_000,
                                      "max_concurrent_requests": concurrency,
                                      "require_all_responses": False})
    result = llm(prompts)
    dataset = getattr(result, "dataset", result)
    return [{"text": row.get("response") or "", "completion_tokens": None} for row in dataset]


def run_distilabel(base_url: str, prompts: list[str], concurrency: int) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from distilabel.models import OpenAILLM

    llm = OpenAILLM(model=MODEL, base_url=base_url, api_key="unused", max_retries=0)
    llm.load()
    rows: list[dict] = []
    for start in range(0, len(prompts), concurrency):  # bounded concurrency, like the others
        batch = [[{"role": "user", "content": p}] for p in prompts[start:start + concurrency]]
        for out in llm.generate(inputs=batch, num_generations=1, max_new_tokens=4096):
            stats = out.get("statistics") or {}
            tokens = stats.get("output_tokens")
            rows.append({"text": (out.get("generations") or [""])[0] or "",
                         "completion_tokens": (tokens[0] if isinstance(tokens, list) and tokens
                                               else tokens)})
    return rows


def _cpu_seconds() -> float:
    """This process's CPU time and its finished children's (a peer may fork workers)."""
    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["curator", "distilabel"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with open(args.prompts, encoding="utf-8") as fh:
        prompts = [json.loads(line)["prompt"] for line in fh if line.strip()]
    runner = run_curator if args.peer == "curator" else run_distilabel
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    rows = runner(args.base_url, prompts, args.concurrency)
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    with open(args.out, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(json.dumps({"peer": args.peer, "generated": len(rows), "wall_seconds": round(wall, 2),
                      "cpu_seconds": round(cpu, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
