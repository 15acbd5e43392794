"""The run summary's cost (tasks/store/run_cost.py), on real Postgres: the total is the ledger's
sum of `cost_usd`; rejected samples, the estimated cost of finishing them and of the other
early stops, and the model checks (step judge, judge stages) are told apart; calls with no
price are counted, not costed as 0; a judge that costs more than it saves is a net loss."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.records.models import PriceSource, SampleResult
from tasks.store.run_summary import summarize_run
from tasks.store.schema import ledger
from tasks.store.storage import save_results, start_run
from tests.support.costs import SPEC, cost_mix, judge_price, priced_call
from tests.support.samples import sample_result


def _save(session: Session, results: list[SampleResult], run_id: str) -> None:
    start_run(session, run_id=run_id, job_name="cost-test", spec=SPEC, spec_hash="h",
              code_version="test", samples_expected=len(results))
    save_results(session, results=results)


@pytest.mark.parametrize("judge_usd_per_mtok", ["0.01", "60"])
def test_the_run_summary_costs_the_run_from_the_ledger(db_session: Session,
                                                       judge_usd_per_mtok: str) -> None:
    run_id = f"cost-{uuid.uuid4().hex[:12]}"
    results, want = cost_mix(run_id, judge_price(judge_usd_per_mtok))
    _save(db_session, results, run_id)
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
    assert cost.checks_usd == want["checks"]
    assert cost.net_saving_estimate_usd == want["net"]
    # a cheap judge pays for itself here; a dear one is a loss, and says so
    assert (want["net"] > 0) is (judge_usd_per_mtok == "0.01")


def test_a_run_with_no_price_has_no_cost_rather_than_zero(db_session: Session) -> None:
    run_id = f"cost-{uuid.uuid4().hex[:12]}"
    _save(db_session, [sample_result(run_id, "u", ledger=[priced_call(run_id, "u", None)])],
          run_id)
    cost = summarize_run(db_session, run_id=run_id).cost
    assert cost.total_usd is None and cost.per_accepted_usd is None
    assert cost.rejected_usd is None and cost.net_saving_estimate_usd is None  # unknown, not 0
    assert (cost.priced_calls, cost.unpriced_calls, cost.unpriced_endpoints) == (0, 1, ["free"])
