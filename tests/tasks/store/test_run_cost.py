"""The run summary's cost (tasks/store/run_cost.py), on real Postgres: the total is the ledger's
sum of `cost_usd`; rejected samples, the estimated cost of finishing them and of the other
early stops, and the model checks (step judge, judge stages) are told apart; calls with no
price are counted, not costed as 0; a judge that costs more than it saves is a net loss."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.endpoints.prices import EndpointPrice
from tasks.records.models import (
    AbortReason,
    CallKind,
    LedgerEntry,
    PriceSource,
    SampleResult,
)
from tasks.store.run_summary import summarize_run
from tasks.store.schema import ledger
from tasks.store.storage import save_results, start_run
from tests.support.samples import ledger_entry, sample_result

SPEC = {"stages": [{"name": "solve", "kind": "solve"}, {"name": "check", "kind": "judge"}]}
GEN = EndpointPrice(input_per_mtok=Decimal("0.15"), cached_input_per_mtok=Decimal("0.075"),
                    output_per_mtok=Decimal("0.6"), source=PriceSource.JOB_SPEC, origin="spec")


def _call(run_id: str, prompt_id: str, price: EndpointPrice | None, *, stage: str = "solve",
          prompt: int = 200, cached: int = 0, completion: int = 100, **fields: Any
          ) -> LedgerEntry:
    """A call as the ledger builder makes it: priced at `price`, or with no price."""
    costed = {} if price is None else {
        "price_input_per_mtok": price.input_per_mtok,
        "price_cached_input_per_mtok": price.cached_input_per_mtok,
        "price_output_per_mtok": price.output_per_mtok, "price_source": price.source,
        "cost_usd": price.cost(prompt_tokens=prompt, cached_prompt_tokens=cached,
                               completion_tokens=completion)}
    return ledger_entry(run_id, prompt_id, stage=stage, prompt_tokens=prompt,
                        cached_prompt_tokens=cached, completion_tokens=completion,
                        endpoint="gen" if price is not None else "free", **costed, **fields)


def _cut(reason: AbortReason, saved: int) -> dict[str, Any]:
    return {"aborted": True, "abort_reason": reason, "expected_tokens": 100 + saved,
            "tokens_saved": saved}


def _save(session: Session, results: list[SampleResult]) -> str:
    run_id = f"cost-{uuid.uuid4().hex[:12]}"
    start_run(session, run_id=run_id, job_name="cost-test", spec=SPEC, spec_hash="h",
              code_version="test", samples_expected=len(results))
    save_results(session, results=[r.model_copy(update={"run_id": run_id, "ledger": [
        e.model_copy(update={"run_id": run_id}) for e in r.ledger]}) for r in results])
    return run_id


def _run(judge: EndpointPrice) -> tuple[list[SampleResult], dict[str, Decimal]]:
    """Four samples and, computed here from the calls, what the summary should say."""
    r = "tmp"
    accepted = [_call(r, "a", GEN, cached=150), _call(r, "a", judge, stage="check")]
    early = [_call(r, "e", GEN, completion=60, **_cut(AbortReason.EARLY_EXIT, 40)),
             _call(r, "e", judge, stage="check")]
    rejected = [_call(r, "r", GEN, completion=30, **_cut(AbortReason.REJECTED, 70)),
                _call(r, "r", judge, call_kind=CallKind.STEP_JUDGE, prompt=500, completion=3)]
    unpriced = [_call(r, "u", None, completion=80)]
    results = [sample_result(r, "a", ledger=accepted), sample_result(r, "e", ledger=early),
               sample_result(r, "r", status="rejected", ledger=rejected),
               sample_result(r, "u", status="rejected", ledger=unpriced)]

    def usd(*calls: LedgerEntry) -> Decimal:
        return sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))

    def unmade(c: LedgerEntry) -> Decimal:
        assert c.price_output_per_mtok is not None
        return c.tokens_saved * c.price_output_per_mtok / 1_000_000

    expected = {
        "total": usd(*accepted, *early, *rejected), "rejected": usd(rejected[0]),
        "finish": unmade(rejected[0]), "early": unmade(early[0]),
        "step_judge": usd(rejected[1]), "judge_stage": usd(accepted[1], early[1])}
    return results, expected


@pytest.mark.parametrize("judge_output_price", ["0.01", "60"])
def test_the_run_summary_costs_the_run_from_the_ledger(db_session: Session,
                                                       judge_output_price: str) -> None:
    judge = GEN.model_copy(update={"output_per_mtok": Decimal(judge_output_price),
                                   "input_per_mtok": Decimal(judge_output_price)})
    results, want = _run(judge)
    run_id = _save(db_session, results)
    cost = summarize_run(db_session, run_id=run_id).cost
    in_ledger = db_session.execute(select(func.sum(ledger.c.cost_usd))
                                   .where(ledger.c.run_id == run_id)).scalar()
    assert cost.total_usd == in_ledger == want["total"]
    assert cost.per_accepted_usd == (want["total"] / 2).quantize(Decimal("1e-9"))
    assert (cost.priced_calls, cost.unpriced_calls, cost.unpriced_endpoints) == (6, 1, ["free"])
    assert cost.price_sources == [PriceSource.JOB_SPEC]
    assert cost.rejected_usd == want["rejected"]
    assert cost.rejected_finish_estimate_usd == want["finish"]
    assert cost.early_stop_estimate_usd == want["early"]
    assert (cost.step_judge_usd, cost.judge_stage_usd) == (want["step_judge"],
                                                          want["judge_stage"])
    net = want["finish"] + want["early"] - want["step_judge"] - want["judge_stage"]
    assert cost.net_saving_estimate_usd == net
    # a cheap judge pays for itself here; a dear one is a loss, and says so
    assert (net > 0) is (judge_output_price == "0.01")


def test_a_run_with_no_price_has_no_cost_rather_than_zero(db_session: Session) -> None:
    run_id = _save(db_session, [sample_result("tmp", "u", ledger=[_call("tmp", "u", None)])])
    cost = summarize_run(db_session, run_id=run_id).cost
    assert cost.total_usd is None and cost.per_accepted_usd is None
    assert (cost.priced_calls, cost.unpriced_calls, cost.unpriced_endpoints) == (0, 1, ["free"])
