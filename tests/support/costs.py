"""Made-up runs with priced calls, for the tests of what reads costs from the ledger (the run
summary, the psql queries, `foldem report`): calls priced as the ledger builder prices them,
and what a run's cost figures should be, computed here from the calls themselves."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tasks.endpoints.prices import EndpointPrice
from tasks.records.models import AbortReason, CallKind, LedgerEntry, PriceSource, SampleResult
from tests.support.samples import ledger_entry, sample_result

#: A spec snapshot with a `judge` stage: its calls are checks.
SPEC = {"stages": [{"name": "solve", "kind": "solve"}, {"name": "check", "kind": "judge"}]}
GEN = EndpointPrice(input_per_mtok=Decimal("0.15"), cached_input_per_mtok=Decimal("0.075"),
                    output_per_mtok=Decimal("0.6"), source=PriceSource.JOB_SPEC, origin="spec")


def judge_price(usd_per_mtok: str) -> EndpointPrice:
    return GEN.model_copy(update={"input_per_mtok": Decimal(usd_per_mtok),
                                  "output_per_mtok": Decimal(usd_per_mtok)})


def priced_call(run_id: str, prompt_id: str, price: EndpointPrice | None, *,
                stage: str = "solve", prompt: int = 200, cached: int = 0, completion: int = 100,
                **fields: Any) -> LedgerEntry:
    """A call as the ledger builder makes it: priced at `price` (endpoint 'gen'), or with no
    price (endpoint 'free')."""
    costed = {} if price is None else {
        "price_input_per_mtok": price.input_per_mtok,
        "price_cached_input_per_mtok": price.cached_input_per_mtok,
        "price_output_per_mtok": price.output_per_mtok, "price_source": price.source,
        "cost_usd": price.cost(prompt_tokens=prompt, cached_prompt_tokens=cached,
                               completion_tokens=completion)}
    return ledger_entry(run_id, prompt_id, stage=stage, prompt_tokens=prompt,
                        cached_prompt_tokens=cached, completion_tokens=completion,
                        endpoint="gen" if price is not None else "free", **costed, **fields)


def cut(reason: AbortReason, saved: int) -> dict[str, Any]:
    """The fields of a call whose stream was cut `saved` tokens short of its expected length."""
    return {"aborted": True, "abort_reason": reason, "expected_tokens": 100 + saved,
            "tokens_saved": saved}


def usd(*calls: LedgerEntry) -> Decimal:
    return sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))


def unmade_usd(call: LedgerEntry) -> Decimal:
    """The tokens a cut call did not generate, at its output price."""
    assert call.price_output_per_mtok is not None
    return call.tokens_saved * call.price_output_per_mtok / 1_000_000


def cost_mix(run_id: str, judge: EndpointPrice) -> tuple[list[SampleResult], dict[str, Decimal]]:
    """Four samples (accepted; accepted by early exit; rejected in flight after a step-judge
    call; rejected on an endpoint with no price) and what the run's cost figures should be."""
    r = run_id
    accepted = [priced_call(r, "a", GEN, cached=150), priced_call(r, "a", judge, stage="check")]
    early = [priced_call(r, "e", GEN, completion=60, **cut(AbortReason.EARLY_EXIT, 40)),
             priced_call(r, "e", judge, stage="check")]
    rejected = [priced_call(r, "r", GEN, completion=30, **cut(AbortReason.REJECTED, 70)),
                priced_call(r, "r", judge, call_kind=CallKind.STEP_JUDGE, prompt=500,
                            completion=3)]
    unpriced = [priced_call(r, "u", None, completion=80)]
    results = [sample_result(r, "a", ledger=accepted), sample_result(r, "e", ledger=early),
               sample_result(r, "r", status="rejected", ledger=rejected),
               sample_result(r, "u", status="rejected", ledger=unpriced)]
    expected = {
        "total": usd(*accepted, *early, *rejected), "rejected": usd(rejected[0]),
        "finish": unmade_usd(rejected[0]), "early": unmade_usd(early[0]),
        "step_judge": usd(rejected[1]), "judge_stage": usd(accepted[1], early[1])}
    expected["checks"] = expected["step_judge"] + expected["judge_stage"]
    expected["net"] = expected["finish"] + expected["early"] - expected["checks"]
    return results, expected
