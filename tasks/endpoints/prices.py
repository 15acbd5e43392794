"""What an endpoint's tokens cost: its prices, resolved once per run (`resolve_prices`), and a
call's cost at them (`EndpointPrice.cost`).

Where an endpoint's prices come from, the first that applies:

1. its `prices:` in the job spec;
2. genai-prices' data (pydantic's maintained list of providers' prices, bundled in the package:
   no network), for a hosted API: the endpoint's base_url matches a provider's API address and
   that provider lists the model;
3. none: its calls are recorded with no cost (NULL, never 0), and the run says so once.

A self-hosted server (vLLM on a GPU box, the local llama.cpp, the replay endpoint) is never
priced from the list, even when it serves a model the list knows: what it costs is the
machine's time, not a provider's price per token. Give it `prices:` to have its calls costed.

A provider price that changes with the prompt's size (a tier above 200k prompt tokens, say) is
taken at its base rate: a tier is crossed only by prompts far longer than a job's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from foldem.spec.endpoints import EMBEDDED, Endpoint
from tasks.records.models import PriceSource

PER_TOKEN = Decimal(1_000_000)
#: What the ledger keeps of a cost (Numeric(18, 9)): a cost is rounded here once, so sums of
#: the ledger's rows equal sums of the costs computed here.
COST_QUANTUM = Decimal("0.000000001")


class EndpointPrice(BaseModel):
    """An endpoint's prices in USD per million tokens, and where they came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None  # None: cached tokens at the input price
    output_per_mtok: Decimal
    source: PriceSource
    #: In words, for a person: "job spec", or which provider and model of genai-prices' data.
    origin: str

    @property
    def cached_rate(self) -> Decimal:
        return (self.cached_input_per_mtok if self.cached_input_per_mtok is not None
                else self.input_per_mtok)

    def cost(self, *, prompt_tokens: int | None, cached_prompt_tokens: int | None,
             completion_tokens: int) -> Decimal:
        """USD for one call: uncached prompt tokens at the input price, cached ones at the
        cached-input price, completion tokens at the output price. A prompt that never reached
        the server (None) costs nothing."""
        prompt = prompt_tokens or 0
        cached = min(cached_prompt_tokens or 0, prompt)
        usd = ((prompt - cached) * self.input_per_mtok + cached * self.cached_rate
               + completion_tokens * self.output_per_mtok) / PER_TOKEN
        return usd.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)

    def describe(self) -> str:
        cached = f", cached input ${self.cached_input_per_mtok}" \
            if self.cached_input_per_mtok is not None else ""
        return (f"input ${self.input_per_mtok}{cached}, output ${self.output_per_mtok} "
                f"per Mtok ({self.origin})")


class PriceBook(BaseModel):
    """The prices of a run's endpoints, by endpoint name (None: no price known)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prices: dict[str, EndpointPrice | None]

    def for_endpoint(self, name: str) -> EndpointPrice | None:
        return self.prices.get(name)

    def unpriced(self) -> list[str]:
        return sorted(name for name, price in self.prices.items() if price is None)

    def notice(self) -> str | None:
        """What to tell the user once, at run start, about endpoints with no price."""
        missing = self.unpriced()
        if not missing:
            return None
        names = ", ".join(repr(n) for n in missing)
        return (f"no price known for endpoint(s) {names}: their calls are recorded with no "
                f"cost (the job spec gives no `prices:`, and genai-prices lists no hosted API "
                f"at their base_url with that model); add `prices:` to cost them")


def _base_rate(value: Any) -> Decimal | None:
    """A genai-prices price as one number: a tiered price at its base rate."""
    if isinstance(value, Decimal):
        return value
    base = getattr(value, "base", None)  # TieredPrices
    return base if isinstance(base, Decimal) else None


def listed_price(endpoint: Endpoint, *, at: datetime | None = None) -> EndpointPrice | None:
    """genai-prices' price for a hosted endpoint's model at `at` (default: now); None when the
    endpoint is not a hosted API the list knows, or the list has no token prices for the model."""
    if endpoint.base_url in EMBEDDED:
        return None
    from genai_prices import Usage, calc_price  # its data loads on first use (~0.3 s)

    try:
        found = calc_price(Usage(input_tokens=0, output_tokens=0), endpoint.model,
                           provider_api_url=endpoint.base_url,
                           genai_request_timestamp=at or datetime.now(UTC))
    except LookupError:
        return None
    listed = found.model_price
    input_rate = _base_rate(getattr(listed, "input_mtok", None))
    output_rate = _base_rate(getattr(listed, "output_mtok", None))
    if input_rate is None or output_rate is None:
        return None
    return EndpointPrice(
        input_per_mtok=input_rate, output_per_mtok=output_rate,
        cached_input_per_mtok=_base_rate(getattr(listed, "cache_read_mtok", None)),
        source=PriceSource.GENAI_PRICES,
        origin=f"genai-prices: {found.provider.id} {found.model.id}")


def endpoint_price(endpoint: Endpoint, *, at: datetime | None = None) -> EndpointPrice | None:
    """The endpoint's prices: the job spec's, else genai-prices' for a hosted API, else None."""
    given = endpoint.prices
    if given is not None:
        return EndpointPrice(input_per_mtok=given.input_per_mtok,
                             cached_input_per_mtok=given.cached_input_per_mtok,
                             output_per_mtok=given.output_per_mtok,
                             source=PriceSource.JOB_SPEC, origin="job spec")
    return listed_price(endpoint, at=at)


def resolve_prices(endpoints: Iterable[Endpoint], *, at: datetime | None = None) -> PriceBook:
    """Every endpoint's prices, looked up once (a run does this at its start)."""
    return PriceBook(prices={ep.name: endpoint_price(ep, at=at) for ep in endpoints})
