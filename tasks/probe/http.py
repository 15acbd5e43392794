"""HTTP for `foldem probe`: streamed chat requests read chunk by chunk and closed explicitly,
and plain GETs of a server's own status pages (/stats, /metrics, /slots).

The probe talks raw HTTP (httpx) rather than through the OpenAI SDK: it must see status codes,
the content type and every field of every chunk, and it must decide exactly when the connection
closes. Leaving `stream_chat`'s block closes it (a server sees that within ~1 ms, measured).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from foldem.core.chat_stream import StreamChunk
from foldem.core.errors import EndpointAuthError, EndpointError, EndpointUnreachableError
from tasks.probe.models import StreamObservation

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class _ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: str


class _ErrorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    error: _ErrorDetail | str


def error_message(text: str) -> str:
    """The message of an OpenAI-style error body, else the body's start."""
    try:
        body = _ErrorBody.model_validate_json(text)
    except ValidationError:
        return text.strip()[:300]
    return body.error if isinstance(body.error, str) else body.error.message


def root_url_of(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port: where servers keep /metrics, /slots, /stats."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def is_loopback(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "") in LOOPBACK_HOSTS


class ChatStream:
    """An open streamed response: iterate `chunks()`; `done` says `[DONE]` was seen."""

    def __init__(self, response: httpx.Response, endpoint: str) -> None:
        self.response = response
        self.endpoint = endpoint
        self.done = False
        self.event_stream = response.headers.get("content-type", "").startswith(
            "text/event-stream")

    async def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        async for line in self.response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                self.done = True
                return
            try:
                yield StreamChunk.model_validate_json(data)
            except ValidationError:
                raise EndpointError(self.endpoint, f"malformed stream event: {data[:200]!r}"
                                    ) from None


class ProbeHttp:
    """One endpoint under probe: its base URL, key, and a connection pool."""

    def __init__(self, base_url: str, api_key: SecretStr | None, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = root_url_of(self.base_url)
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        # Loopback servers must not go through an HTTP proxy from the environment.
        self._client = httpx.AsyncClient(
            headers=headers, trust_env=not is_loopback(self.base_url),
            timeout=httpx.Timeout(timeout, connect=10.0))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _refuse(self, status: int, text: str) -> None:
        if status in (401, 403):
            raise EndpointAuthError(self.base_url, f"the API key was refused (HTTP {status}); "
                                    "pass --api-key-env NAME_OF_VARIABLE", status=status)
        if status == 404 and "model" not in text.lower():
            raise EndpointError(self.base_url, "no /chat/completions here (HTTP 404): the base "
                                "URL usually ends in /v1", status=status)

    @asynccontextmanager
    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[ChatStream]:
        """POST a streamed chat request; leaving the block hangs up at once."""
        request = self._client.build_request("POST", f"{self.base_url}/chat/completions",
                                             json=body | {"stream": True})
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointUnreachableError(self.base_url, f"cannot connect ({type(exc).__name__}"
                                           f": {exc}); is the server running?") from None
        try:
            yield ChatStream(response, self.base_url)
        finally:
            await response.aclose()  # explicit: a partly read response closes its connection

    async def observe(self, body: dict[str, Any]) -> StreamObservation:
        """Run one streamed request to its end and describe what came back."""
        t0 = time.perf_counter()
        async with self.stream_chat(body) as stream:
            status = stream.response.status_code
            if status >= 400:
                text = (await stream.response.aread()).decode("utf-8", errors="replace")
                self._refuse(status, text)
                return StreamObservation(status=status, error=error_message(text),
                                         seconds=time.perf_counter() - t0)
            obs = StreamObservation(status=status, event_stream=stream.event_stream)
            last_has_usage = False
            async for chunk in stream.chunks():
                obs.response_id = obs.response_id or chunk.id
                has_content = any(c.delta is not None and c.delta.content for c in chunk.choices)
                has_usage = chunk.usage is not None and chunk.usage.completion_tokens is not None
                last_has_usage = has_usage
                if has_content:
                    obs.content_chunks += 1
                    obs.content_chunks_with_usage += has_usage
                if any(c.logprobs is not None and c.logprobs.content for c in chunk.choices):
                    obs.logprobs_seen = True
            obs.final_usage = last_has_usage
            obs.done_marker = stream.done
        obs.seconds = time.perf_counter() - t0
        return obs

    async def get(self, path: str, *, timeout: float = 5.0) -> httpx.Response | None:
        """GET a root-relative status page; None when nothing useful answers."""
        try:
            response = await self._client.get(f"{self.root_url}{path}", timeout=timeout)
        except httpx.HTTPError:
            return None
        return response if response.status_code == 200 else None
