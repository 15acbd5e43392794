"""Ledger rows: one per endpoint a call went to, built here and nowhere else.

A call that moved to another endpoint before its first token has an attempt per endpoint tried
(tasks/endpoints/pool.py); an attempt that never sent a request costs nothing and has no row.
One whose requests were sent but never reached the server (connection refused, DNS, connect
timeout) has a row with its error, no prompt tokens (None) and no completion tokens: it shows in
the endpoint's error figures and costs nothing.

Each row carries the prices of its endpoint (the run's `PriceBook`, resolved once at its start)
and its cost at them; with no price known, prices and cost stay None (never a silent 0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tasks.endpoints.pool import CallAttempt
from tasks.endpoints.prices import PriceBook
from tasks.engine.step_judge import Judgement
from tasks.records.models import AbortReason, CallKind, LedgerEntry, WorkItem


@dataclass(frozen=True, slots=True)
class CallSite:
    """Whose calls: one sample's stage in a run, and the run's prices."""

    run_id: str
    item: WorkItem
    stage: str
    prices: PriceBook = field(default_factory=lambda: PriceBook(prices={}))


def sent(attempts: Sequence[CallAttempt]) -> Iterator[CallAttempt]:
    """The attempts that sent a request."""
    return (a for a in attempts if a.stats.attempts)


def ledger_row(site: CallSite, attempt: CallAttempt, *, call_kind: CallKind = CallKind.GENERATE,
               aborted: bool = False, abort_reason: AbortReason | None = None,
               expected_tokens: int | None = None) -> LedgerEntry:
    """One endpoint's part of a call. An aborted call saved what it would still have cost up
    to the stage's expected length (one cut because k sibling samples agreed too); one cut by
    an interrupt saved nothing (its sample is generated again on resume)."""
    st = attempt.stats
    price = site.prices.for_endpoint(attempt.endpoint.name)
    saving = aborted and abort_reason is not AbortReason.INTERRUPTED and expected_tokens
    saved = max(0, expected_tokens - st.completion_tokens) if saving and expected_tokens else 0
    return LedgerEntry(
        run_id=site.run_id, prompt_id=site.item.prompt.prompt_id,
        sample_index=site.item.sample_index, stage=site.stage, call_kind=call_kind,
        endpoint=attempt.endpoint.name, model=attempt.endpoint.model,
        prompt_tokens=st.prompt_tokens, completion_tokens=st.completion_tokens,
        count_source=st.count_source, aborted=aborted, abort_reason=abort_reason,
        expected_tokens=expected_tokens, tokens_saved=saved, ttft_ms=st.ttft_ms,
        duration_ms=st.duration_ms, finish_reason=st.finish_reason,
        attempts=max(1, st.attempts), response_id=st.response_id, error=st.error,
        served_model=st.served_model,
        started_at=attempt.started_at, cached_prompt_tokens=st.cached_prompt_tokens,
        **({} if price is None else {
            "price_input_per_mtok": price.input_per_mtok,
            "price_cached_input_per_mtok": price.cached_input_per_mtok,
            "price_output_per_mtok": price.output_per_mtok, "price_source": price.source,
            "cost_usd": price.cost(prompt_tokens=st.prompt_tokens,
                                   cached_prompt_tokens=st.cached_prompt_tokens,
                                   completion_tokens=st.completion_tokens)}))


def generation_rows(site: CallSite, attempts: Sequence[CallAttempt], *, aborted: bool,
                    abort_reason: AbortReason | None,
                    expected_tokens: int | None) -> list[LedgerEntry]:
    """The stage's generation: only the last attempt can have streamed, so only it can have
    been aborted."""
    last = attempts[-1] if attempts else None
    return [ledger_row(site, a, aborted=aborted and a is last,
                       abort_reason=abort_reason if aborted and a is last else None,
                       expected_tokens=expected_tokens) for a in sent(attempts)]


def judgement_rows(site: CallSite, judgements: Sequence[Judgement]) -> list[LedgerEntry]:
    """The stage's step judgements (a judgement cut short once its score line was read is an
    early exit)."""
    return [ledger_row(site, a, call_kind=CallKind.STEP_JUDGE,
                       aborted=j.cancelled or j.stopped_early,
                       abort_reason=AbortReason.EARLY_EXIT if j.stopped_early else None)
            for j in judgements for a in sent(j.attempts)]
