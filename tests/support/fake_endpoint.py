"""A scriptable OpenAI-compatible HTTP server for client tests: real sockets, real SSE, made-up
text. Each test sets `script` to say how the next requests behave (status codes, stalls, usage,
broken events) and reads `seen` for what the server received."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Script:
    statuses: list[int] = field(default_factory=list)  # answered (in order) before streaming
    retry_after: str | None = None
    tokens: list[str] = field(default_factory=lambda: ["Two", " plus", " two", " is",
                                                       " four", ".\n", "#### 4"])
    usage: str = "final"  # final | continuous | none
    refuse_continuous: bool = False  # 400 when continuous_usage_stats is asked for
    first_delay: float = 0.0
    stall_after: int | None = None  # stop sending (but keep the connection) after N chunks
    malformed_after: int | None = None
    pace: float = 0.0
    auth_key: str | None = None
    #: If a key occurs in the last user message, stream its tokens instead of `tokens`.
    by_prompt: dict[str, list[str]] = field(default_factory=dict)
    #: Send per-token logprobs when the request asks (top logprobs -0.1, -1.1, -2.1, ...).
    logprobs: bool = False
    #: Report this many of the prompt's tokens as served from the prompt cache, in every usage
    #: (`prompt_tokens_details.cached_tokens`); None: no details, as older servers send.
    cached_tokens: int | None = None


@dataclass
class Seen:
    requests: list[dict[str, Any]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    active: int = 0
    max_active: int = 0  # peak concurrent streams
    times: list[float] = field(default_factory=list)  # time.monotonic() of each request


class FakeEndpoint:
    def __init__(self) -> None:
        self.script = Script()
        self.seen = Seen()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, **script: Any) -> None:
        self.script = Script(**script)
        self.seen = Seen()

    def _usage(self, completion_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": completion_tokens}
        if self.script.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.script.cached_tokens}
        return usage

    async def models(self, request: Request) -> Response:
        if self.script.auth_key and request.headers.get("authorization") != (
                f"Bearer {self.script.auth_key}"):
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.seen.requests.append(body)
        self.seen.times.append(time.monotonic())
        s = self.script
        if s.auth_key and request.headers.get("authorization") != f"Bearer {s.auth_key}":
            return JSONResponse({"error": {"message": "Incorrect API key"}}, status_code=401)
        opts = body.get("stream_options") or {}
        if s.refuse_continuous and "continuous_usage_stats" in opts:
            return JSONResponse({"error": {"message": "Unrecognized request argument supplied: "
                                           "stream_options.continuous_usage_stats"}},
                                status_code=400)
        if s.statuses:
            status = s.statuses.pop(0)
            headers = {"retry-after": s.retry_after} if s.retry_after else {}
            return JSONResponse({"error": {"message": f"scripted {status}"}}, status_code=status,
                                headers=headers)
        last_user = next((m.get("content", "") for m in reversed(body.get("messages", []))
                          if m.get("role") == "user"), "")
        tokens = next((t for k, t in s.by_prompt.items() if k in last_user), s.tokens)
        top = int(body.get("top_logprobs") or 1) if body.get("logprobs") and s.logprobs else 0
        return StreamingResponse(self._events(tokens, top), media_type="text/event-stream")

    async def _events(self, tokens: list[str], top: int = 0) -> AsyncIterator[bytes]:
        s = self.script
        self.seen.active += 1
        self.seen.max_active = max(self.seen.max_active, self.seen.active)
        index = len(self.seen.sent)
        self.seen.sent.append(0)
        try:
            await asyncio.sleep(s.first_delay)
            for i, tok in enumerate(tokens):
                if s.stall_after is not None and i >= s.stall_after:
                    await asyncio.sleep(3600)
                if s.malformed_after is not None and i >= s.malformed_after:
                    yield b"data: {not json\n\n"
                    return
                chunk: dict[str, Any] = {"id": "fake-1", "object": "chat.completion.chunk",
                                         "choices": [{"index": 0, "delta": {"content": tok}}]}
                if top:
                    tops = [{"token": "x", "logprob": -0.1 - j} for j in range(top)]
                    chunk["choices"][0]["logprobs"] = {"content": [
                        {"token": tok, "logprob": -0.1, "top_logprobs": tops}]}
                if s.usage == "continuous":
                    chunk["usage"] = self._usage(i + 1)
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                self.seen.sent[index] += 1
                await asyncio.sleep(s.pace)
            done = {"id": "fake-1", "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]}
            yield f"data: {json.dumps(done)}\n\n".encode()
            if s.usage in ("final", "continuous"):
                usage = {"id": "fake-1", "choices": [], "usage": self._usage(len(tokens))}
                yield f"data: {json.dumps(usage)}\n\n".encode()
            yield b"data: [DONE]\n\n"
        finally:
            self.seen.active -= 1

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/models", self.models),
                                 Route("/v1/chat/completions", self.chat, methods=["POST"])])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app on a loopback port in a thread (uvicorn, as `foldem replay serve` runs it);
    yields the root URL. Starts in milliseconds, unlike a server subprocess."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@contextmanager
def running_fake() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    with serving(fake.app()) as root:
        fake.port = int(root.rsplit(":", 1)[1])
        yield fake


def fake_fixture(scope: Literal["function", "module"] = "module", **script: Any) -> Any:
    """A fixture (assign it to a module attribute: its name) yielding a running FakeEndpoint,
    its script set to `script` at the start. tests/conftest.py defines `fake` with it."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[FakeEndpoint]:
        with running_fake() as fake:
            if script:
                fake.reset(**script)
            yield fake

    return fixture


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
