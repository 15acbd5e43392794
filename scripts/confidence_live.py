"""Measure the confidence validator on the live local model (docs/VALIDATORS.md, "Confidence
from logprobs (opt-in)").

Each GSM8K prompt is generated once with logprobs (one llama.cpp slot, 1 thread, a seed per
prompt) and its deltas kept; then the same deltas are judged in flight by the default solve
validators alone, and with `confidence` added (hard, and soft), at several thresholds. The
verdict of `confidence` depends only on the sequence of token confidences, so judging recorded
deltas gives what a live run would. The cost of asking for logprobs is measured by generating
the same prompts again without them: completion tokens, wall time, client CPU time, bytes.

    PYTHONPATH=. .venv/bin/python scripts/confidence_live.py --prompts 40 --out /tmp/conf.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from foldem.spec.endpoints import Endpoint
from foldem.spec.job import load_job
from foldem.spec.stages import Stage
from tasks.endpoints.base import CallStats, ChatRequest, Delta
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.local_model import LocalModelOptions, start_local_model
from tasks.engine.judging import InFlight
from tasks.engine.policy import Action, ConfiguredValidator, StagePolicy
from tasks.engine.runner import render_messages
from validators.base import ProblemContext
from validators.defaults import DEFAULT_SOLVE_VALIDATORS
from validators.registry import build

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
THRESHOLDS = (2.75, 3.0, 3.25, 3.5)  # SmolLM2-135M's lowest window means: 2.6 to 4.2


def _reference(answer: str) -> str:
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


async def _generate(client: EndpointClient, request: ChatRequest
                    ) -> tuple[list[Delta], CallStats, float, float]:
    stats = CallStats()
    deltas: list[Delta] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with client.stream(request, stats=stats) as call:
        async for delta in call:
            deltas.append(delta)
    return deltas, stats, time.process_time() - cpu0, time.perf_counter() - wall0


def _judge(stage: Stage, configs: list[tuple[str, dict[str, Any], str]], ctx: ProblemContext,
           deltas: list[Delta], stats: CallStats) -> dict[str, Any]:
    validators = [ConfiguredValidator(build(n, p), m) for n, p, m in configs]  # type: ignore[arg-type]
    policy = StagePolicy(validators, ctx, threshold=stage.threshold,
                         early_exit=stage.early_exit)
    judging = InFlight(stage, policy, None)
    for delta in deltas:
        if judging.on_delta(delta):
            break
    else:
        judging.on_end(stats.text, stats.completion_tokens)
    d = judging.decision
    rejected = d is not None and d.action is Action.REJECT
    return {"rejected": rejected,
            "validator": d.verdict.validator if rejected and d and d.verdict else None,
            "tokens": judging.splitter.tokens}


async def _bytes(base_url: str, body: dict[str, Any]) -> int:
    async with httpx.AsyncClient(trust_env=False, timeout=300) as http:
        async with http.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            return sum([len(b) async for b in response.aiter_bytes()])


async def main(n: int, max_tokens: int, out: Path, cost_pass: bool) -> None:
    job = load_job(ROOT / "examples" / "gsm8k.yaml")
    stage = job.stages[0]
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:n]]
    defaults = [(name, dict(params), mode) for name, params, mode in DEFAULT_SOLVE_VALIDATORS]
    opts = LocalModelOptions(parallel=1, threads=1, ctx=2048, alias="smollm2")
    with start_local_model(opts) as server:
        ep = Endpoint(name="local", base_url=server.base_url, model="smollm2",
                      server="llama.cpp")
        client = EndpointClient(ep, base_url=server.base_url, api_key=SecretStr("EMPTY"))
        samples: list[dict[str, Any]] = []
        cost = {"with": [0, 0.0, 0.0], "without": [0, 0.0, 0.0]}  # tokens, cpu s, wall s
        for i, row in enumerate(rows):
            messages = tuple(render_messages(stage, {"problem": row["question"]}))
            for key, k in ((("without", None),) if cost_pass else ()) + (("with", 5),):
                request = ChatRequest(messages=messages, max_tokens=max_tokens,
                                      temperature=job.sampling.temperature, seed=i,
                                      top_logprobs=k)
                deltas, stats, cpu, wall = await _generate(client, request)
                c = cost[key]
                c[0] += stats.completion_tokens
                c[1] += cpu
                c[2] += wall
                if k is None:
                    continue
                ctx = ProblemContext(problem=row["question"], reference_answer=_reference(
                    row["answer"]), expected_tokens=stage.expected_tokens)
                sample: dict[str, Any] = {
                    "i": i, "tokens": stats.completion_tokens,
                    "confidences": [round(c, 4) for d in deltas for c in d.confidences],
                    "reference": ctx.reference_answer, "text": stats.text,
                    "rules": _judge(stage, defaults, ctx, deltas, stats)}
                for mode in ("hard", "soft"):
                    for t in THRESHOLDS:
                        conf = ("confidence", {"min_group_confidence": t}, mode)
                        sample[f"{mode}@{t}"] = _judge(stage, [*defaults, conf], ctx, deltas,
                                                       stats)
                        sample[f"alone@{t}"] = _judge(stage, [conf[:2] + ("hard",)], ctx,
                                                      deltas, stats)
                samples.append(sample)
            print(i, samples[-1]["tokens"], samples[-1]["rules"], flush=True)
        body = {"model": "smollm2", "stream": True, "max_tokens": 64, "temperature": 0.0,
                "messages": list(render_messages(stage, {"problem": rows[0]["question"]}))}
        plain = await _bytes(server.base_url, body)
        with_lp = await _bytes(server.base_url, body | {"logprobs": True, "top_logprobs": 5})
        await client.aclose()
    out.write_text(json.dumps({"samples": samples, "cost": cost,
                               "bytes_64_tokens": {"without": plain, "with": with_lp}},
                              indent=1))
    print(json.dumps(summarize(samples, cost), indent=1))


def summarize(samples: list[dict[str, Any]], cost: dict[str, list[float]]) -> dict[str, Any]:
    """Per config: rejections, the ones the rules did not make, false rejections among what
    the rules accept, tokens generated."""
    accepted = [s for s in samples if not s["rules"]["rejected"]]
    rejected = [s for s in samples if s["rules"]["rejected"]]
    summary: dict[str, Any] = {
        "samples": len(samples), "rules_accept": len(accepted),
        "rules_tokens": sum(s["rules"]["tokens"] for s in samples), "cost": cost}
    for key in [k for k in samples[0] if "@" in k]:
        fired = [s for s in samples if s[key]["rejected"]
                 and (key.startswith("alone") or s[key]["validator"] == "confidence")]
        summary[key] = {
            "confidence_fired": len(fired),
            "false_rejections_of_rules_accepted": sum(s in fired for s in accepted),
            "caught_among_rules_rejected": sum(s in fired for s in rejected),
            "tokens": sum(s[key]["tokens"] for s in samples),
        }
    return summary


def _min_group(confidences: list[float], window: int = 64, min_tokens: int = 64) -> float | None:
    """The lowest window mean from `min_tokens` on (what the validator compares)."""
    low = None
    for end in range(min_tokens, len(confidences) + 1):
        part = confidences[max(0, end - window):end]
        mean = sum(part) / len(part)
        low = mean if low is None or mean < low else low
    return low


def _correct(text: str, reference: str | None) -> bool:
    """The last number written is the reference (the model seldom writes "#### N")."""
    marks = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return bool(marks) and reference is not None and marks[-1].replace(",", "") == reference


def report(path: Path) -> None:
    """Markdown tables from a saved run: per threshold and mode, and confidence vs correctness."""
    data = json.loads(path.read_text())
    samples, cost = data["samples"], data["cost"]
    s = summarize(samples, cost)
    print(f"samples {s['samples']}, the default set accepts {s['rules_accept']}; tokens "
          f"judged in flight by the default set: {s['rules_tokens']}")
    print("| threshold | mode | confidence fired | of them on samples the default set "
          "accepts (false) | on samples it rejects | tokens in flight |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in [k for k in s if "@" in k and not k.startswith("alone")]:
        mode, t = key.split("@")
        r = s[key]
        print(f"| {t} | {mode} | {r['confidence_fired']} | "
              f"{r['false_rejections_of_rules_accepted']} / {s['rules_accept']} | "
              f"{r['caught_among_rules_rejected']} / {s['samples'] - s['rules_accept']} | "
              f"{r['tokens']} |")
    groups: dict[bool, list[float]] = {True: [], False: []}
    for sample in samples:
        low = _min_group(sample["confidences"])
        if low is not None:
            groups[_correct(sample["text"], sample["reference"])].append(low)
    for ok, lows in groups.items():
        lows.sort()
        if lows:
            print(f"{'correct' if ok else 'wrong/none'}: n={len(lows)} lowest window mean "
                  f"median {lows[len(lows) // 2]:.3f} range {lows[0]:.3f}..{lows[-1]:.3f}")
    pairs = [(a, b) for a in groups[True] for b in groups[False]]
    if pairs:  # the chance a correct sample is surer than a wrong one (AUROC)
        auc = sum((a > b) + 0.5 * (a == b) for a, b in pairs) / len(pairs)
        print(f"AUROC of lowest window mean for correct vs wrong: {auc:.2f}")
    print(json.dumps({"cost": cost, "bytes_64_tokens": data["bytes_64_tokens"]}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--out", type=Path, default=Path("/tmp/confidence_live.json"))
    parser.add_argument("--report", action="store_true", help="only print tables of --out")
    parser.add_argument("--no-cost", action="store_true",
                        help="skip the pass without logprobs (the cost comparison)")
    args = parser.parse_args()
    if args.report:
        report(args.out)
    else:
        asyncio.run(main(args.prompts, args.max_tokens, args.out, not args.no_cost))
