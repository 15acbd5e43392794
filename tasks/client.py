"""Streaming chat completions from an OpenAI-compatible endpoint, with explicit abort.

`EndpointClient.stream(...)` is an async context manager yielding a `StreamCall`: iterate it for
`Delta`s; leave the block (or call `abort`) to close the HTTP stream at once. STACK.md: a bare
`break` does not close the connection, so closing is always explicit here.

Retries: 429, 5xx, connection errors and a missing first token are retried with backoff, but only
before the first token (after that a retry would pay for the same tokens twice and change the
sample). The per-endpoint semaphore bounds concurrent streams in this process; an optional
`EndpointLimiter` (tasks/limits.py) adds the limits shared across processes. Usage:
`include_usage` always, and `continuous_usage_stats` when the endpoint accepts it (auto-detected
once per endpoint).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import openai
from pydantic import SecretStr, ValidationError

from foldem.errors import (
    ConfigError,
    EndpointAuthError,
    EndpointError,
    EndpointUnreachableError,
)
from foldem.jobspec import Endpoint
from foldem.tokens import count_tokens
from tasks.protocol import StreamChunk

if TYPE_CHECKING:
    from tasks.limits import EndpointLimiter


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    tokens: int  # tokens this chunk added (server usage where reported, else a tokenizer count)


@dataclass(slots=True)
class CallStats:
    """What one call cost; becomes a ledger row."""

    prompt_tokens: int | None = None
    completion_tokens: int = 0
    count_source: str = "tokenizer_estimate"
    finish_reason: str | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    attempts: int = 0
    response_id: str | None = None
    aborted: bool = False
    error: str | None = None
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def resolve_api_key(endpoint: Endpoint) -> SecretStr:
    """The endpoint's key: from the Prefect Secret block named by `api_key_secret_block`, else
    from the environment variable named by `api_key_env`; local servers need none. The key only
    ever travels as a SecretStr."""
    if endpoint.api_key_secret_block:
        from tasks.secret_blocks import key_from_secret_block  # Prefect only when named

        return key_from_secret_block(endpoint.name, endpoint.api_key_secret_block)
    if endpoint.api_key_env is None:
        return SecretStr("EMPTY")
    value = os.environ.get(endpoint.api_key_env)
    if not value:
        raise ConfigError(
            f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set "
            f"(named by api_key_env in the job spec); export it or remove api_key_env")
    return SecretStr(value)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return min(float(raw), 60.0) if raw else None
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random() / 2))


class StreamCall:
    """One streaming call in progress. Iterate for deltas; `stats` fills in as it goes."""

    def __init__(self, chunks: AsyncIterator[StreamChunk], first: StreamChunk | None,
                 response: Any, stats: CallStats, t0: float, idle_timeout: float,
                 endpoint: str) -> None:
        self._endpoint = endpoint
        self._chunks = chunks
        self._response = response
        self._pending_first = first
        self.stats = stats
        self._t0 = t0
        self._idle = idle_timeout
        self._server_completion: int | None = None

    async def _next(self, timeout: float) -> StreamChunk | None:
        try:
            return await asyncio.wait_for(self._chunks.__anext__(), timeout)
        except StopAsyncIteration:
            return None

    async def __aiter__(self) -> AsyncIterator[Delta]:
        chunk = self._pending_first
        self._pending_first = None
        while chunk is not None:
            delta = self._consume(chunk)
            if delta is not None:
                yield delta
            try:
                chunk = await self._next(self._idle)
            except TimeoutError:
                raise EndpointError(self._endpoint, f"no chunk for {self._idle:.0f}s "
                                    "(idle timeout) after the stream started") from None
            # The SDK (3.x) runs on httpx2, whose errors do not derive from httpx's: a
            # connection dropped mid-stream raises httpx2.RemoteProtocolError unwrapped.
            except (openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError,
                    OSError) as exc:  # dropped mid-stream
                raise EndpointError(self._endpoint, f"stream broke after it started: "
                                    f"{type(exc).__name__}: {exc}") from None

    def _consume(self, chunk: StreamChunk) -> Delta | None:
        st = self.stats
        st.response_id = st.response_id or chunk.id
        usage = chunk.usage
        added_by_server: int | None = None
        if usage is not None and usage.completion_tokens is not None:
            previous = self._server_completion or 0
            self._server_completion = usage.completion_tokens
            added_by_server = usage.completion_tokens - previous
            st.prompt_tokens = usage.prompt_tokens
        text = ""
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                st.finish_reason = choice.finish_reason
        if not text:
            return None
        if st.ttft_ms is None:
            st.ttft_ms = (time.perf_counter() - self._t0) * 1000
        st.text_parts.append(text)
        tokens = added_by_server if added_by_server is not None else max(1, count_tokens(text))
        return Delta(text, tokens)

    def _half_close(self) -> bool:
        """Send our FIN while still reading: the server learns of the hang-up at once and stops
        (uvicorn-based servers — vLLM, SGLang, the replay — treat EOF as a disconnect), and
        every chunk it wrote before that still reaches us to be counted."""
        try:
            stream = self._response.http_response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is None:
                return False
            sock.shutdown(socket.SHUT_WR)
            return True
        except (AttributeError, OSError):
            return False

    async def drain(self, quiet: float = 0.002, cap: float = 0.05,
                    cap_half_closed: float = 30.0) -> None:
        """Count what the server sent before it learned we hang up: those chunks are delivered
        and paid for (many, when this process lagged behind), so they belong in the ledger.
        After a half-close the server stops and closes its side: read to that end, for at most
        `cap_half_closed` seconds (only a server that ignores hang-ups takes that long, and it
        generates on, paid for, either way). Otherwise read until the stream has been quiet
        for `quiet` seconds (what is buffered parses at once), at most `cap` seconds in all."""
        half_closed = self._half_close()
        deadline = time.perf_counter() + (cap_half_closed if half_closed else cap)
        while (left := deadline - time.perf_counter()) > 0:
            try:
                chunk = await self._next(left if half_closed else min(quiet, left))
            except Exception:  # noqa: BLE001 - quiet, or broken: we are hanging up anyway
                return
            if chunk is None:
                return
            self._consume(chunk)

    def finalize(self, prompt_messages: list[dict[str, str]]) -> CallStats:
        """Settle the token counts: server usage where it was reported, else an estimate."""
        st = self.stats
        st.duration_ms = (time.perf_counter() - self._t0) * 1000
        if self._server_completion is not None:
            st.completion_tokens = self._server_completion
            st.count_source = "server_usage"
        else:
            st.completion_tokens = count_tokens(st.text)
            st.count_source = "tokenizer_estimate"
        if st.prompt_tokens is None:
            st.prompt_tokens = sum(count_tokens(m["content"]) for m in prompt_messages)
        return st

    async def close(self) -> None:
        await self._response.close()


async def parse_sse(response: Any, endpoint: str) -> AsyncIterator[StreamChunk]:
    """Chat-completion chunks from an SSE body; `[DONE]` ends it; an error event raises."""
    async for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (":"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = StreamChunk.model_validate_json(data)
        except ValidationError:
            raise EndpointError(endpoint, f"malformed stream event: {data[:200]!r}") from None
        if chunk.error is not None:
            raise EndpointError(endpoint, f"error event in the stream: {chunk.error.message}")
        yield chunk


class EndpointClient:
    """One configured endpoint: an AsyncOpenAI client plus the per-endpoint stream limit,
    and the cross-process limits when `limiter` is given."""

    def __init__(self, endpoint: Endpoint, *, base_url: str, api_key: SecretStr,
                 limiter: EndpointLimiter | None = None) -> None:
        self.endpoint = endpoint
        self.base_url = base_url
        self.limiter = limiter
        t = endpoint.timeouts
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key.get_secret_value(), max_retries=0,
            timeout=openai.Timeout(connect=t.connect, read=t.idle, write=t.idle, pool=t.total))
        self._limit = asyncio.Semaphore(endpoint.max_concurrent_streams)
        self._continuous: bool | None = {"on": True, "off": False}.get(endpoint.continuous_usage)
        self.active_streams = 0

    async def aclose(self) -> None:
        await self._client.close()

    async def preflight(self) -> None:
        """Fail fast, before any sample, when nothing answers or the key is refused."""
        try:
            await asyncio.wait_for(self._client.models.list(), self.endpoint.timeouts.connect + 5)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            source = self.endpoint.api_key_env or self.endpoint.api_key_secret_block
            raise EndpointAuthError(self.endpoint.name, f"the API key was refused "
                                    f"(HTTP {exc.status_code}); check {source}",
                                    status=exc.status_code) from None
        except (TimeoutError, openai.APIConnectionError) as exc:
            raise EndpointUnreachableError(
                self.endpoint.name, f"cannot connect to {self.base_url} ({type(exc).__name__}: "
                f"{exc}); is the server running? check base_url in the job spec") from None
        except openai.APIStatusError:
            pass  # some servers lack /models; a status answer proves the server is there

    def _request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {"include_usage": True}  # usage in the last chunk
        if self._continuous is not False:
            options["continuous_usage_stats"] = True
        return dict(model=self.endpoint.model, messages=messages, stream=True,
                    stream_options=options, **params)

    async def _open(self, messages: list[dict[str, str]], params: dict[str, Any],
                    stats: CallStats, max_retries: int
                    ) -> tuple[Any, AsyncIterator[StreamChunk], StreamChunk | None, float]:
        """Open the stream and wait for its first chunk, retrying where that is safe."""
        ep = self.endpoint
        attempt = 0
        while True:
            stats.attempts += 1
            t0 = time.perf_counter()
            response = None
            try:
                response = await self._client.chat.completions.with_streaming_response.create(
                    **self._request(messages, params)).__aenter__()
                chunks = parse_sse(response, ep.name)
                first = await asyncio.wait_for(anext(chunks, None), ep.timeouts.first_token)
                if self._continuous is None:
                    self._continuous = True
                return response, chunks, first, t0
            except openai.BadRequestError as exc:
                if self._continuous is None and "continuous_usage_stats" in str(exc):
                    self._continuous = False  # endpoint refuses the vLLM option: fall back
                    stats.attempts -= 1
                    continue
                raise EndpointError(ep.name, f"request refused: {exc.message}",
                                    status=400) from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise EndpointAuthError(ep.name, f"API key refused (HTTP {exc.status_code})",
                                        status=exc.status_code) from None
            except openai.APIStatusError as exc:
                retryable = exc.status_code == 429 or exc.status_code >= 500
                if not retryable or attempt >= max_retries:
                    raise EndpointError(ep.name, f"HTTP {exc.status_code}: {exc.message}",
                                        status=exc.status_code, retryable=retryable) from None
                delay = _retry_after(exc) or _backoff(attempt)
            except (TimeoutError, openai.APIConnectionError, httpx.HTTPError, httpx2.HTTPError,
                    OSError, EndpointError) as exc:
                if response is not None:
                    await response.close()
                if attempt >= max_retries:
                    what = (f"no first token within {ep.timeouts.first_token:.0f}s"
                            if isinstance(exc, asyncio.TimeoutError)
                            else f"{type(exc).__name__}: {exc}")
                    raise EndpointError(ep.name, what, retryable=True) from None
                delay = _backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _held(self, messages: list[dict[str, str]], max_tokens: int,
              expected_tokens: int | None) -> AbstractAsyncContextManager[None]:
        """The cross-process slots of one call (nothing, and no API call, without limits)."""
        if self.limiter is None:
            return nullcontext()
        tokens = 0
        if self.limiter.counts_tokens:  # what the call is likely to cost (docs/ENDPOINTS.md)
            tokens = (sum(count_tokens(m["content"]) for m in messages)
                      + (expected_tokens or max_tokens))
        return self.limiter.hold(tokens)

    @asynccontextmanager
    async def stream(self, messages: list[dict[str, str]], *, max_tokens: int,
                     temperature: float, top_p: float = 1.0, seed: int | None = None,
                     stats: CallStats | None = None, max_retries: int | None = None,
                     expected_tokens: int | None = None) -> AsyncIterator[StreamCall]:
        """Open a stream; leaving the block closes it. `stats` (filled in as the call goes,
        even when it fails) is settled on exit: server usage where reported, else an estimate.
        `max_retries` overrides the endpoint's (a pool sets 0 while it can move the call);
        `expected_tokens` sizes the tokens-per-minute reservation (else max_tokens)."""
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature,
                                  "top_p": top_p}
        if seed is not None:
            params["seed"] = seed
        stats = stats if stats is not None else CallStats()
        retries = self.endpoint.max_retries if max_retries is None else max_retries
        # Local slot first, so at most max_concurrent_streams calls of this process wait on the
        # Prefect API; waiting for a slot is not the endpoint's fault: outside the total timeout.
        async with self._limit, self._held(messages, max_tokens, expected_tokens):
            self.active_streams += 1
            try:
                async with asyncio.timeout(self.endpoint.timeouts.total):
                    response, chunks, first, t0 = await self._open(messages, params, stats,
                                                                   retries)
                    call = StreamCall(chunks, first, response, stats, t0,
                                      self.endpoint.timeouts.idle, self.endpoint.name)
                    try:
                        yield call
                        await call.drain()
                    finally:
                        await call.close()  # explicit: the server must see the hang-up now
                        call.finalize(messages)
            except TimeoutError:
                raise EndpointError(self.endpoint.name, f"call exceeded the total timeout of "
                                    f"{self.endpoint.timeouts.total:.0f}s") from None
            finally:
                self.active_streams -= 1
                if stats.prompt_tokens is None:
                    stats.prompt_tokens = sum(count_tokens(m["content"]) for m in messages)
