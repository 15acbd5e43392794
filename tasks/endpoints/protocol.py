"""The subset of the OpenAI chat-completion stream that the client reads, as pydantic models.

The SDK builds a full typed object per chunk (~0.3-0.5 ms each, measured), which is slower than
the tokens arrive once a process holds dozens of streams, and a late reader aborts late. So the
client takes the raw SSE lines from the SDK and validates each with these small models
(`model_validate_json`, a few microseconds).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChunkDelta(_Lenient):
    content: str | None = None


class ChunkChoice(_Lenient):
    index: int = 0
    delta: ChunkDelta | None = None
    finish_reason: str | None = None


class ChunkUsage(_Lenient):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class StreamError(_Lenient):
    message: str = "error event in the stream"
    type: str | None = None
    code: str | int | None = None


class StreamChunk(_Lenient):
    id: str | None = None
    choices: list[ChunkChoice] = []
    usage: ChunkUsage | None = None
    error: StreamError | None = None
