"""What each mode of `foldem bench replay` cost at given prices: the same figures as a run's
summary (tasks/store/run_cost.py), read from each mode's run in Postgres, so in-flight
rejection and generate-then-filter compare in dollars per accepted sample, step judge included.

Prices come from the job spec's endpoints, or `--prices` for the endpoints that give none
(the default bench job's replay endpoints give none: without `--prices` there is no price, and
the block says so rather than a cost of 0).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from foldem.spec.endpoints import Prices
from foldem.spec.job import JobSpec
from tasks.bench.replay_runs import ModeResult
from tasks.endpoints.prices import resolve_prices
from tasks.records.models import RunCost
from tasks.store.db import get_engine, session_scope
from tasks.store.run_cost import summarize_cost


def with_prices(job: JobSpec, prices: Prices | None) -> JobSpec:
    """The job with `prices` on every endpoint that has none of its own."""
    if prices is None:
        return job
    return job.model_copy(update={"endpoints": [
        ep if ep.prices is not None else ep.model_copy(update={"prices": prices})
        for ep in job.endpoints]})


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _change(new: Decimal | None, old: Decimal | None) -> float | None:
    """The relative change from `old` to `new` (-0.25: a quarter cheaper)."""
    return None if new is None or not old else round(float((new - old) / old), 4)


def cost_block(job: JobSpec, db_url: str, results: dict[str, ModeResult]) -> dict[str, Any]:
    """summary.json's `cost`: the prices, and per mode its cost, cost per accepted sample, what
    its model checks cost and the estimated net saving; money as exact decimal strings."""
    book = resolve_prices(job.endpoints)
    costs: dict[str, tuple[int, RunCost]] = {}
    with session_scope(get_engine(db_url)) as session:
        for name, result in results.items():
            accepted = sum(r.status == "accepted" for r in result.rows.values())
            costs[name] = accepted, summarize_cost(session, run_id=result.run_id,
                                                   accepted=accepted)
    return {
        "prices": {name: None if p is None else p.describe() for name, p in book.prices.items()},
        "unpriced_endpoints": book.unpriced(),
        "modes": {name: {"accepted": accepted, "total_usd": _usd(c.total_usd),
                         "per_accepted_usd": _usd(c.per_accepted_usd),
                         "checks_usd": _usd(c.checks_usd),
                         "net_saving_estimate_usd": _usd(c.net_saving_estimate_usd),
                         "unpriced_calls": c.unpriced_calls}
                  for name, (accepted, c) in costs.items()},
        "per_accepted_change_msifr_vs_full": _change(costs["msifr"][1].per_accepted_usd,
                                                     costs["full"][1].per_accepted_usd)}


def cost_line(block: dict[str, Any]) -> str:
    """One line for the terminal: cost per accepted sample in both runs, or why there is none."""
    full, msifr = block["modes"]["full"], block["modes"]["msifr"]
    if full["per_accepted_usd"] is None or msifr["per_accepted_usd"] is None:
        missing = ", ".join(block["unpriced_endpoints"]) or "the endpoints"
        return (f"cost: no price known for {missing} (give --prices input=...,output=... or "
                "`prices:` in the job spec)")
    change = block["per_accepted_change_msifr_vs_full"]
    unpriced = (f"; {full['unpriced_calls'] + msifr['unpriced_calls']:,} calls on "
                f"{', '.join(block['unpriced_endpoints'])} not costed (no price)"
                if block["unpriced_endpoints"] else "")
    return (f"cost per accepted sample: ${full['per_accepted_usd']} generate-then-filter, "
            f"${msifr['per_accepted_usd']} in flight"
            + ("" if change is None else f" ({change:+.1%})") + unpriced)
