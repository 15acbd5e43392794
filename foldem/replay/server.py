"""The replay endpoint: an OpenAI-compatible chat-completions server that plays back recorded
generations token by token, counts what it sent per request and stops when the client leaves.

Disconnects are watched directly on the ASGI `receive` channel (uvicorn reports
`http.disconnect` there as soon as the socket closes) instead of relying on the framework, so
the count of sent tokens is exact and `ignore_disconnect` can keep "generating" for probes of
servers that do not honour aborts.

One module past 300 lines on purpose: the request handler, the streaming loop and its
disconnect watch share the per-request accounting that makes the sent-token count exact.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from foldem.core.chat_stream import ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage
from foldem.core.errors import ConfigError, FoldemError
from foldem.core.tokens import count_tokens, encoding
from foldem.core.traces import TokenChunks, tokenize_chunks
from foldem.replay.faults import (
    FaultPlan,
    StreamFaults,
    quiet_expected_errors,
    request_key,
    status_response,
)
from foldem.replay.judge import (
    JudgeNoise,
    is_judge_request,
    is_step_judge_request,
    judgement,
    quoted_steps,
    quoted_trace,
    step_judgement,
)
from foldem.replay.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionChoice,
    ContentChunkEncoder,
    ErrorDetail,
    ErrorResponse,
    FinishReason,
    Health,
    ModelCard,
    ModelList,
    ReplayStats,
    RequestStats,
)
from foldem.replay.traces import ANY_GENERATOR, TraceLibrary


class ReplayRequestError(FoldemError):
    """A request the replay endpoint cannot serve; answered as an OpenAI-format 400."""

    def __init__(self, message: str, *, param: str | None, code: str) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def _error(status: int, message: str, param: str | None, code: str | None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


#: Writes one content chunk (text, token count) to the client.
ChunkWriter = Callable[[str, int], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


class ReplayResponse(Response):
    """Plays one trace to one client (SSE or a single JSON body), pacing and counting tokens."""

    def __init__(self, req: ChatCompletionRequest, chunks: TokenChunks, record: RequestStats,
                 tokens_per_second: float, ignore_disconnect: bool,
                 faults: StreamFaults | None = None) -> None:
        self.req, self.chunks, self.record = req, chunks, record
        self.faults = faults or StreamFaults(None, record, len(chunks.texts))
        self.tokens_per_second = tokens_per_second
        self.ignore_disconnect = ignore_disconnect
        self.created = int(time.time())
        options = req.stream_options
        self.include_usage = bool(options and options.include_usage)
        self.continuous_usage = self.include_usage and bool(
            options and options.continuous_usage_stats)
        self.background = None
        self.chunks_done = 0
        self.connection_closing: Callable[[], bool] | None = None
        # Chunks name the recording's generator, as a server names the model it runs: a
        # request for `*` (any generator) still tells the client who wrote the text.
        self.model = record.generator
        self.encoder = ContentChunkEncoder(record.request_id, self.created, self.model,
                                           self.include_usage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.connection_closing = scope.get(CONNECTION_CLOSING_KEY)
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
            try:
                if self.req.stream:
                    await self._stream(send)
                else:
                    await self._complete(send)
            finally:
                self.record.ended_at = _now()
            group.cancel_scope.cancel()  # done: stop watching

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if self.record.finish_reason is not None:
            return  # everything was generated; the client left while we wrote the tail
        self.record.disconnected = True
        if not self.ignore_disconnect:
            scope.cancel()

    async def _start(self, send: Send, content_type: bytes) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type), (b"cache-control", b"no-cache"),
            (b"x-request-id", self.record.request_id.encode())]})

    async def _generate(self, send_chunk: ChunkWriter | None, send: Send | None = None) -> None:
        """Pace through the chunks; `send_chunk` writes each one (None: just generate)."""
        limit = self.req.token_limit
        rate = self.tokens_per_second
        deadline = time.monotonic()
        for i, (text, tokens) in enumerate(zip(self.chunks.texts, self.chunks.tokens,
                                               strict=True)):
            if send is not None and await self.faults.before_chunk(i, send):
                return  # an injected fault ended the stream
            if limit is not None and self.record.completion_tokens + tokens > limit:
                self.record.finish_reason = "length"
                return
            if rate > 0:  # a chunk of k tokens takes k/R seconds, waited before it goes out
                deadline += tokens / rate
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            else:
                await asyncio.sleep(0)  # unpaced: still let other streams and disconnects run
            if self.connection_closing is not None and self.connection_closing():
                # The client hung up and uvicorn would drop this write without a word: it
                # is never sent, so never counted (unless we play a server that ignores it).
                self.record.disconnected = True
                if not self.ignore_disconnect:
                    return
            if send_chunk is not None and not self.record.disconnected:
                await send_chunk(text, tokens)
            # Counted once the write returned: a cancel inside it leaves this chunk uncounted.
            self.record.completion_tokens += tokens
            self.chunks_done += 1
        self.record.finish_reason = "stop"

    def _usage(self, extra_tokens: int = 0) -> Usage:
        return Usage.of(self.record.prompt_tokens, self.record.completion_tokens + extra_tokens)

    def _sse(self, delta: ChunkDelta, finish: FinishReason | None = None, tokens: int = 0) -> bytes:
        """One SSE event; with continuous usage it counts this chunk's `tokens` already."""
        chunk = ChatCompletionChunk(
            id=self.record.request_id, created=self.created, model=self.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
            usage=self._usage(tokens) if self.continuous_usage else None)
        body = chunk.model_dump_json(exclude=None if self.include_usage else {"usage"})
        return b"data: " + body.encode() + b"\n\n"

    async def _stream(self, send: Send) -> None:
        await self._start(send, b"text/event-stream; charset=utf-8")

        async def body(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def send_chunk(text: str, tokens: int) -> None:
            if self.continuous_usage:  # usage differs per chunk: render the whole model
                await body(self._sse(ChunkDelta(content=text), tokens=tokens))
            else:
                await body(self.encoder.encode(text))

        await self.faults.before_first_chunk()
        await body(self._sse(ChunkDelta(role="assistant", content="")))
        await self._generate(send_chunk, send)
        if self.record.disconnected or self.faults.cut:
            return  # ignore_disconnect: generated to the end, nobody to tell; or a fault
        await body(self._sse(ChunkDelta(), self.record.finish_reason))
        if self.include_usage:
            final = ChatCompletionChunk(id=self.record.request_id, created=self.created,
                                        model=self.model, choices=[], usage=self._usage())
            await body(b"data: " + final.model_dump_json().encode() + b"\n\n")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                    "more_body": False})

    async def _complete(self, send: Send) -> None:
        await self._generate(None)
        if self.record.disconnected:
            return
        text = "".join(self.chunks.texts[: self.chunks_done])
        completion = ChatCompletion(
            id=self.record.request_id, created=self.created, model=self.model,
            choices=[CompletionChoice(message=AssistantMessage(content=text),
                                      finish_reason=self.record.finish_reason or "stop")],
            usage=self._usage())
        await self._start(send, b"application/json")
        await send({"type": "http.response.body", "body": completion.model_dump_json().encode(),
                    "more_body": False})


class ReplayState:
    """Everything the app holds: the traces, the pace and the per-request records."""

    def __init__(self, library: TraceLibrary, tokens_per_second: float,
                 ignore_disconnect: bool, faults: FaultPlan | None = None,
                 judge_noise: JudgeNoise | None = None) -> None:
        self.library = library
        self.tokens_per_second = tokens_per_second
        self.ignore_disconnect = ignore_disconnect
        self.faults = faults
        self.judge_noise = judge_noise or JudgeNoise()
        self.records: list[RequestStats] = []

    def stats(self) -> ReplayStats:
        return ReplayStats(total_completion_tokens=sum(r.completion_tokens for r in self.records),
                           requests=list(self.records),
                           faults=dict(Counter(r.fault for r in self.records if r.fault)))

    def begin(self, req: ChatCompletionRequest) -> Response:
        """Match the request to a recorded trace and prepare its replay (or raise a 400)."""
        user_messages = [m for m in req.messages if m.role == "user"]
        if not user_messages:
            raise ReplayRequestError("the request has no user message to match a recorded "
                                     "problem against", param="messages", code="no_user_message")
        problem = self.library.find_problem(user_messages[-1].text)
        if problem is None:
            raise ReplayRequestError(
                "no recorded trace matches this prompt: the last user message must contain the "
                "text of a problem in the loaded trace files", param="messages",
                code="unknown_problem")
        if is_step_judge_request(req.model):  # a partial solution to score by its step label
            quote = quoted_steps(self.library, problem, user_messages[-1].text)
            reply, _ = step_judgement(quote, self.judge_noise)
            trace_id, generator = (quote[0].id if quote else "unknown"), req.model
            chunks = tokenize_chunks(reply)
        elif is_judge_request(req.model):  # an S4 judge prompt: answer with a score
            quoted = quoted_trace(self.library, problem, user_messages[-1].text)
            reply, _ = judgement(quoted)
            trace_id, generator = (quoted.id if quoted else "unknown"), req.model
            chunks = tokenize_chunks(reply)
        else:
            trace = self.library.choose(problem, req.model, req.seed)
            trace_id, generator = trace.id, trace.generator
            chunks = self.library.chunks_of(trace)
        record = RequestStats(
            request_id=f"chatcmpl-{uuid.uuid4().hex}", model=req.model, trace_id=trace_id,
            generator=generator, started_at=_now(),
            prompt_tokens=sum(count_tokens(m.text) for m in req.messages))
        fault = self.faults.pick(request_key(req)) if self.faults else None
        self.records.append(record)
        if fault is not None and fault.before_stream:
            return status_response(fault, record)
        return ReplayResponse(req, chunks, record, self.tokens_per_second,
                              self.ignore_disconnect,
                              StreamFaults(fault, record, len(chunks.texts)))


#: Scope key under which `expose_connection_state` puts the connection's `is_closing`.
CONNECTION_CLOSING_KEY = "foldem.connection_closing"


def expose_connection_state(app: ASGIApp) -> ASGIApp:
    """Wrap the app for uvicorn so a response can ask whether its connection is closing.
    uvicorn drops writes to a connection the client closed (or half-closed) silently; the
    replay counts a token as sent only if its write can still go out. Outside uvicorn (a
    test client) nothing is exposed and every write counts."""
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:
            scope[CONNECTION_CLOSING_KEY] = transport.is_closing
        await app(scope, receive, send)
    return wrapped


def create_app(traces: list[Path], tokens_per_second: float = 0,
               ignore_disconnect: bool = False, faults: FaultPlan | None = None,
               judge_noise: JudgeNoise | None = None) -> FastAPI:
    """The replay app over trace files (loaded now; tokenized lazily per trace); `faults`
    injects failures into a share of the requests (foldem/replay/faults.py); `judge_noise`
    makes the replayed step judge miss errors and raise false alarms (foldem/replay/judge.py)."""
    if tokens_per_second < 0:
        raise ConfigError(f"tokens_per_second must be >= 0 (0 = unpaced), got {tokens_per_second}")
    state = ReplayState(TraceLibrary.from_files(traces), tokens_per_second, ignore_disconnect,
                        faults, judge_noise)
    if faults:
        quiet_expected_errors()
    encoding()  # load the tokenizer now: a broken cache fails at startup, not on a request
    app = FastAPI(title="foldem replay endpoint", docs_url=None, redoc_url=None)
    app.state.replay = state

    @app.exception_handler(ReplayRequestError)
    async def _replay_error(_: Request, exc: ReplayRequestError) -> JSONResponse:
        return _error(400, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        loc = [str(p) for p in (errors[0].get("loc", ()) if errors else ()) if p != "body"]
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}"
                           f": {e.get('msg', 'invalid')}" for e in errors)
        return _error(400, f"invalid request: {detail}", loc[0] if loc else None, "invalid_request")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatCompletionRequest) -> Response:
        return state.begin(req)

    @app.get("/v1/models")
    async def models() -> ModelList:
        ids = [*state.library.generators, ANY_GENERATOR]
        return ModelList(data=[ModelCard(id=i) for i in ids])

    @app.get("/health")
    async def health() -> Health:
        return Health(traces=len(state.library.traces), problems=len(state.library.by_problem))

    @app.get("/stats")
    async def stats() -> ReplayStats:
        return state.stats()

    @app.post("/stats/reset")
    async def reset_stats() -> ReplayStats:
        state.records.clear()
        if state.faults:
            state.faults.reset()
        return state.stats()

    return app
