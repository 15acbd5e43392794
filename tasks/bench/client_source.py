"""A pre-rendered SSE source for `foldem bench client`: an OpenAI-compatible chat-completions
endpoint cheap enough that the client, not the source, is the limit.

The replay endpoint (foldem/replay) renders and paces every chunk through uvicorn and pydantic;
at tens of thousands of tokens a second it would use more CPU than the client it feeds. This
source renders each recording's whole response once at start-up — HTTP/1.1 chunked framing, one
SSE event per token chunk carrying cumulative usage (vLLM's `continuous_usage_stats`), the
finish chunk, the usage chunk, `[DONE]` — and answers a request by writing those bytes with only
the response id substituted (same length, so chunk offsets hold). Unpaced, a response is one
write; paced, a timer writes one chunk per 1/R seconds per stream.

It counts what it wrote per response, as the replay does: a client that half-closes its socket
(an abort) is seen at once (`eof_received`) and nothing is written after; what was written before
is flushed to the client, which counts it. `GET /stats` gives the counts in the replay's
`ReplayStats` shape, so the ledger is checked the same way (tasks/bench/replay_runs.py).

Requests are matched by exact prompt text (the last message's content) to a recorded problem;
`seed` picks the recording (candidates[seed % n]), else a per-problem rotation. Run it as its own
process: `python -m tasks.bench.client_source --traces FILE... [--tokens-per-second R]`; it
prints its port on stdout once it listens.

It stays one module: rendering, the HTTP protocol and the pacing timer share the offsets and
counts of one rendered response, and it runs as one small script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from foldem.core.chat_stream import ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage
from foldem.core.data import resolve_input_path
from foldem.core.tokens import count_tokens
from foldem.core.traces import Trace, load_traces, tokenize_chunks

_ID_WIDTH = 24  # hex digits after "chatcmpl-": every response id has the same length
_PLACEHOLDER = b"chatcmpl-" + b"X" * _ID_WIDTH
_MARK = "\ue000content\ue000"  # private-use characters: cannot occur in rendered JSON by chance
_COMPLETION_MARK, _TOTAL_MARK = 987654321, 987654322  # numbers no recording reaches


def _chunked(event: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    return b"%x\r\n" % len(event) + event + b"\r\n"


class Rendered:
    """One recording's response body, with the id as a placeholder: `body` and, per token chunk,
    its end offset in `body` and its token count (the role chunk before, the tail after)."""

    __slots__ = ("body", "ends", "tokens", "head_end", "total_tokens", "whole")

    def __init__(self, trace: Trace, model: str) -> None:
        chunks = tokenize_chunks(trace.text)
        prompt_tokens = count_tokens(trace.problem)
        created = int(time.time())
        pid = _PLACEHOLDER.decode()

        def event(chunk: ChatCompletionChunk) -> bytes:
            return _chunked(b"data: " + chunk.model_dump_json().encode() + b"\n\n")

        template = ChatCompletionChunk(
            id=pid, created=created, model=model,
            choices=[ChunkChoice(delta=ChunkDelta(content=_MARK))],
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=_COMPLETION_MARK,
                        total_tokens=_TOTAL_MARK)).model_dump_json()
        mark = json.dumps(_MARK, ensure_ascii=False)
        parts = [event(ChatCompletionChunk(
            id=pid, created=created, model=model,
            choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))],
            usage=Usage.of(prompt_tokens, 0)))]
        self.head_end = len(parts[0])
        ends: list[int] = []
        done = 0
        offset = self.head_end
        for text, tokens in zip(chunks.texts, chunks.tokens, strict=True):
            done += tokens
            rendered = (template.replace(mark, json.dumps(text, ensure_ascii=False))
                        .replace(str(_COMPLETION_MARK), str(done))
                        .replace(str(_TOTAL_MARK), str(prompt_tokens + done)))
            part = _chunked(b"data: " + rendered.encode() + b"\n\n")
            parts.append(part)
            offset += len(part)
            ends.append(offset)
        usage = Usage.of(prompt_tokens, done)
        parts.append(event(ChatCompletionChunk(id=pid, created=created, model=model,
                                               choices=[ChunkChoice(delta=ChunkDelta(),
                                                                    finish_reason="stop")],
                                               usage=usage)))
        parts.append(event(ChatCompletionChunk(id=pid, created=created, model=model,
                                               choices=[], usage=usage)))
        parts.append(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.body = b"".join(parts)
        self.ends = ends
        self.tokens = chunks.tokens
        self.total_tokens = done
        # Without `stream` (what some peers send): the whole completion as one JSON body.
        self.whole = json.dumps({
            "id": pid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": trace.text},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage.model_dump()}).encode()


class Library:
    """The recordings by prompt text, rendered."""

    def __init__(self, traces: list[Trace]) -> None:
        self.by_problem: dict[str, list[tuple[Trace, Rendered]]] = {}
        for t in traces:
            self.by_problem.setdefault(t.problem, []).append((t, Rendered(t, t.generator)))
        self._turn: dict[str, int] = {}

    def choose(self, prompt: str, seed: int | None) -> tuple[Trace, Rendered] | None:
        options = self.by_problem.get(prompt)
        if not options:
            return None
        if seed is None:
            seed = self._turn.get(prompt, 0)
            self._turn[prompt] = seed + 1
        return options[seed % len(options)]


class SourceState:
    def __init__(self, library: Library, tokens_per_second: float) -> None:
        self.library = library
        self.rate = tokens_per_second
        self.records: list[dict[str, object]] = []
        self.serial = 0

    def new_id(self) -> bytes:
        self.serial += 1
        return b"chatcmpl-%0*x" % (_ID_WIDTH, self.serial)


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)


_SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
             b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")


class SourceProtocol(asyncio.Protocol):
    """One client connection (keep-alive: requests one after another)."""

    def __init__(self, state: SourceState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stream: _PacedStream | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport (uvloop's too)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.stream is None:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4:head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length:]
            method, path, _ = (head.split("\r\n", 1)[0].split(" ") + ["", ""])[:3]
            self._handle(method, path.split("?", 1)[0], body)

    def _handle(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        state = self.state
        if path.endswith("/chat/completions") and method == "POST":
            self._chat(body)
        elif path.endswith("/models"):
            self.transport.write(_response("200 OK", json.dumps(
                {"object": "list", "data": [{"id": "*", "object": "model"}]}).encode()))
        elif path == "/stats":
            total = sum(int(r["completion_tokens"]) for r in state.records)  # type: ignore[call-overload]
            self.transport.write(_response("200 OK", json.dumps(
                {"total_completion_tokens": total, "requests": state.records,
                 "faults": {}}).encode()))
        elif path == "/stats/reset":
            state.records = []
            self.transport.write(_response("200 OK", b"{}"))
        elif path == "/health":
            self.transport.write(_response("200 OK", b'{"status":"ok"}'))
        else:
            self.transport.write(_response("404 Not Found", b'{"error":"not found"}'))

    def _chat(self, raw: bytes) -> None:
        assert self.transport is not None
        try:
            req = json.loads(raw)
            content = req["messages"][-1]["content"]
            if isinstance(content, list):
                content = "".join(p.get("text") or "" for p in content)
            chosen = self.state.library.choose(content, req.get("seed"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            chosen = None
        if chosen is None:
            self.transport.write(_response("400 Bad Request", json.dumps({"error": {
                "message": "no recorded problem matches this prompt", "type": "invalid"}})
                .encode()))
            return
        trace, rendered = chosen
        rid = self.state.new_id()
        record: dict[str, object] = {
            "request_id": rid.decode(), "model": str(req.get("model")), "trace_id": trace.id,
            "generator": trace.generator, "prompt_tokens": 0, "completion_tokens": 0,
            "started_at": datetime.now(UTC).isoformat()}
        self.state.records.append(record)
        if not req.get("stream"):
            self._whole(rendered, rid, record)
            return
        body = rendered.body.replace(_PLACEHOLDER, rid)
        if self.state.rate <= 0:  # unpaced: the whole response in one write
            self.transport.write(_SSE_HEAD + body)
            record["completion_tokens"] = rendered.total_tokens
            record["finish_reason"] = "stop"
            return
        self.transport.write(_SSE_HEAD + body[:rendered.head_end])
        self.stream = _PacedStream(self, body, rendered, record)

    def _whole(self, rendered: Rendered, rid: bytes, record: dict[str, object]) -> None:
        """A non-streaming answer: written once the whole completion would be generated."""
        response = _response("200 OK", rendered.whole.replace(_PLACEHOLDER, rid))

        def write() -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(response)
                record["completion_tokens"] = rendered.total_tokens
                record["finish_reason"] = "stop"

        if self.state.rate <= 0:
            write()
        else:
            asyncio.get_running_loop().call_later(rendered.total_tokens / self.state.rate, write)

    def eof_received(self) -> bool | None:
        # The client half-closed (an abort): stop writing; the transport flushes what was
        # written and closes.
        self.closed = True
        if self.stream is not None:
            self.stream.record["disconnected"] = True
            self.stream.stop()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            self.stream.stop()


class _PacedStream:
    """Writes one token chunk per `tokens / rate` seconds, on the loop's timer."""

    def __init__(self, proto: SourceProtocol, body: bytes, rendered: Rendered,
                 record: dict[str, object]) -> None:
        self.proto, self.rendered, self.record = proto, rendered, record
        self.body = memoryview(body)
        self.i = 0
        self.pos = rendered.head_end
        self.written = 0
        self.loop = asyncio.get_running_loop()
        self.due = self.loop.time()
        self.handle: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        i = self.i
        if i < len(self.rendered.tokens):
            self.due += self.rendered.tokens[i] / self.proto.state.rate
            self.handle = self.loop.call_at(self.due, self._tick)
        else:  # the finish and usage chunks and [DONE] follow the last token at once
            assert self.proto.transport is not None
            self.proto.transport.write(self.body[self.pos:])
            self.record["finish_reason"] = "stop"
            self.proto.stream = None
            if self.proto.buf:  # a pipelined request waited for this one
                self.proto.data_received(b"")

    def _tick(self) -> None:
        transport = self.proto.transport
        if self.proto.closed or transport is None or transport.is_closing():
            self.stop()
            return
        end = self.rendered.ends[self.i]
        transport.write(self.body[self.pos:end])
        self.written += self.rendered.tokens[self.i]
        self.record["completion_tokens"] = self.written
        self.pos = end
        self.i += 1
        self._schedule()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.proto.stream = None
        if self.proto.transport is not None:
            self.proto.transport.close()


async def _serve(paths: list[Path], rate: float, host: str, port: int) -> None:
    library = Library(load_traces(paths))
    state = SourceState(library, rate)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SourceProtocol(state), host, port, backlog=4096)
    sock_port = server.sockets[0].getsockname()[1]
    print(sock_port, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.bench.client_source",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", nargs="+", required=True)
    parser.add_argument("--tokens-per-second", type=float, default=0.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    paths = [resolve_input_path(t) for t in args.traces]
    try:
        asyncio.run(_serve(paths, args.tokens_per_second, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
