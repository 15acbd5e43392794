"""Streaming chat completions from an OpenAI-compatible endpoint, with explicit abort.

`EndpointClient` is the `StreamingEndpoint` (tasks/endpoints/base.py) of OpenAI-compatible
servers. `EndpointClient.stream(request)` is an async context manager yielding a `StreamCall`
(tasks/endpoints/stream_call.py): iterate it for `Delta`s; leave the block (or call `abort`) to
close the HTTP stream at once. With the OpenAI SDK a bare `break` out of the loop does not close
the connection (the server keeps generating until the client is closed), so closing is always
explicit here.

Retries: 429, 5xx, connection errors and a missing first token are retried with backoff, but only
before the first token (after that a retry would pay for the same tokens twice and change the
sample). The per-endpoint semaphore bounds concurrent streams in this process; an optional
`EndpointLimiter` (tasks/endpoints/limits.py) adds the limits shared across processes. Usage:
`include_usage` always, and `continuous_usage_stats` when the endpoint accepts it (auto-detected
once per endpoint); llama.cpp's `timings_per_token` on an endpoint known to be llama.cpp (its
`server`, `base_url: local`, or a stream seen carrying its `timings`). The endpoint's
`extra_body` goes in every request.

A call whose requests never reached the server (refused, DNS, connect timeout) keeps
`prompt_tokens` None: no prompt was processed. Cancelled (Ctrl-C), a stream hangs up as an
abort does and counts what the server had sent.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import openai
from pydantic import SecretStr

from foldem.core.chat_stream import ChunkReading
from foldem.core.errors import (
    ConfigError,
    EndpointAuthError,
    EndpointError,
    EndpointUnreachableError,
)
from foldem.core.settings import get_settings
from foldem.spec.endpoints import LOCAL, Endpoint
from tasks.endpoints.base import CallStats, ChatRequest
from tasks.endpoints.plain_http import PlainHttpTransport
from tasks.endpoints.stream_call import (
    StreamCall,
    parse_sse,
)

if TYPE_CHECKING:
    from tasks.endpoints.limits import EndpointLimiter


def resolve_api_key(endpoint: Endpoint) -> SecretStr:
    """The endpoint's key: from the Prefect Secret block named by `api_key_secret_block`, else
    from the environment variable named by `api_key_env`; local servers need none. The key only
    ever travels as a SecretStr."""
    if endpoint.api_key_secret_block:
        from tasks.endpoints.secret_blocks import key_from_secret_block  # Prefect only when named

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


#: Errors raised before a request could be written: nothing reached the server.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx2.ConnectError,
    httpx2.ConnectTimeout, httpx2.PoolTimeout, ConnectionRefusedError, socket.gaierror)


def never_sent(exc: BaseException) -> bool:
    """The error (or what it wraps: the SDK wraps the transport's) says the connection was
    never made, so the request did not reach the server."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain; bounded against cycles
        if seen is None:
            return False
        if isinstance(seen, _CONNECT_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _backoff(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random() / 2))


def _http_client(base_url: str) -> httpx2.AsyncClient | None:
    """foldem's lean transport for a plain-http endpoint when the settings ask for it
    (`FOLDEM_LEAN_HTTP`); None: the SDK's own client."""
    if not (get_settings().lean_http and base_url.startswith("http://")):
        return None
    return openai.DefaultAsyncHttpxClient(transport=PlainHttpTransport())


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
            timeout=openai.Timeout(connect=t.connect, read=t.idle, write=t.idle, pool=t.total),
            http_client=_http_client(base_url))
        self._limit = asyncio.Semaphore(endpoint.max_concurrent_streams)
        self._continuous: bool | None = {"on": True, "off": False}.get(endpoint.continuous_usage)
        #: Ask llama.cpp for its token count in every chunk (None: not known to be llama.cpp
        #: yet; a stream carrying its `timings` tells, see StreamCall.saw_timings).
        self._timings: bool | None = (
            True if endpoint.server == "llama.cpp"
            or (endpoint.server == "auto" and endpoint.base_url == LOCAL)
            else None if endpoint.server == "auto" else False)
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

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        """The request's keyword arguments. The endpoint's `extra_body` (job spec; e.g.
        llama.cpp's `grammar`, which makes a judge's reply always parseable) goes in the SDK's
        `extra_body`, which merges it into the JSON sent; the spec refused fields foldem sets."""
        options: dict[str, Any] = {"include_usage": True}  # usage in the last chunk
        if self._continuous is not False:
            options["continuous_usage_stats"] = True
        body: dict[str, Any] = dict(model=self.endpoint.model, messages=list(request.messages),
                                    stream=True, stream_options=options, **request.sampling())
        extra = copy.deepcopy(self.endpoint.extra_body)
        if self._timings:  # llama.cpp: its token count in every chunk (a job's own value wins)
            extra.setdefault("timings_per_token", True)
        if extra:
            body["extra_body"] = extra
        return body

    async def _open(self, request: ChatRequest, stats: CallStats, max_retries: int
                    ) -> tuple[Any, AsyncIterator[ChunkReading], ChunkReading | None, float]:
        """Open the stream and wait for its first chunk, retrying where that is safe."""
        ep = self.endpoint
        attempt = 0
        while True:
            stats.attempts += 1
            t0 = time.perf_counter()
            response = None
            try:
                response = await self._client.chat.completions.with_streaming_response.create(
                    **self._body(request)).__aenter__()
                stats.reached_server = True
                chunks = parse_sse(response, ep.name)
                first = await asyncio.wait_for(anext(chunks, None), ep.timeouts.first_token)
                if self._continuous is None:
                    self._continuous = True
                return response, chunks, first, t0
            except openai.BadRequestError as exc:
                stats.reached_server = True
                if self._continuous is None and "continuous_usage_stats" in str(exc):
                    self._continuous = False  # endpoint refuses the vLLM option: fall back
                    stats.attempts -= 1
                    continue
                raise EndpointError(ep.name, f"request refused: {exc.message}",
                                    status=400) from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                stats.reached_server = True
                raise EndpointAuthError(ep.name, f"API key refused (HTTP {exc.status_code})",
                                        status=exc.status_code) from None
            except openai.APIStatusError as exc:
                stats.reached_server = True
                retryable = exc.status_code == 429 or exc.status_code >= 500
                if not retryable or attempt >= max_retries:
                    raise EndpointError(ep.name, f"HTTP {exc.status_code}: {exc.message}",
                                        status=exc.status_code, retryable=retryable) from None
                delay = _retry_after(exc) or _backoff(attempt)
            except asyncio.CancelledError:
                if response is not None:  # waiting for the first token: hang up now
                    await response.close()
                raise
            except (TimeoutError, openai.APIConnectionError, httpx.HTTPError, httpx2.HTTPError,
                    OSError, EndpointError) as exc:
                if response is not None:
                    await response.close()
                stats.reached_server |= not never_sent(exc)
                if attempt >= max_retries:
                    what = (f"no first token within {ep.timeouts.first_token:.0f}s"
                            if isinstance(exc, asyncio.TimeoutError)
                            else f"{type(exc).__name__}: {exc}")
                    if not stats.reached_server:
                        what = f"never reached the server, {stats.attempts} attempts ({what})"
                    raise EndpointError(ep.name, what, retryable=True) from None
                delay = _backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _held(self, request: ChatRequest) -> AbstractAsyncContextManager[None]:
        """The cross-process slots of one call (nothing, and no API call, without limits)."""
        if self.limiter is None:
            return nullcontext()
        tokens = 0
        if self.limiter.counts_tokens:  # what the call is likely to cost (docs/ENDPOINTS.md)
            tokens = (request.prompt_tokens_estimate
                      + (request.expected_tokens or request.max_tokens))
        return self.limiter.hold(tokens)

    @asynccontextmanager
    async def stream(self, request: ChatRequest, *, stats: CallStats | None = None,
                     max_retries: int | None = None) -> AsyncIterator[StreamCall]:
        """Open a stream; leaving the block closes it. `stats` (filled in as the call goes,
        even when it fails) is settled on exit: server usage where reported, else an estimate.
        `max_retries` overrides the endpoint's (a pool sets 0 while it can move the call);
        the request's `expected_tokens` sizes the tokens-per-minute reservation."""
        stats = stats if stats is not None else CallStats()
        retries = self.endpoint.max_retries if max_retries is None else max_retries
        # Local slot first, so at most max_concurrent_streams calls of this process wait on the
        # Prefect API; waiting for a slot is not the endpoint's fault: outside the total timeout.
        async with self._limit, self._held(request):
            self.active_streams += 1
            try:
                async with asyncio.timeout(self.endpoint.timeouts.total):
                    response, chunks, first, t0 = await self._open(request, stats, retries)
                    call = StreamCall(chunks, first, response, stats, t0,
                                      self.endpoint.timeouts.idle, self.endpoint.name)
                    try:
                        yield call
                        await call.drain()
                    except asyncio.CancelledError:
                        # Interrupted (Ctrl-C): hang up as for an abort and count what the
                        # server sent before it knew, so the interrupted row is what it cost.
                        await call.drain()
                        raise
                    finally:
                        await call.close()  # explicit: the server must see the hang-up now
                        call.finalize()
                        if call.saw_timings and self._timings is None:
                            self._timings = True  # llama.cpp: its count in every chunk from now
            except TimeoutError:
                raise EndpointError(self.endpoint.name, f"call exceeded the total timeout of "
                                    f"{self.endpoint.timeouts.total:.0f}s") from None
            finally:
                self.active_streams -= 1
                # The endpoint reported none: estimated, if the request reached it at all.
                if stats.prompt_tokens is None and stats.reached_server:
                    stats.prompt_tokens = request.prompt_tokens_estimate
