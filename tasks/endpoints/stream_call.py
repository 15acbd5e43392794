"""One streaming call in progress (`StreamCall`, an `EndpointCall` of tasks/endpoints/base.py):
the deltas it yields, what it cost (its `CallStats`), and how it hangs up, half-closing the
socket and counting what the server sent before it learned of the hang-up. `parse_sse` reads the
chat-completion chunks of an SSE body.

`EndpointClient.stream` (tasks/endpoints/client.py) opens the call, with retries, and closes it;
this module is the part that runs once the first token has arrived.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
from pydantic import ValidationError

from foldem.core.chat_stream import ChunkReading, read_chunk
from foldem.core.errors import EndpointError
from foldem.core.tokens import count_tokens
from tasks.endpoints.base import CallStats, Delta
from tasks.records.models import CountSource


class StreamCall:
    """One streaming call in progress. Iterate for deltas; `stats` fills in as it goes."""

    def __init__(self, chunks: AsyncIterator[ChunkReading], first: ChunkReading | None,
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
        self._server_predicted: int | None = None  # llama.cpp's timings.predicted_n
        self._timings_prompt: int | None = None  # llama.cpp's timings prompt_n + cache_n
        self._timings_cached: int | None = None  # llama.cpp's timings cache_n
        self.saw_timings = False  # the server is llama.cpp
        self._ended = False  # the body ended ([DONE] or its end): nothing left to drain

    async def _next(self, timeout: float) -> ChunkReading | None:
        try:
            return await asyncio.wait_for(self._chunks.__anext__(), timeout)
        except StopAsyncIteration:
            return None

    async def __aiter__(self) -> AsyncIterator[Delta]:
        chunk = self._pending_first
        self._pending_first = None
        # One idle timer for the whole stream, not `wait_for` per chunk: that made a task, a
        # timer and callbacks for every token, and was most of the client's CPU time
        # (`foldem bench client`: 133 → 54 CPU seconds per million tokens).
        watchdog = _IdleWatchdog(self._idle)
        try:
            while chunk is not None:
                delta = self._consume(chunk)
                if delta is not None:
                    yield delta
                try:
                    watchdog.waiting_since(watchdog.loop.time())
                    chunk = await anext(self._chunks, None)
                    watchdog.waiting = False
                    self._ended = chunk is None
                except asyncio.CancelledError:
                    if not watchdog.fired():
                        raise
                    raise EndpointError(self._endpoint, f"no chunk for {self._idle:.0f}s "
                                        "(idle timeout) after the stream started") from None
                # The SDK (3.x) runs on httpx2, whose errors do not derive from httpx's: a
                # connection dropped mid-stream raises httpx2.RemoteProtocolError unwrapped.
                except (openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError,
                        OSError) as exc:  # dropped mid-stream
                    raise EndpointError(self._endpoint, f"stream broke after it started: "
                                        f"{type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()

    def _consume(self, chunk: ChunkReading) -> Delta | None:
        st = self.stats
        st.response_id = st.response_id or chunk.id
        if st.served_model is None and chunk.model:
            st.served_model = chunk.model
        added_by_server: int | None = None
        if chunk.completion_tokens is not None:
            previous = self._server_completion or 0
            self._server_completion = chunk.completion_tokens
            added_by_server = chunk.completion_tokens - previous
            st.prompt_tokens = chunk.prompt_tokens
            st.cached_prompt_tokens = chunk.cached_tokens
        if chunk.has_timings:
            added_by_timings = self._read_timings(chunk)
            if added_by_server is None:
                added_by_server = added_by_timings
        if chunk.finish_reason:
            st.finish_reason = chunk.finish_reason
        text = chunk.text
        if not text:
            return None
        if st.ttft_ms is None:
            st.ttft_ms = (time.perf_counter() - self._t0) * 1000
        st.text_parts.append(text)
        tokens = added_by_server if added_by_server is not None else max(1, count_tokens(text))
        return Delta(text, tokens, chunk.confidences)

    def _read_timings(self, chunk: ChunkReading) -> int | None:
        """llama.cpp's own counts (the chunk carries its `timings`): the tokens this chunk
        added (its running `predicted_n` moved on by one per content chunk; a UTF-8 character
        split across tokens arrives as one chunk that added two)."""
        self.saw_timings = True
        if chunk.prompt_n is not None:
            self._timings_prompt = chunk.prompt_n + (chunk.cache_n or 0)
            self._timings_cached = chunk.cache_n
        if chunk.predicted_n is None:
            return None
        previous = self._server_predicted or 0
        self._server_predicted = chunk.predicted_n
        return chunk.predicted_n - previous

    def _half_close(self) -> bool:
        """Send our FIN while still reading: the server learns of the hang-up at once and stops
        (uvicorn-based servers — vLLM, SGLang, the replay — treat EOF as a disconnect), and
        every chunk it wrote before that still reaches us to be counted.

        Plain http only: that is how self-hosted servers are reached. Over https a hosted API's
        edge proxy may keep a half-open connection streaming (it can still write to us) where a
        full close would make it cancel the generation, so there we close as before."""
        try:
            if self._response.http_response.url.scheme != "http":
                return False
            stream = self._response.http_response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is None:
                return False
            try:
                sock.shutdown(socket.SHUT_WR)
            except TypeError:  # uvloop hands out a socket-like view without shutdown()
                with socket.socket(fileno=os.dup(sock.fileno())) as dup:
                    dup.shutdown(socket.SHUT_WR)  # on the connection, whichever fd says it
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
        for `quiet` seconds (what is buffered parses at once), at most `cap` seconds in all.
        A stream that ended on its own has nothing left: no hang-up, its connection is reused
        (half-closing it made every call open a new one)."""
        if self._ended:  # nothing left to count: no hang-up, the connection is reused
            return
        half_closed = self._half_close()
        if half_closed:  # one deadline for the whole read, not a timer per chunk
            try:
                async with asyncio.timeout(cap_half_closed):
                    async for streamed in self._chunks:
                        self._consume(streamed)
            except Exception:  # noqa: BLE001 - the cap, or broken: we are hanging up anyway
                return
            return
        deadline = time.perf_counter() + cap
        while (left := deadline - time.perf_counter()) > 0:
            try:
                chunk = await self._next(min(quiet, left))
            except Exception:  # noqa: BLE001 - quiet, or broken: we are hanging up anyway
                return
            if chunk is None:
                return
            self._consume(chunk)

    def finalize(self) -> CallStats:
        """Settle the completion count: server usage where it was reported; else llama.cpp's
        running count of the tokens it sent (a stream cut short gets no usage there); else an
        estimate (the prompt's count is settled by the client, for failed calls too). Tokens a
        server decoded after it learned of the hang-up never reach the wire and are not here
        (`foldem probe` measures them: `server_tokens_after_close`)."""
        st = self.stats
        st.duration_ms = (time.perf_counter() - self._t0) * 1000
        if self._server_completion is not None:
            st.completion_tokens = self._server_completion
            st.count_source = CountSource.SERVER_USAGE
        elif self._server_predicted is not None:
            st.completion_tokens = self._server_predicted
            st.count_source = CountSource.SERVER_TIMINGS
            if st.prompt_tokens is None:
                st.prompt_tokens = self._timings_prompt
                st.cached_prompt_tokens = self._timings_cached
        else:
            st.completion_tokens = count_tokens(st.text)
            st.count_source = CountSource.TOKENIZER_ESTIMATE
        return st

    async def close(self) -> None:
        await self._response.close()


async def parse_sse(response: Any, endpoint: str) -> AsyncIterator[ChunkReading]:
    """Chat-completion chunks from an SSE body; `[DONE]` ends it; an error event raises.

    Reads the body's bytes and splits the lines itself: the SDK's `iter_lines` decodes every
    chunk to text through two more generator layers (4% of the client's CPU time), and the
    JSON parser takes bytes anyway. Lines end in LF, CRLF or CR, as SSE allows."""
    parts: list[bytes] = []  # an unfinished line, as the pieces it came in (joined once)
    async for piece in response.http_response.aiter_bytes():
        if b"\n" not in piece and b"\r" not in piece:
            parts.append(piece)
            continue
        buf = b"".join((*parts, piece)) if parts else piece
        split_cr = False
        if b"\r" in buf:  # CRLF or a lone CR ends a line too
            split_cr = buf.endswith(b"\r")  # maybe half a CRLF: the next piece tells
            if split_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        tail = lines.pop() + b"\r" if split_cr else lines.pop()
        parts = [tail] if tail else []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (":"), event names
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            yield _chunk(data, endpoint)
    pending = b"".join(parts)
    if pending.startswith(b"data:") and (data := pending[5:].strip()) != b"[DONE]":
        yield _chunk(data, endpoint)  # the body ended without a final line break


def _chunk(data: bytes, endpoint: str) -> ChunkReading:
    try:
        chunk = read_chunk(data)
    except ValidationError:
        text = data[:200].decode("utf-8", errors="replace")
        raise EndpointError(endpoint, f"malformed stream event: {text!r}") from None
    if chunk.error is not None:
        raise EndpointError(endpoint, f"error event in the stream: {chunk.error}")
    return chunk


class _IdleWatchdog:
    """Cancels the reading task once a wait for the next chunk has lasted `idle` seconds. Its
    one timer is re-armed only when it fires early (chunks came meanwhile), so a chunk costs
    an assignment, not a timer."""

    def __init__(self, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.idle = idle
        self.since = self.loop.time()
        self.waiting = False
        self.expired = False
        self.handle = self.loop.call_at(self.since + idle, self._check)

    def waiting_since(self, now: float) -> None:
        self.since, self.waiting = now, True

    def _check(self) -> None:
        now = self.loop.time()
        if self.waiting and now - self.since >= self.idle and self.task is not None:
            self.expired = True
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(
                (self.since if self.waiting else now) + self.idle, self._check)

    def fired(self) -> bool:
        """The cancel came from this watchdog (taken back, to be raised as a timeout)."""
        if not self.expired or self.task is None:
            return False
        self.task.uncancel()
        return True

    def cancel(self) -> None:
        self.handle.cancel()
