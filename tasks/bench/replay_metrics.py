"""The replay benchmark's figures, from per-trace rows of the baseline (`full`) and
in-flight (`msifr`) runs and the traces' labels. Token counts are the ledger's (o200k_base, as
the replay endpoint counts them); the oracle prefix is counted with the same tokenizer.

Rates are fractions; a rate over an empty group is None (not 0: nothing was measured).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from foldem.core.tokens import count_tokens
from foldem.core.traces import Trace
from tasks.bench.replay_runs import ModeResult, SampleRow
from tasks.records.models import FINAL_STATUSES

SUMMARY_KEYS = (
    "traces", "tokens_full", "tokens_msifr", "token_reduction", "oracle_step_reduction",
    "oracle_capture", "rejected", "false_rejection_rate_process", "false_rejection_rate_outcome",
    "missed_fault_rate", "accuracy_full", "accuracy_kept", "kept_equal_to_posthoc",
    "server_tokens_match", "wall_seconds_full", "wall_seconds_msifr", "per_dataset",
    "per_generator", "per_validator", "early_exit")
#: Added to summary.json when the replay injects faults (`--faults`): totals over every mode run.
FAULT_KEYS = ("failed", "lost", "duplicated", "ledger_mismatch")
#: Added as `step_judge` when the measured stage has a step judge: what judging cost.
STEP_JUDGE_KEYS = ("calls_full", "calls_msifr", "prompt_tokens_full", "prompt_tokens_msifr",
                   "completion_tokens_full", "completion_tokens_msifr", "rejected_by_judge",
                   "replayed_judge")


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def oracle_prefix_tokens(trace: Trace) -> int | None:
    """Tokens up to and including the labelled wrong step (None: no wrong step labelled)."""
    if trace.first_error_step is None or trace.first_error_step < 0:
        return None
    return count_tokens(trace.separator.join(trace.steps[: trace.first_error_step + 1]))


def core_figures(traces: Sequence[Trace], full: dict[str, SampleRow], msifr: dict[str, SampleRow],
                 prefixes: dict[str, int | None]) -> dict[str, Any]:
    """The summary's figures over one group of traces."""
    ids = [t.id for t in traces]
    tokens_full = sum(full[i].completion_tokens for i in ids)
    tokens_msifr = sum(msifr[i].completion_tokens for i in ids)
    labelled = [t for t in traces if t.first_error_step is not None]
    wrong = [t for t in labelled if t.first_error_step is not None and t.first_error_step >= 0]
    clean = [t for t in labelled if t.first_error_step == -1]
    correct = [t for t in traces if t.final_answer_correct]
    labelled_tokens = sum(full[t.id].completion_tokens for t in labelled)
    oracle_saved = sum(max(0, full[t.id].completion_tokens - (prefixes[t.id] or 0)) for t in wrong)
    saved_on_wrong = sum(full[t.id].completion_tokens - msifr[t.id].completion_tokens
                         for t in wrong)
    kept = [t for t in traces if msifr[t.id].status == "accepted"]

    def rejected_in(group: Iterable[Trace]) -> int:
        return sum(msifr[t.id].status == "rejected" for t in group)

    return {
        "traces": len(traces),
        "tokens_full": tokens_full,
        "tokens_msifr": tokens_msifr,
        "token_reduction": round(1 - tokens_msifr / tokens_full, 4) if tokens_full else None,
        "oracle_step_reduction": (round(oracle_saved / labelled_tokens, 4)
                                  if labelled_tokens else None),
        "oracle_capture": round(saved_on_wrong / oracle_saved, 4) if oracle_saved else None,
        "rejected": rejected_in(traces),
        "false_rejection_rate_process": _rate(rejected_in(clean), len(clean)),
        "false_rejection_rate_outcome": _rate(rejected_in(correct), len(correct)),
        "missed_fault_rate": _rate(sum(msifr[t.id].status == "accepted" for t in wrong),
                                   len(wrong)),
        "accuracy_full": _rate(len(correct), len(traces)),
        "accuracy_kept": _rate(sum(t.final_answer_correct for t in kept), len(kept)),
        # A sample that failed in either run (an endpoint fault) has no verdict to compare.
        "kept_equal_to_posthoc": ({i for i in ids if full[i].status == "accepted"
                                   and msifr[i].status != "failed"}
                                  == {t.id for t in kept if full[t.id].status != "failed"}),
    }


def _grouped(traces: Sequence[Trace], key: Callable[[Trace], str]) -> dict[str, list[Trace]]:
    groups: dict[str, list[Trace]] = {}
    for t in traces:
        groups.setdefault(key(t), []).append(t)
    return dict(sorted(groups.items()))


def per_validator(traces: Sequence[Trace], full: dict[str, SampleRow],
                  msifr: dict[str, SampleRow]) -> dict[str, dict[str, Any]]:
    """Per validator that rejected in flight: how often, on which labels, what it saved, and
    where in the trace it fired (share of the trace's full tokens streamed)."""
    out: dict[str, dict[str, Any]] = {}
    for name, group in _grouped([t for t in traces if msifr[t.id].validator],
                                lambda t: msifr[t.id].validator or "").items():
        fractions = [msifr[t.id].completion_tokens / full[t.id].completion_tokens
                     for t in group if full[t.id].completion_tokens]
        out[name] = {
            "rejected": len(group),
            "on_clean": sum(t.first_error_step == -1 for t in group),
            "on_wrong_step": sum(t.first_error_step is not None and t.first_error_step >= 0
                                 for t in group),
            "on_correct_answer": sum(t.final_answer_correct for t in group),
            "tokens_saved": sum(full[t.id].completion_tokens - msifr[t.id].completion_tokens
                                for t in group),
            "median_fraction_at_fire": (round(statistics.median(fractions), 4)
                                        if fractions else None),
            "by_stage": {st: sum(msifr[t.id].stage == st for t in group)
                         for st in sorted({msifr[t.id].stage or "" for t in group})},
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["rejected"]))


def _variant(base: ModeResult, variant: ModeResult | None, full_tokens: int
             ) -> dict[str, Any] | None:
    if variant is None:
        return None
    rows, base_rows = variant.rows, base.rows
    tokens = sum(r.completion_tokens for r in rows.values())
    base_tokens = sum(r.completion_tokens for r in base_rows.values())
    kept = {i for i, r in rows.items() if r.status == "accepted"}
    return {
        "tokens": tokens,
        "reduction_vs_msifr": round(1 - tokens / base_tokens, 4) if base_tokens else None,
        "reduction_vs_full": round(1 - tokens / full_tokens, 4) if full_tokens else None,
        "kept": len(kept),
        "kept_subset_of_msifr": kept <= {i for i, r in base_rows.items()
                                         if r.status == "accepted"},
        "early_exits": sum(r.abort_reason == "early_exit" for r in rows.values()),
        "not_generated": sum(r.status == "superseded" and not r.calls for r in rows.values()),
        "cut_by_agreement": sum(r.abort_reason == "agreement" for r in rows.values()),
        "wall_seconds": variant.wall_seconds,
        "server_tokens_match": variant.server.ok,
    }


def early_exit_block(msifr: ModeResult, full_tokens: int, answer: ModeResult | None,
                     agreement: ModeResult | None, combined: ModeResult | None,
                     k: int, prompts_with_several: int) -> dict[str, Any]:
    """(a) stop once the final answer is complete; (b) stop a prompt's remaining samples once
    k accepted samples agree; both together. Reductions are against the in-flight run without
    early exit (msifr) and against the full baseline."""
    block: dict[str, Any] = {
        "answer_complete": _variant(msifr, answer, full_tokens),
        "agreement": _variant(msifr, agreement, full_tokens),
        "combined": _variant(msifr, combined, full_tokens),
    }
    for name in ("agreement", "combined"):
        if block[name] is not None:
            block[name].update(k=k, prompts_with_several_samples=prompts_with_several)
    return block


def fault_figures(result: ModeResult) -> dict[str, int]:
    """What a faulty endpoint did to one mode's run: samples failed (with a reason), lost (no
    row in a final state; one an agreement mode did not need is 'superseded', final),
    duplicated (a second sample row, or a second ledger row for one sample's call)
    and the ledger's shortfall against the tokens the replay says it sent."""
    rows = result.rows.values()
    return {
        "failed": sum(r.status == "failed" for r in rows),
        "lost": sum(r.sample_rows == 0 or r.status not in FINAL_STATUSES for r in rows),
        "duplicated": sum(max(0, r.sample_rows - 1) + max(0, r.calls - 1) for r in rows),
        "ledger_mismatch": result.server.server_total - result.server.ledger_total,
    }


def summarize(traces: Sequence[Trace], full: ModeResult, msifr: ModeResult,
              early_exit: dict[str, Any], others: Sequence[ModeResult] = (),
              faults: bool = False) -> dict[str, Any]:
    """summary.json: exactly SUMMARY_KEYS, then FAULT_KEYS when faults were injected (summed
    over `full`, `msifr` and the `others` modes)."""
    prefixes = {t.id: oracle_prefix_tokens(t) for t in traces}
    f, m = full.rows, msifr.rows
    summary = core_figures(traces, f, m, prefixes)
    summary.update(
        server_tokens_match=full.server.ok and msifr.server.ok and all(
            v is None or v["server_tokens_match"] for v in early_exit.values()),
        wall_seconds_full=full.wall_seconds, wall_seconds_msifr=msifr.wall_seconds,
        per_dataset={k: core_figures(g, f, m, prefixes)
                     for k, g in _grouped(traces, lambda t: t.dataset).items()},
        per_generator={k: core_figures(g, f, m, prefixes)
                       for k, g in _grouped(traces, lambda t: t.generator).items()},
        per_validator=per_validator(traces, f, m),
        early_exit=early_exit)
    out = {k: summary[k] for k in SUMMARY_KEYS}
    if faults:
        per_mode = [fault_figures(r) for r in (full, msifr, *others)]
        out.update({k: sum(f[k] for f in per_mode) for k in FAULT_KEYS})
    return out


def step_judge_block(full: ModeResult, msifr: ModeResult, noise: BaseModel) -> dict[str, Any]:
    """What the step judge cost in both runs (its tokens are not in tokens_full/_msifr, which
    count the solutions), how often it decided a rejection in flight, and the replayed
    judge's quality settings (they apply only where the judge endpoint is the replay)."""
    def total(result: ModeResult, attr: str) -> int:
        return sum(getattr(r, attr) for r in result.rows.values())

    return {
        "calls_full": total(full, "judge_calls"), "calls_msifr": total(msifr, "judge_calls"),
        "prompt_tokens_full": total(full, "judge_prompt_tokens"),
        "prompt_tokens_msifr": total(msifr, "judge_prompt_tokens"),
        "completion_tokens_full": total(full, "judge_completion_tokens"),
        "completion_tokens_msifr": total(msifr, "judge_completion_tokens"),
        "rejected_by_judge": sum(r.validator == "step_judge" for r in msifr.rows.values()),
        "replayed_judge": noise.model_dump(),
    }
