"""tasks/endpoints/prices.py: an endpoint's prices (the job spec's, else genai-prices' for a
hosted API it knows, else none) and a call's cost at them; the ledger row builder fills the
price and cost columns from the run's price book."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from foldem.spec.endpoints import Endpoint
from tasks.endpoints.base import CallStats
from tasks.endpoints.pool import CallAttempt
from tasks.endpoints.prices import EndpointPrice, PriceBook, endpoint_price, resolve_prices
from tasks.engine.ledger import CallSite, ledger_row
from tasks.records.models import PriceSource, Prompt, WorkItem

SPEC_PRICES = {"input_per_mtok": "0.15", "cached_input_per_mtok": "0.075",
               "output_per_mtok": "0.6"}


def _endpoint(name: str = "e", base_url: str = "replay", model: str = "*",
              **extra: Any) -> Endpoint:
    return Endpoint.model_validate({"name": name, "base_url": base_url, "model": model,
                                    **extra})


def _price(input_: str, output: str, cached: str | None = None) -> EndpointPrice:
    return EndpointPrice(input_per_mtok=Decimal(input_), output_per_mtok=Decimal(output),
                         cached_input_per_mtok=None if cached is None else Decimal(cached),
                         source=PriceSource.JOB_SPEC, origin="job spec")


@pytest.mark.parametrize(("prompt", "cached", "completion", "usd"), [
    # uncached prompt at the input price, cached at the cached price, completion at output
    (1_000_000, 0, 0, "2"), (1_000_000, 1_000_000, 0, "0.5"), (0, 0, 1_000_000, "8"),
    (1000, 400, 250, "0.0012 + 0.0002 + 0.002"),
    (1000, None, 250, "0.002 + 0.002"),  # the server said nothing about its cache
    (None, None, 0, "0"),  # never reached the server: no prompt processed
    (100, 500, 0, "0.00005"),  # a cached count above the prompt's is the prompt's
    (1, 0, 1, "0.00001"),
])
def test_a_calls_cost_at_its_endpoints_prices(prompt: int | None, cached: int | None,
                                              completion: int, usd: str) -> None:
    price = _price("2", "8", cached="0.5")
    expected = sum((Decimal(part) for part in usd.split(" + ")), Decimal(0))
    assert price.cost(prompt_tokens=prompt, cached_prompt_tokens=cached,
                      completion_tokens=completion) == expected


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_given() -> None:
    price = _price("2", "8")
    assert price.cost(prompt_tokens=1000, cached_prompt_tokens=1000, completion_tokens=0) \
        == price.cost(prompt_tokens=1000, cached_prompt_tokens=0, completion_tokens=0)


def test_a_cost_is_kept_to_the_ledgers_nine_decimal_places() -> None:
    cost = _price("0.123456789", "0").cost(prompt_tokens=1, cached_prompt_tokens=0,
                                            completion_tokens=0)
    assert cost == Decimal("0.000000123") and cost.as_tuple().exponent == -9


def test_the_job_specs_prices_win_over_the_list() -> None:
    ep = _endpoint(base_url="https://api.openai.com/v1", model="gpt-4o-mini",
                   prices={"input_per_mtok": 1, "output_per_mtok": 2})
    price = endpoint_price(ep)
    assert price is not None and price.source is PriceSource.JOB_SPEC
    assert (price.input_per_mtok, price.output_per_mtok) == (1, 2)


@pytest.mark.parametrize(("base_url", "model"), [
    ("https://api.openai.com/v1", "gpt-4o-mini"),
    ("https://api.groq.com/openai/v1", "llama-3.1-8b-instant"),
    ("https://openrouter.ai/api/v1", "openai/gpt-4o-mini"),
])
def test_a_hosted_model_is_priced_as_genai_prices_prices_it(base_url: str, model: str) -> None:
    price = endpoint_price(_endpoint(base_url=base_url, model=model))
    assert price is not None and price.source is PriceSource.GENAI_PRICES
    usage = Usage(input_tokens=12_345, cache_read_tokens=2_000, output_tokens=678)
    if price.cached_input_per_mtok is None:  # the list has no cached price for it
        usage = Usage(input_tokens=12_345, output_tokens=678)
    listed = calc_price(usage, model, provider_api_url=base_url).total_price
    ours = price.cost(prompt_tokens=12_345, cached_prompt_tokens=usage.cache_read_tokens or 0,
                      completion_tokens=678)
    assert abs(ours - listed) < Decimal("0.000000001")
    assert model.split("/")[-1] in price.origin


@pytest.mark.parametrize(("base_url", "model"), [
    ("replay", "*"), ("local", "gpt-4o-mini"),  # started by foldem: nobody bills per token
    ("http://gpu-box:8000/v1", "gpt-4o-mini"),  # self-hosted, even serving a listed model
    ("https://api.openai.com/v1", "no-such-model-xyz"),  # a provider the list has, no model
])
def test_no_price_where_none_is_known(base_url: str, model: str) -> None:
    assert endpoint_price(_endpoint(base_url=base_url, model=model)) is None


def test_the_price_book_says_once_which_endpoints_have_no_price() -> None:
    book = resolve_prices([_endpoint("gen", prices=SPEC_PRICES), _endpoint("judge"),
                           _endpoint("local-judge", base_url="local")])
    assert book.unpriced() == ["judge", "local-judge"]
    notice = book.notice()
    assert notice is not None and "'judge', 'local-judge'" in notice and "prices:" in notice
    assert resolve_prices([_endpoint("gen", prices=SPEC_PRICES)]).notice() is None


def _row(book: PriceBook, stats: CallStats) -> Any:
    item = WorkItem(prompt=Prompt(prompt_id="p0", text="1 + 1?"), sample_index=0)
    return ledger_row(CallSite(run_id="r", item=item, stage="solve", prices=book),
                      CallAttempt(endpoint=_endpoint("gen", prices=SPEC_PRICES), stats=stats))


def test_a_ledger_row_carries_its_prices_and_cost() -> None:
    stats = CallStats(prompt_tokens=120, cached_prompt_tokens=100, completion_tokens=40,
                      attempts=1)
    book = resolve_prices([_endpoint("gen", prices=SPEC_PRICES)])
    row = _row(book, stats)
    price = book.for_endpoint("gen")
    assert price is not None
    assert (row.price_input_per_mtok, row.price_cached_input_per_mtok,
            row.price_output_per_mtok) == (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))
    assert row.price_source is PriceSource.JOB_SPEC and row.cached_prompt_tokens == 100
    assert row.cost_usd == price.cost(prompt_tokens=120, cached_prompt_tokens=100,
                                      completion_tokens=40) > 0


def test_a_ledger_row_with_no_price_has_no_cost_not_a_zero() -> None:
    row = _row(PriceBook(prices={"gen": None}),
               CallStats(prompt_tokens=120, completion_tokens=40, attempts=1))
    assert (row.cost_usd, row.price_source, row.price_input_per_mtok) == (None, None, None)
