"""The live benchmark's figures, from the two runs (`full`: generate then filter; `msifr`: in
flight) and the server's own counters. Token counts: the ledger's completion tokens, as stored
in Postgres; `server_*`: growth of llama.cpp's `tokens_predicted_total` over the run.

The ledger counts what reached the client; tokens the server decoded after the hang-up never
reach the wire, so they are measured apart (`tokens_after_abort`) and the check is
ledger + tokens after abort == the server's count (docs/BENCHMARKS.md, "Live model").
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from foldem.spec.job import JobSpec
from tasks.bench.live_runs import LiveModeResult
from tasks.engine.judging import stage_judging
from tasks.engine.policy import Action, ConfiguredValidator, StagePolicy
from tasks.probe.abort import OWN_REQUEST_SLACK_TOKENS
from tasks.records.models import SampleResult
from validators.base import ProblemContext

Key = tuple[str, int]


def _key(r: SampleResult) -> Key:
    return (r.prompt_id, r.sample_index)


def _text(r: SampleResult) -> str:
    return r.stages[0].text if r.stages else ""


def nearest_rank(values: Sequence[int], q: float) -> int | None:
    """The q-quantile by nearest rank (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ledger_tokens(mode: LiveModeResult) -> int:
    return sum(r.completion_tokens for r in mode.ledger)


def after_abort(mode: LiveModeResult) -> dict[str, Any]:
    """Tokens decoded after the hang-up, per aborted call, and the ledger check.

    Per call (one slot, calls one at a time): the server's count for the call less the client's;
    a call that ran to its end must match exactly, an aborted one must not be negative, and the
    stored ledger plus these must equal the counter's growth over the whole run. Otherwise
    (several slots) only the run's remainder is known: it must lie between 0 and
    OWN_REQUEST_SLACK_TOKENS per aborted call."""
    stored = _ledger_tokens(mode)
    aborted_ids = {r.response_id for r in mode.ledger if r.aborted}
    aborted_calls = sum(r.aborted for r in mode.ledger)
    if mode.calls:
        per_call = [c.server_tokens - c.client_tokens for c in mode.calls
                    if c.response_id in aborted_ids]
        completed_off = sum(c.server_tokens != c.client_tokens for c in mode.calls
                            if c.response_id not in aborted_ids)
        total = sum(c.server_tokens - c.client_tokens for c in mode.calls)
        ok = (completed_off == 0 and all(n >= 0 for n in per_call)
              and stored + total == mode.server_tokens)
        check = "per call"
    else:
        per_call, completed_off = [], 0
        total = mode.server_tokens - stored
        ok = 0 <= total <= OWN_REQUEST_SLACK_TOKENS * aborted_calls
        check = "run remainder"
    return {"check": check, "aborted_calls": aborted_calls, "total": total,
            "p50": nearest_rank(per_call, 0.5), "p99": nearest_rank(per_call, 0.99),
            "max": max(per_call) if per_call else None,
            "completed_calls_off": completed_off, "ledger_equals_server": ok}


def rejudged_post_hoc(job: JobSpec, validators: dict[str, list[ConfiguredValidator]],
                      mode: LiveModeResult) -> dict[Key, bool]:
    """Each sample's own streamed text judged after the fact with the same validators, as the
    baseline judges (True: rejected). A sample cut in flight is judged on the text it got."""
    stage = job.stages[0]
    tokens = Counter[Key]()
    for row in mode.ledger:
        tokens[(row.prompt_id, row.sample_index)] += row.completion_tokens
    out: dict[Key, bool] = {}
    for r in mode.results:
        if r.status not in ("accepted", "rejected"):
            continue
        ctx = ProblemContext(problem=r.problem, stage=stage.kind,
                             reference_answer=r.reference_answer,
                             expected_tokens=stage.expected_tokens)
        policy = StagePolicy(validators[stage.name], ctx, threshold=stage.threshold,
                             early_exit=False)
        judging = stage_judging(stage, policy, None, in_flight=False)
        judging.on_end(_text(r), tokens[_key(r)])
        out[_key(r)] = judging.decision is not None and judging.decision.action is Action.REJECT
    return out


def text_agreement(full: LiveModeResult, msifr: LiveModeResult) -> dict[str, Any]:
    """How often the in-flight run wrote the same text as the baseline: identical when it ran
    to its end, the baseline's beginning when it was cut."""
    base = {_key(r): _text(r) for r in full.results}
    same = 0
    for r in msifr.results:
        text, ref = _text(r), base.get(_key(r))
        aborted = bool(r.stages and r.stages[0].aborted)
        same += ref is not None and (ref.startswith(text) if aborted else ref == text)
    n = len(msifr.results)
    return {"samples": n, "same_text": same, "share": round(same / n, 4) if n else None}


def _kept(mode: LiveModeResult) -> set[Key]:
    return {_key(r) for r in mode.results if r.status == "accepted"}


def _per_hour(mode: LiveModeResult) -> float | None:
    kept = len(_kept(mode))
    return round(kept * 3600 / mode.wall_seconds, 1) if mode.wall_seconds else None


def per_validator(mode: LiveModeResult) -> dict[str, int]:
    counts = Counter(r.rejection.validator for r in mode.results if r.rejection is not None)
    return dict(counts.most_common())


def summarize(job: JobSpec, validators: dict[str, list[ConfiguredValidator]],
              full: LiveModeResult, msifr: LiveModeResult, *, exact: bool,
              reproduced: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json. `kept_equal_to_posthoc`: exact mode, the two runs kept the same samples;
    parallel mode (batching changes the numbers, so texts differ), every in-flight verdict
    equals the post-hoc verdict on that sample's own text."""
    tokens_full, tokens_msifr = _ledger_tokens(full), _ledger_tokens(msifr)
    verdicts = rejudged_post_hoc(job, validators, msifr)
    in_flight = {_key(r): r.status == "rejected" for r in msifr.results if _key(r) in verdicts}
    own_equal = sum(verdicts[k] == v for k, v in in_flight.items())
    failed = {_key(r) for m in (full, msifr) for r in m.results if r.status == "failed"}
    sets_equal = _kept(full) - failed == _kept(msifr) - failed
    abort_full, abort_msifr = after_abort(full), after_abort(msifr)
    return {
        "mode": "exact" if exact else "parallel",
        "samples": len(msifr.results),
        "tokens_full": tokens_full,
        "tokens_msifr": tokens_msifr,
        "token_reduction": round(1 - tokens_msifr / tokens_full, 4) if tokens_full else None,
        "server_tokens_full": full.server_tokens,
        "server_tokens_msifr": msifr.server_tokens,
        "tokens_after_abort": abort_msifr | {"full_run": abort_full},
        "ledger_equals_server": (abort_full["ledger_equals_server"]
                                 and abort_msifr["ledger_equals_server"]),
        "count_sources": {m.name: dict(Counter(r.count_source for r in m.ledger))
                          for m in (full, msifr)},
        "kept_equal_to_posthoc": sets_equal if exact else own_equal == len(in_flight),
        "kept_sets_equal": sets_equal,
        "own_text_verdicts_equal": {"samples": len(in_flight), "equal": own_equal},
        "same_text": text_agreement(full, msifr),
        "reproduced": reproduced,
        "kept_full": len(_kept(full)), "kept_msifr": len(_kept(msifr)),
        "failed": {m.name: sum(r.status == "failed" for r in m.results) for m in (full, msifr)},
        "aborted_msifr": sum(r.aborted for r in msifr.ledger),
        "server_decode_seconds_full": full.server_seconds,
        "server_decode_seconds_msifr": msifr.server_seconds,
        "wall_seconds_full": full.wall_seconds, "wall_seconds_msifr": msifr.wall_seconds,
        "accepted_per_hour_full": _per_hour(full),
        "accepted_per_hour_msifr": _per_hour(msifr),
        "per_validator": {"full": per_validator(full), "msifr": per_validator(msifr)},
        "run_ids": {"full": full.run_id, "msifr": msifr.run_id},
    }
