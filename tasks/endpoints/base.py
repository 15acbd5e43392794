"""What a streaming endpoint is to the rest of the engine: the request of one call, the deltas
it yields and what it cost, and the `StreamingEndpoint` protocol that the pool routes over.

A new kind of endpoint is one module with a class implementing `StreamingEndpoint`;
`EndpointClient` (tasks/endpoints/client.py) is the OpenAI-compatible one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from foldem.core.tokens import count_tokens
from foldem.spec.endpoints import Endpoint
from tasks.records.models import CountSource

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to stream, endpoint-neutral: the model is the one of the endpoint
    that takes the call (a pool may route one request to endpoints serving different models).
    Not slotted, so that `prompt_tokens_estimate` is computed at most once."""

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float
    top_p: float = 1.0
    seed: int | None = None
    #: Not sent: what the call is likely to cost, sizing a tokens-per-minute reservation
    #: (max_tokens when not given).
    expected_tokens: int | None = None
    #: Ask for the k most likely logprobs of every token (a confidence validator reads them);
    #: None: not asked, so endpoints that cannot send them still serve every other stage.
    top_logprobs: int | None = None

    def sampling(self) -> dict[str, Any]:
        """The sampling options of the request body."""
        options: dict[str, Any] = {"max_tokens": self.max_tokens,
                                   "temperature": self.temperature, "top_p": self.top_p}
        if self.seed is not None:
            options["seed"] = self.seed
        if self.top_logprobs is not None:
            options["logprobs"] = True
            options["top_logprobs"] = self.top_logprobs
        return options

    @cached_property
    def prompt_tokens_estimate(self) -> int:
        """The prompt's tokens by the local tokenizer, for an endpoint that reports none."""
        return sum(count_tokens(m["content"]) for m in self.messages)


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    tokens: int  # tokens this chunk added (server usage where reported, else a tokenizer count)
    #: The confidence of each token of the chunk (minus the mean of its top logprobs), when the
    #: request asked for logprobs and the endpoint sent them; empty otherwise.
    confidences: tuple[float, ...] = ()


@dataclass(slots=True)
class CallStats:
    """What one call cost; becomes a ledger row."""

    prompt_tokens: int | None = None
    #: Of the prompt's tokens, those the server served from its prompt cache, when it said.
    cached_prompt_tokens: int | None = None
    completion_tokens: int = 0
    count_source: CountSource = CountSource.TOKENIZER_ESTIMATE
    finish_reason: str | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    attempts: int = 0
    response_id: str | None = None
    served_model: str | None = None  # the chunks' `model`: who generated the text
    aborted: bool = False
    error: str | None = None
    #: Some attempt of the call reached the server (it answered, or took the request and then
    #: failed). False: every attempt failed to connect (refused, DNS, connect timeout), so no
    #: prompt was processed and the prompt costs nothing (prompt_tokens stays None).
    reached_server: bool = False
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class EndpointCall(Protocol):
    """One streaming call in progress: iterate it for deltas; `stats` fills in as it goes."""

    stats: CallStats

    def __aiter__(self) -> AsyncIterator[Delta]: ...


class StreamingEndpoint(Protocol):
    """An endpoint the pool can send calls to."""

    @property
    def endpoint(self) -> Endpoint: ...

    def stream(self, request: ChatRequest, *, stats: CallStats | None = None,
               max_retries: int | None = None) -> AbstractAsyncContextManager[EndpointCall]:
        """Open a stream; leaving the block closes it at once. `stats` (filled in as the call
        goes, even when it fails) is settled on exit. `max_retries` overrides the endpoint's
        own (a pool sets 0 while it can still move the call elsewhere). Raises EndpointError."""
        ...

    async def preflight(self) -> None:
        """Fail fast (EndpointError), before any sample, when the endpoint cannot serve."""
        ...

    async def aclose(self) -> None: ...
